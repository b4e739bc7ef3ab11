"""PLY → .splat: the same bytes and order as ply2splat 0.6.0 (the test-only reference)."""
from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np
import pytest
from conftest import scene_path
from plyfile import PlyData, PlyElement

from rasterizer.errors import SceneError
from rasterizer.scene import SPLAT_RECORD, save_ply
from rasterizer.splatfile import NEEDED, convert, expf, read_columns

ply2splat = pytest.importorskip("ply2splat", reason="ply2splat (test-only reference) is not installed")


def reference(ply, sort=True) -> bytes:
    data, _n = ply2splat.load_and_convert(str(ply), sort=sort)
    return bytes(data)


def ours(ply, tmp_path, sort=True) -> bytes:
    out = tmp_path / "out.splat"
    convert(ply, out, sort=sort)
    return out.read_bytes()


def explain(a: bytes, b: bytes) -> str:
    ra, rb = np.frombuffer(a, SPLAT_RECORD), np.frombuffer(b, SPLAT_RECORD)
    if len(ra) != len(rb):
        return f"{len(ra)} vs {len(rb)} records"
    bad = np.flatnonzero(np.frombuffer(a, "V32") != np.frombuffer(b, "V32"))
    return f"{len(bad)} records differ, first at {bad[:5]}: {ra[bad[:2]]} vs {rb[bad[:2]]}"


def write_ply(path, columns: dict[str, np.ndarray], text=False):
    n = len(next(iter(columns.values())))
    rec = np.empty(n, [(k, "<f4") for k in columns])
    for k, v in columns.items():
        rec[k] = v
    PlyData([PlyElement.describe(rec, "vertex")], text=text).write(str(path))
    return path


@pytest.mark.parametrize("name", ["loadersgl-train-1000.ply", "v3dg-donut-fused.ply",
                                  "playcanvas-playbot-lod0-500k.ply"])
def test_real_scenes_byte_identical(name, tmp_path):
    ply = scene_path(name)
    a, b = ours(ply, tmp_path), reference(ply)
    assert a == b, explain(a, b)


def test_demo_scene_byte_identical_sorted_and_unsorted(demo, tmp_path):
    ply = save_ply(demo, tmp_path / "demo.ply")
    for sort in (True, False):
        a, b = ours(ply, tmp_path, sort), reference(ply, sort)
        assert a == b, explain(a, b)


def edge_case_columns(rng, n=4000) -> dict[str, np.ndarray]:
    """Ties on every sort key, signed zeros, NaN and infinite inputs, zero quaternions, saturating values."""
    c = {k: rng.normal(size=n).astype(np.float32) for k in NEEDED}
    c["opacity"] *= 4
    for k in ("scale_0", "scale_1", "scale_2"):
        c[k] = (c[k] - 4).astype(np.float32)
    # equal keys: same scales and opacity on a block, positions decide (x, then y, then z, then file order)
    blk = slice(0, 400)
    for k in ("scale_0", "scale_1", "scale_2", "opacity"):
        c[k][blk] = c[k][0]
    c["x"][0:200] = c["x"][0]
    c["y"][0:100] = c["y"][0]
    c["z"][0:50] = c["z"][0]          # 50 rows equal on all four keys: file order decides
    c["x"][200:220] = np.where(np.arange(20) % 2, 0.0, -0.0)  # -0.0 sorts before +0.0 under total_cmp
    # saturation and non-finite inputs
    specials = [np.nan, -np.nan, np.inf, -np.inf, 1e30, -1e30, 100.0, -100.0, 0.0, -0.0]
    for j, k in enumerate(NEEDED):
        c[k][400 + 10 * j:410 + 10 * j] = specials
    for k in ("rot_0", "rot_1", "rot_2", "rot_3"):
        c[k][600:620] = 0.0             # zero quaternion → identity bytes
    c["rot_0"][620:640] = 1e-30         # underflowing length
    c["f_dc_0"][640:700] = np.linspace(-1.8, 1.8, 60)  # every truncation boundary region
    c["opacity"][700:800] = np.linspace(-8, 8, 100)
    # NaN keys made several ways: inf·0, inf − inf, and NaN in both factors with either sign
    c["scale_0"][800:806] = [np.inf, np.inf, np.nan, -np.nan, np.nan, -np.nan]
    c["scale_1"][801] = -np.inf
    c["opacity"][800:806] = [-1000.0, 0.0, np.nan, np.nan, -np.nan, -np.nan]
    return c


def test_edge_cases_byte_identical(tmp_path):
    cols = edge_case_columns(np.random.default_rng(0))
    ply = write_ply(tmp_path / "edge.ply", cols)
    for sort in (True, False):
        a, b = ours(ply, tmp_path, sort), reference(ply, sort)
        assert a == b, explain(a, b)


