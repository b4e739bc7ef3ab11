"""Scene I/O against the real files: properties by name, SH layout, activations, bad input."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from conftest import REPO, scene_path
from rasterizer.errors import SceneError
from rasterizer.scene import load_scene, save_ply


def test_inria_ply_sh3_channel_major():
    path = scene_path("loadersgl-train-1000.ply")
    s = load_scene(path)
    raw = PlyData.read(str(path))["vertex"].data
    assert len(s) == 1000 and s.sh_degree == 3 and s.normals is not None
    # coefficient j (1..15) of channel c is f_rest_{c*15 + j-1}
    for c in range(3):
        for j in (1, 7, 15):
            np.testing.assert_array_equal(s.sh[:, j, c], raw[f"f_rest_{c * 15 + j - 1}"])
        np.testing.assert_array_equal(s.sh[:, 0, c], raw[f"f_dc_{c}"])
    np.testing.assert_array_equal(s.quats[:, 0], raw["rot_0"])  # stored raw, w first
    np.testing.assert_array_equal(s.scales[:, 2], raw["scale_2"])


def test_ply_without_normals_other_order():
    s = load_scene(scene_path("v3dg-donut-fused.ply"))
    assert len(s) == 45624 and s.sh_degree == 0 and s.normals is None
    assert s.means[:, 0].min() == pytest.approx(-0.1032, abs=1e-4)


def test_splat_file_decodes_antimatter15_layout():
    path = scene_path("aframe-gs-luma-seal.splat")
    s = load_scene(path)
    rec = np.fromfile(path, np.uint8).reshape(-1, 32)
    assert len(s) == rec.shape[0] == 101780
    pos = rec[:, :12].copy().view("<f4")
    scale = rec[:, 12:24].copy().view("<f4")
    np.testing.assert_array_equal(s.means, pos)
    np.testing.assert_allclose(np.exp(s.scales), scale, rtol=1e-6)
    rgb = 0.5 + 0.28209479177387814 * s.sh[:, 0]
    np.testing.assert_allclose(rgb * 255, rec[:, 24:27], atol=1e-3)
    np.testing.assert_allclose(1 / (1 + np.exp(-s.opacities.astype(np.float64))) * 255, rec[:, 27], atol=1e-3)
    np.testing.assert_allclose(s.quats * 128 + 128, rec[:, 28:32], atol=1e-4)


def test_inria_roundtrip_is_byte_identical(tmp_path):
    src = scene_path("loadersgl-train-1000.ply")
    out = save_ply(load_scene(src), tmp_path / "x.ply")
    assert out.read_bytes() == src.read_bytes()


def _write_ply(path, fields: dict, extra_props=()):
    n = len(next(iter(fields.values())))
    dtype = [(k, "<f4") for k in fields] + [(k, "<f4") for k in extra_props]
    arr = np.zeros(n, dtype)
    for k, v in fields.items():
        arr[k] = v
    PlyData([PlyElement.describe(arr, "vertex")]).write(str(path))


def _fields(n, rng):
    f = {k: rng.normal(size=n) for k in ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity")}
    f.update({f"scale_{i}": rng.normal(-3, 0.5, n) for i in range(3)})
    f.update({f"rot_{i}": rng.normal(size=n) for i in range(4)})
    return f


def test_non_finite_rows_dropped_and_logged(tmp_path, caplog):
    rng = np.random.default_rng(0)
    f = _fields(50, rng)
    f["x"][3] = np.nan
    f["opacity"][7] = np.inf
    f["rot_1"][9] = -np.inf
    _write_ply(tmp_path / "nan.ply", f, extra_props=("semantic_id",))
    s = load_scene(tmp_path / "nan.ply")
    assert len(s) == 47
    assert np.isfinite(s.means).all()
    assert "dropped 3 of 50" in caplog.text


@pytest.mark.parametrize("case, expect", [
    ("missing", "no such file"),
    ("text", "not a PLY"),
    ("truncated", "end-of-file"),
    ("no_opacity", "lacks required properties: opacity"),
    ("empty", "zero Gaussians"),
    ("bad_rest", "f_rest"),
    ("splat_size", "32-byte"),
])
def test_bad_input_names_file_and_problem(tmp_path, case, expect):
    rng = np.random.default_rng(1)
    p = tmp_path / "bad.ply"
    if case == "text":
        p.write_text("hello\n")
    elif case == "truncated":
        _write_ply(p, _fields(100, rng))
        p.write_bytes(p.read_bytes()[:-500])
    elif case == "no_opacity":
        f = _fields(10, rng)
        del f["opacity"]
        _write_ply(p, f)
    elif case == "empty":
        _write_ply(p, {k: v[:0] for k, v in _fields(1, rng).items()})
    elif case == "bad_rest":
        f = _fields(10, rng)
        f.update({f"f_rest_{i}": rng.normal(size=10) for i in range(5)})
        _write_ply(p, f)
    elif case == "splat_size":
        p = tmp_path / "bad.splat"
        p.write_bytes(b"\0" * 33)
    with pytest.raises(SceneError) as e:
        load_scene(p)
    msg = str(e.value)
    assert str(p) in msg and expect in msg and "\n" not in msg


def test_million_gaussian_sh3_ply_loads_under_3x_its_size(tmp_path):
    """Peak RSS of a fresh process loading a ~248 MB PLY stays under 3x the file size."""
    from bench.scenes import tile_scene
    src = load_scene(scene_path("loadersgl-train-1000.ply"))
    big = save_ply(tile_scene(src, 1_000_000), tmp_path / "big.ply")
    size = big.stat().st_size
    # VmHWM is this process's own peak (ru_maxrss would carry over the forking parent's peak)
    code = ("import sys; from rasterizer.scene import load_scene; s = load_scene(sys.argv[1]); "
            "hwm = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]; print(len(s), int(hwm) * 1024)")
    out = subprocess.run([sys.executable, "-c", code, str(big)], capture_output=True, text=True, cwd=REPO,
                         check=True).stdout.split()
    n, peak = int(out[0]), int(out[1])
    print(f"1M SH-3 PLY: {size / 2**20:.0f} MiB, peak RSS {peak / 2**20:.0f} MiB ({peak / size:.2f}x)")
    assert n == 1_000_000
    assert peak < 3 * size
