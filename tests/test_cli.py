"""``python -m rasterizer`` as a user runs it: real subprocesses, real files."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, scene_path
from rasterizer.camera import write_camera_path
from cameras import cameras_for


def run(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "rasterizer", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def donut_cams(tmp_path_factory):
    from rasterizer.scene import load_scene
    scene = load_scene(scene_path("v3dg-donut-fused.ply"))
    cams = cameras_for(scene, size=(96, 72))
    path = tmp_path_factory.mktemp("cams") / "path.json"
    write_camera_path([cams["oblique"], cams["top"], cams["away"]], path)
    return path


def test_render_writes_one_png_per_camera(tmp_path, donut_cams):
    r = run("render", scene_path("v3dg-donut-fused.ply"), "--camera-path", donut_cams, "--out", tmp_path / "o",
            "--backend", "cpu", "--alpha", "--background", "0,0,1")
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert files == ["00000.png", "00001.png", "00002.png"]
    first = np.asarray(Image.open(tmp_path / "o" / "00000.png"))
    assert first.shape == (72, 96, 4) and first[..., 3].max() == 255
    blank = np.asarray(Image.open(tmp_path / "o" / "00002.png"))
    assert blank[..., 3].max() == 0 and (blank[..., 2] == 255).all()   # looking away: background only
    assert "rendered 3/3 frames" in r.stderr


def test_preview_without_scene_renders_the_demo(tmp_path):
    r = run("preview", "--out", tmp_path, "--size", "320x180", "--backend", "cpu")
    assert r.returncode == 0, r.stderr
    for name in ("preview_top.jpg", "preview_angle.jpg"):
        with Image.open(tmp_path / name) as im:
            assert im.size == (320, 180)
            assert np.asarray(im).std() > 20          # a picture, not a flat colour


def test_info_prints_counts_and_bounds():
    r = run("info", scene_path("loadersgl-train-1000.ply"))
    assert r.returncode == 0, r.stderr
    assert "gaussians:     1000" in r.stdout and "sh degree:     3" in r.stdout and "robust bounds" in r.stdout


BAD = {
    "missing file": lambda d: ["info", d / "nope.ply"],
    "not a ply": lambda d: ["preview", d / "text.ply", "--out", d / "out"],
    "truncated": lambda d: ["preview", d / "trunc.ply", "--out", d / "out"],
    "missing property": lambda d: ["preview", d / "noop.ply", "--out", d / "out"],
    "zero gaussians": lambda d: ["preview", d / "empty.ply", "--out", d / "out"],
    "bad camera field": lambda d: ["render", d / "ok.ply", "--camera-path", d / "badcam.json", "--out", d / "out"],
    "bad size": lambda d: ["preview", d / "ok.ply", "--out", d / "out", "--size", "big"],
    "bad background": lambda d: ["render", d / "ok.ply", "--camera-path", d / "cam.json", "--out", d / "out",
                                 "--background", "1,2"],
    "no gpu": lambda d: ["preview", d / "ok.ply", "--out", d / "out", "--backend", "gpu"],
}


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    from plyfile import PlyData, PlyElement
    d = tmp_path_factory.mktemp("bad")
    props = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3"]

    def ply(name, n, drop=()):
        arr = np.ones(n, [(p, "<f4") for p in props if p not in drop])
        PlyData([PlyElement.describe(arr, "vertex")]).write(str(d / name))

    (d / "text.ply").write_text("solid cube\n")
    ply("ok.ply", 20)
    (d / "trunc.ply").write_bytes((d / "ok.ply").read_bytes()[:-100])
    ply("noop.ply", 20, drop=("opacity",))
    ply("empty.ply", 0)
    cam = {"render_width": 32, "render_height": 24,
           "camera_path": [{"camera_to_world": np.eye(4).ravel().tolist(), "fov": 50}]}
    (d / "cam.json").write_text(json.dumps(cam))
    (d / "badcam.json").write_text(json.dumps({**cam, "zoom": 2}))
    return d


@pytest.mark.parametrize("case", BAD)
def test_bad_input_one_line_exit_2_no_output(bad_inputs, case):
    if case == "no gpu":
        from rasterizer.backends import gpu_unavailable_reason
        if gpu_unavailable_reason() is None:
            pytest.skip("this machine has a GPU")
    r = run(*BAD[case](bad_inputs))
    assert r.returncode == 2, (case, r.stdout, r.stderr)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    out = bad_inputs / "out"
    assert not out.exists() or not any(out.iterdir())