def test_property_order_extra_properties_and_ascii(tmp_path):
    rng = np.random.default_rng(1)
    cols = {k: rng.normal(size=300).astype(np.float32) for k in reversed(NEEDED)}
    cols.update({f"f_rest_{i}": rng.normal(size=300).astype(np.float32) for i in range(9)})
    cols["nx"] = np.zeros(300, np.float32)
    for text in (False, True):
        ply = write_ply(tmp_path / f"p{text}.ply", cols, text=text)
        a, b = ours(ply, tmp_path), reference(ply)
        assert a == b, explain(a, b)


def test_expf_is_glibcs_bit_for_bit():
    libm_name = ctypes.util.find_library("m")
    if libm_name is None:
        pytest.skip("no C math library to compare with")
    libm = ctypes.CDLL(libm_name)
    libm.expf.restype, libm.expf.argtypes = ctypes.c_float, [ctypes.c_float]
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(-110, 95, 20000), rng.normal(0, 4, 20000),
                        [0.0, -0.0, 88.0, 88.72, 88.73, -103.9, -104.0, np.inf, -np.inf, np.nan]]).astype(np.float32)
    ref = np.array([libm.expf(float(v)) for v in x], np.float32)
    got = expf(x)
    same = (got.view(np.uint32) == ref.view(np.uint32)) | (np.isnan(got) & np.isnan(ref))
    assert same.all(), f"{(~same).sum()} differ, e.g. x={x[~same][:3]} got {got[~same][:3]} libm {ref[~same][:3]}"


def test_peak_memory_is_well_under_twice_the_ply(tmp_path):
    """A 200k-Gaussian SH-3 PLY (≈ 50 MB) converts in a fresh process with a peak (VmHWM − RSS
    before) under 2× the file: only the 14 needed properties are held, read in chunks."""
    from bench.convert import _run_child, make_sh3_ply
    ply = make_sh3_ply(tmp_path / "sh3.ply", 200_000)
    res = _run_child("ours", ply, tmp_path / "ours.splat")
    size = ply.stat().st_size
    assert res["peak_bytes"] <= 2 * size, f"peak {res['peak_bytes'] / 2**20:.1f} MiB for a {size / 2**20:.1f} MiB PLY"
    assert (tmp_path / "ours.splat").read_bytes() == reference(ply)


@pytest.mark.parametrize("content, needle", [
    (b"not a ply at all", "not a readable PLY"),
    (b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\nend_header\n\0\0\0\0",
     "lacks required properties: y, z"),
])
def test_bad_input_is_a_scene_error_and_writes_nothing(tmp_path, content, needle):
    ply = tmp_path / "bad.ply"
    ply.write_bytes(content)
    with pytest.raises(SceneError, match=needle) as e:
        convert(ply, tmp_path / "out.splat")
    assert str(ply) in str(e.value)
    assert list(tmp_path.iterdir()) == [ply]


def test_truncated_body_is_a_scene_error(tmp_path, demo):
    ply = save_ply(demo, tmp_path / "demo.ply")
    ply.write_bytes(ply.read_bytes()[:-1000])
    with pytest.raises(SceneError, match=r"truncated|corrupt|early end"):
        read_columns(ply)
    with pytest.raises(SceneError):
        convert(ply, tmp_path / "out.splat")
    assert not (tmp_path / "out.splat").exists()


def test_a_ply_with_no_usable_gaussian_is_refused(tmp_path):
    """Rows with a NaN or a zero quaternion are kept as ply2splat keeps them (the edge cases above), but a
    PLY made only of such rows is refused, as every other reader of ours refuses it: no .splat of NaNs."""
    rng = np.random.default_rng(1)
    cols = {k: rng.normal(size=300).astype(np.float32) for k in NEEDED}
    cols["x"][:150] = np.nan
    for k in ("rot_0", "rot_1", "rot_2", "rot_3"):
        cols[k][150:] = 0.0
    ply = write_ply(tmp_path / "unusable.ply", cols)
    with pytest.raises(SceneError, match="every Gaussian has non-finite values or a zero quaternion"):
        convert(ply, tmp_path / "out.splat")
    assert not (tmp_path / "out.splat").exists()
    cols["x"][0] = 0.5                  # one usable row: converted, all 300 records
    for k in ("rot_0", "rot_1", "rot_2", "rot_3"):
        cols[k][0] = 0.5
    ply = write_ply(tmp_path / "one.ply", cols)
    assert convert(ply, tmp_path / "one.splat").count == 300
