"""``python -m rasterizer`` as a user runs it: real subprocesses, real files, real signals and pipes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from cameras import cameras_for
from conftest import REPO, scene_path
from PIL import Image

from rasterizer.camera import write_camera_path
from rasterizer.scene import save_ply


def run(*args, cwd=REPO, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "rasterizer", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=env)


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error")]


def assert_one_line_error(r, code=2, needle=""):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    errors = error_lines(r.stderr)
    assert len(errors) == 1 and "Traceback" not in r.stderr and "usage:" not in r.stderr, r.stderr
    assert needle in errors[0], errors[0]


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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]        # no staging folder left
    warned = [line for line in r.stderr.splitlines() if "nothing of the scene is visible" in line]
    assert len(warned) == 1 and "frame 2:" in warned[0]                # the empty frame is not silent


def test_render_replaces_an_earlier_set_only_when_asked(tmp_path, donut_cams):
    scene, out = scene_path("v3dg-donut-fused.ply"), tmp_path / "frames"
    assert run("render", scene, "--camera-path", donut_cams, "--out", out, "--backend", "cpu").returncode == 0
    doc = json.loads(donut_cams.read_text())
    doc["camera_path"] = doc["camera_path"][:1]
    one = tmp_path / "one.json"
    one.write_text(json.dumps(doc))
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    r = run("render", scene, "--camera-path", one, "--out", out, "--backend", "cpu")
    assert_one_line_error(r, needle="not empty (3 entries); pass --overwrite")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    r = run("render", scene, "--camera-path", one, "--out", out, "--backend", "cpu", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["00000.png"]         # the new set, not old frames beside it
    (out / "notes.txt").write_text("mine")
    r = run("render", scene, "--camera-path", one, "--out", out, "--backend", "cpu", "--overwrite")
    assert_one_line_error(r, needle="replaces rendered frames only, and the folder also holds 'notes.txt'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "one.json"]


def test_control_characters_in_file_names_are_escaped_in_the_log(tmp_path, demo):
    """A newline or an ESC in a name would forge a log line or drive the terminal: escaped, as run.py and
    the node escape theirs (one formatter for all three)."""
    src = save_ply(demo, tmp_path / "evil\n\x1b[31mname.ply")
    r = run("convert", src, tmp_path / "out\nx.splat")
    assert r.returncode == 0, r.stderr
    log = [line for line in r.stderr.splitlines() if " INFO " in line or " WARNING " in line]
    assert any("out\\nx.splat" in line for line in log), r.stderr
    assert "\x1b" not in r.stderr and all(line[:4].isdigit() for line in r.stderr.splitlines()), r.stderr


def test_preview_moves_nothing_when_one_output_cannot_be_placed(tmp_path):
    """A folder named like one output: refused as a whole (no preview_angle.jpg left beside it)."""
    (tmp_path / "pv" / "preview_top.jpg").mkdir(parents=True)
    r = run("preview", "--out", tmp_path / "pv", "--size", "160x90", "--backend", "cpu")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (f"error: {tmp_path / 'pv' / 'preview_top.jpg'}: is a folder; "
                                                 "the output file cannot replace it")
    assert sorted(p.name for p in (tmp_path / "pv").iterdir()) == ["preview_top.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pv"]           # no temp folder left


def test_preview_without_scene_renders_the_demo(tmp_path):
    r = run("preview", "--out", tmp_path / "pv", "--size", "320x180", "--backend", "cpu")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(tmp_path / "pv" / n) for n in ("preview_angle.jpg", "preview_top.jpg")]
    for name in ("preview_top.jpg", "preview_angle.jpg"):
        with Image.open(tmp_path / "pv" / name) as im:
            assert im.size == (320, 180)
            assert np.asarray(im).std() > 20          # a picture, not a flat colour


def test_up_axis_with_a_leading_dash(tmp_path):
    # the playbot scene has -y up: '--up -y' must parse as the value, not as an option
    out = tmp_path / "pv"
    r = run("preview", scene_path("playcanvas-playbot-lod0-500k.ply"), "--out", out, "--up", "-y",
            "--size", "96x72", "--backend", "cpu", "--views", "angle")
    assert r.returncode == 0, r.stderr
    with Image.open(out / "preview_angle.jpg") as im:
        assert im.size == (96, 72) and np.asarray(im).std() > 5


def test_info_prints_counts_and_bounds():
    r = run("info", scene_path("loadersgl-train-1000.ply"))
    assert r.returncode == 0, r.stderr
    assert "gaussians:     1000" in r.stdout and "sh degree:     3" in r.stdout and "robust bounds" in r.stdout


def test_help_keeps_the_usage():
    r = run("preview", "--help")
    assert r.returncode == 0 and "usage:" in r.stdout and "--up" in r.stdout and r.stderr == ""


BAD = {
    "missing file": (lambda d: ["info", d / "nope.ply"], "no such file"),
    "empty scene name": (lambda d: ["preview", "", "--out", d / "out"], "argument scene: an empty name"),
    "not a ply": (lambda d: ["preview", d / "text.ply", "--out", d / "out"], "not a PLY file"),
    "truncated": (lambda d: ["preview", d / "trunc.ply", "--out", d / "out"], "truncated PLY"),
    "lying count": (lambda d: ["info", d / "lie.ply"], "lying header"),
    "missing property": (lambda d: ["preview", d / "noop.ply", "--out", d / "out"], "lacks required properties"),
    "zero gaussians": (lambda d: ["preview", d / "empty.ply", "--out", d / "out"], "zero Gaussians"),
    "fisheye camera path": (lambda d: ["render", d / "ok.ply", "--camera-path", d / "fisheye.json", "--out",
                                       d / "out"], "camera_type 'fisheye' is not supported"),
    "boolean height": (lambda d: ["render", d / "ok.ply", "--camera-path", d / "boolsize.json", "--out",
                                  d / "out"], "render_height must be a number, got a boolean"),
    "bad size": (lambda d: ["preview", d / "ok.ply", "--out", d / "out", "--size", "big"], "argument --size"),
    "size beyond the renderer": (lambda d: ["preview", d / "ok.ply", "--out", d / "out", "--size", "12000x12000"],
                                 "144000000 pixels is more than the renderer's"),
    "anti-aliasing beyond the renderer": (lambda d: ["preview", d / "ok.ply", "--out", d / "out", "--size",
                                                     "8192x8192", "--aa", "4"],
                                          "--aa 4 at 8192x8192 renders 32768x32768, more than the renderer's"),
    "quality 500": (lambda d: ["preview", d / "ok.ply", "--out", d / "out", "--quality", "500"],
                    "argument --quality: expected an integer in 1..100"),
    "up word": (lambda d: ["preview", d / "ok.ply", "--out", d / "out", "--up", "up"], "argument --up"),
    "up five values": (lambda d: ["preview", d / "ok.ply", "--out", d / "out", "--up", "1,2,3,4,5"], "argument --up"),
    "bad background": (lambda d: ["render", d / "ok.ply", "--camera-path", d / "cam.json", "--out", d / "out",
                                  "--background", "1,2"], "argument --background"),
    "unknown flag": (lambda d: ["preview", d / "ok.ply", "--out", d / "out", "--zoom", "2"],
                     "unrecognized arguments: --zoom 2"),
    "no command": (lambda d: [], "required: COMMAND"),
    "out is a file": (lambda d: ["preview", d / "ok.ply", "--out", d / "ok.ply"], "is a file, not a folder"),
    "far away scene": (lambda d: ["preview", d / "far.ply", "--out", d / "out"], "cannot frame a view"),
    "no gpu": (lambda d: ["preview", d / "ok.ply", "--out", d / "out", "--backend", "gpu"], "backend gpu"),
}


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    from plyfile import PlyData, PlyElement
    d = tmp_path_factory.mktemp("bad")
    props = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3"]

    def ply(name, n, drop=(), position=None):
        arr = np.ones(n, [(p, "<f4") for p in props if p not in drop])
        arr["x"] = np.arange(n)
        if position is not None:
            for p in ("x", "y", "z"):
                arr[p] = position
        PlyData([PlyElement.describe(arr, "vertex")]).write(str(d / name))

    (d / "text.ply").write_text("solid cube\n")
    ply("ok.ply", 20)
    (d / "trunc.ply").write_bytes((d / "ok.ply").read_bytes()[:-100])
    (d / "lie.ply").write_bytes((d / "ok.ply").read_bytes().replace(b"vertex 20", b"vertex 1000000000000"))
    ply("noop.ply", 20, drop=("opacity",))
    ply("empty.ply", 0)
    ply("far.ply", 50, position=1e30)      # every Gaussian at 1e30: nothing float32 can frame
    cam = {"render_width": 32, "render_height": 24,
           "camera_path": [{"camera_to_world": np.eye(4).ravel().tolist(), "fov": 50}]}
    (d / "cam.json").write_text(json.dumps(cam))
    (d / "fisheye.json").write_text(json.dumps({**cam, "camera_type": "fisheye"}))
    (d / "boolsize.json").write_text(json.dumps({**cam, "render_height": True}))
    return d


@pytest.mark.parametrize("case", BAD)
def test_bad_input_one_line_exit_2_no_output(bad_inputs, case):
    if case == "no gpu":
        from rasterizer.backends import gpu_unavailable_reason
        if gpu_unavailable_reason() is None:
            pytest.skip("this machine has a GPU")
    args, needle = BAD[case]
    before = sorted(p.name for p in bad_inputs.iterdir())
    r = run(*args(bad_inputs))
    assert_one_line_error(r, needle=needle)
    assert sorted(p.name for p in bad_inputs.iterdir()) == before      # no output, no staging folder


def test_a_closed_pipe_ends_info_quietly():
    # the reader is gone before info writes (as with `info ... | head -1` on a long listing)
    p = subprocess.Popen([sys.executable, "-m", "rasterizer", "info", scene_path("v3dg-donut-fused.ply")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 0
    assert "error" not in err and "Broken pipe" not in err and "Traceback" not in err, err


@pytest.mark.parametrize("delay", [0.05, 0.3, 1.0])
def test_ctrl_c_during_preview_leaves_nothing(tmp_path, delay):
    # at some moments the signal lands while numba calls back into Python and comes out of the
    # kernel as a SystemError, which the preview swallows for that view: still exit 130, nothing left.
    # 4K, so that the views still render a second after the backend is ready on 16 fast cores (at
    # 1080p they were done in 0.9 s there, and the signal came during the interpreter's exit)
    out = tmp_path / "new" / "previews"
    p = subprocess.Popen([sys.executable, "-m", "rasterizer", "preview", scene_path("playcanvas-playbot-lod0-500k.ply"),
                          "--out", out, "--up", "-y", "--size", "3840x2160", "--backend", "cpu", "--format", "png"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    lines = []
    for line in p.stderr:            # the scene is loaded and the backend ready: the render is under way
        lines.append(line)
        if "ready" in line:
            break
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    rest = p.stderr.read()
    code = p.wait(timeout=120)
    stderr = "".join(lines) + rest
    assert code == 130, stderr
    assert error_lines(stderr) == ["error: interrupted"] and "Traceback" not in stderr, stderr
    assert list(tmp_path.iterdir()) == []           # neither the folder nor its parents nor a staging folder


def test_ctrl_c_during_render_keeps_the_earlier_frames(tmp_path):
    scene = scene_path("playcanvas-playbot-lod0-500k.ply")
    from rasterizer.scene import load_scene
    cams = cameras_for(load_scene(scene), size=(640, 480))
    path = tmp_path / "cams.json"
    write_camera_path([cams["oblique"]] * 40, path)
    out = tmp_path / "frames"
    out.mkdir()
    (out / "00000.png").write_bytes(b"an earlier frame")
    p = subprocess.Popen([sys.executable, "-m", "rasterizer", "render", scene, "--camera-path", path, "--out", out,
                          "--overwrite", "--backend", "cpu"], stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".frames.*.tmp/00001.png")) and time.monotonic() < deadline:
        time.sleep(0.05)                            # two new frames staged: mid-render
    p.send_signal(signal.SIGINT)
    stderr = p.stderr.read()
    assert p.wait(timeout=120) == 130, stderr
    assert error_lines(stderr) == ["error: interrupted"], stderr
    assert sorted(q.name for q in tmp_path.iterdir()) == ["cams.json", "frames"]
    assert [q.name for q in out.iterdir()] == ["00000.png"] and (out / "00000.png").read_bytes() == b"an earlier frame"


@pytest.mark.slow
def test_the_first_compile_is_announced(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}   # an empty cache: numba compiles
    r = run("preview", "--out", tmp_path / "pv", "--size", "64x48", "--backend", "cpu", env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    announce = [i for i, ln in enumerate(lines) if "compiling the numba kernels" in ln]
    done = [i for i, ln in enumerate(lines) if "numba kernels compiled in" in ln]
    ready = [i for i, ln in enumerate(lines) if "backend cpu_numba ready" in ln]
    assert announce and done and ready and announce[0] < done[0] < ready[0], r.stderr
    # the next run loads them from the cache, silently
    r = run("preview", "--out", tmp_path / "pv2", "--size", "64x48", "--backend", "cpu", env=env)
    assert r.returncode == 0 and "numba kernels" not in r.stderr, r.stderr
