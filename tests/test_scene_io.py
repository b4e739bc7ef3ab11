"""Scene I/O against the real files: properties by name, SH layout, activations, bad input."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, scene_path
from plyfile import PlyData, PlyElement

from rasterizer.errors import SceneError
from rasterizer.scene import SH_C0, SPLAT_RECORD, load_scene, save_ply


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
    ("truncated", "truncated PLY"),
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


# --------------------------------------------------------------------------- the loader against plyfile

def _reference(path):
    """The scene as plyfile's full parse gives it, column by column, non-finite rows dropped."""
    v = PlyData.read(str(path), mmap=False)["vertex"].data
    names = v.dtype.names
    n_rest = sum(1 for p in names if p.startswith("f_rest_"))
    k = {0: 1, 9: 4, 24: 9, 45: 16}[n_rest]
    with np.errstate(over="ignore"):
        col = lambda *ps: np.stack([np.asarray(v[p], np.float32) for p in ps], axis=1)  # noqa: E731
        means, scales = col("x", "y", "z"), col("scale_0", "scale_1", "scale_2")
        quats, opac = col("rot_0", "rot_1", "rot_2", "rot_3"), np.asarray(v["opacity"], np.float32)
        sh = np.empty((len(v), k, 3), np.float32)
        for c in range(3):
            sh[:, 0, c] = v[f"f_dc_{c}"]
            for j in range(1, k):
                sh[:, j, c] = v[f"f_rest_{c * (k - 1) + j - 1}"]
        normals = col("nx", "ny", "nz") if "nx" in names else None
    ok = (np.isfinite(means).all(1) & np.isfinite(scales).all(1) & np.isfinite(quats).all(1)
          & np.isfinite(opac) & np.isfinite(sh).all((1, 2)) & ((quats.astype(np.float64) ** 2).sum(1) > 0))
    return ok, [a[ok] for a in (means, scales, quats, opac, sh)] + [None if normals is None else normals[ok]]


def _assert_same(scene, ref):
    ok, arrays = ref
    assert len(scene) == int(ok.sum())
    for got, want in zip((scene.means, scene.scales, scene.quats, scene.opacities, scene.sh, scene.normals), arrays):
        if want is None:
            assert got is None
        else:
            assert got.dtype == np.float32 and got.flags.c_contiguous
            np.testing.assert_array_equal(got, want)


def _variant_ply(path, n, degree=0, normals=False, fmt="binary_little_endian", dtype="f4", extras=(),
                 before=None, after=None, shuffle=False, bad_rows=0, seed=0):
    rng = np.random.default_rng(seed)
    props = ["x", "y", "z"] + (["nx", "ny", "nz"] if normals else []) + ["f_dc_0", "f_dc_1", "f_dc_2"]
    props += [f"f_rest_{i}" for i in range(3 * ((degree + 1) ** 2 - 1))]
    props += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    if shuffle:
        props = list(rng.permutation(props))
    fields = [(p, dtype) for p in props] + [(name, t) for name, t in extras]
    arr = np.zeros(n, fields)
    for p in props:
        arr[p] = rng.normal(-2.0 if p.startswith("scale") else 0.0, 1.0, n)
    for name, t in extras:
        arr[name] = rng.integers(0, 100, n).astype(t)
    rows = rng.choice(n, bad_rows, replace=False)
    for r, kind in zip(rows, np.arange(bad_rows) % 5):
        if kind == 0:
            arr["x"][r] = np.nan
        elif kind == 1:
            arr["opacity"][r] = np.inf
        elif kind == 2:
            arr[props[-1] if props[-1].startswith("f_") else "f_dc_1"][r] = -np.inf
        elif kind == 3:
            for q in ("rot_0", "rot_1", "rot_2", "rot_3"):
                arr[q][r] = 0.0
        else:
            arr["scale_2"][r] = 1e300 if dtype == "f8" else np.nan   # beyond float32: inf once read
    elements = [PlyElement.describe(arr, "vertex")]
    if before is not None:
        elements.insert(0, before)
    if after is not None:
        elements.append(after)
    byte_order = {"binary_little_endian": "<", "binary_big_endian": ">", "ascii": "="}[fmt]
    PlyData(elements, text=fmt == "ascii", byte_order=byte_order).write(str(path))
    return path


def _faces(n):
    f = np.empty(n, [("vertex_indices", "O")])
    f["vertex_indices"] = [np.array([0, 1, 2], np.int32)] * n
    return PlyElement.describe(f, "face")


def _camera_el(n):
    return PlyElement.describe(np.zeros(n, [("a", "f8"), ("b", "u1")]), "camera")


VARIANTS = {
    "sh0 little endian": dict(n=300),
    "sh3 normals, rows over three chunks with drops": dict(n=12_000, degree=3, normals=True, bad_rows=40),
    "sh0, seven chunks decoded in threads, drops": dict(n=100_000, bad_rows=25, seed=3),
    "sh1 big endian": dict(n=400, degree=1, fmt="binary_big_endian", bad_rows=7),
    "sh2 doubles": dict(n=300, degree=2, dtype="f8", bad_rows=9),
    "ascii sh1": dict(n=200, degree=1, fmt="ascii", bad_rows=6),
    "shuffled properties, uchar and int extras": dict(n=500, shuffle=True, extras=(("red", "u1"), ("id", "i4"))),
    "fixed-size element before the vertices": dict(n=300, before=_camera_el(3)),
    "list element before the vertices": dict(n=300, before=_faces(4), bad_rows=3),
    "list element after the vertices": dict(n=300, degree=1, after=_faces(5)),
    "big endian doubles, element before": dict(n=250, dtype="f8", fmt="binary_big_endian", before=_camera_el(2)),
}


@pytest.mark.parametrize("case", VARIANTS)
def test_loader_matches_plyfile_full_parse(tmp_path, case):
    path = _variant_ply(tmp_path / "v.ply", **VARIANTS[case])
    _assert_same(load_scene(path), _reference(path))


@pytest.mark.parametrize("name", ["loadersgl-train-1000.ply", "v3dg-donut-fused.ply"])
def test_loader_matches_plyfile_on_real_scenes(name):
    path = scene_path(name)
    _assert_same(load_scene(path), _reference(path))


def test_splat_loader_matches_a_direct_decode():
    path = scene_path("aframe-gs-luma-seal.splat")     # 101,780 records: four chunks
    rec = np.fromfile(path, SPLAT_RECORD)
    s = load_scene(path)
    with np.errstate(divide="ignore"):
        scales = np.log(rec["scale"].astype(np.float64)).astype(np.float32)
    rgba = rec["rgba"] / 255.0
    a = np.clip(rgba[:, 3], 1e-7, 1 - 1e-7)
    ok = np.isfinite(scales).all(1)
    np.testing.assert_array_equal(s.means, rec["pos"][ok])
    np.testing.assert_array_equal(s.scales, scales[ok])
    np.testing.assert_array_equal(s.sh[:, 0], ((rgba[:, :3] - 0.5) / SH_C0).astype(np.float32)[ok])
    np.testing.assert_array_equal(s.opacities, np.log(a / (1 - a)).astype(np.float32)[ok])
    np.testing.assert_array_equal(s.quats, ((rec["rot"].astype(np.float32) - 128) / 128)[ok])


def test_splat_rows_that_cannot_render_are_dropped(tmp_path, caplog):
    rec = np.zeros(40_000, SPLAT_RECORD)      # two chunks
    rec["scale"] = 0.01
    rec["rot"] = [255, 128, 128, 128]
    rec["pos"][[5, 39_000], 0] = np.nan
    rec["scale"][[7, 33_000], 1] = 0.0        # log(0): no finite log scale
    rec["rot"][[11]] = 128                    # a zero quaternion
    p = tmp_path / "x.splat"
    rec.tofile(p)
    s = load_scene(p)
    assert len(s) == 40_000 - 5 and np.isfinite(s.scales).all()
    assert "dropped 5 of 40000" in caplog.text


@pytest.mark.parametrize("count", ["-1000", "1000000000", "1000000000000", str(2 ** 64 + 5), "1" + "0" * 30])
@pytest.mark.parametrize("fmt", ["binary_little_endian", "ascii"])
def test_lying_vertex_counts_are_refused_before_allocating(tmp_path, count, fmt):
    path = _variant_ply(tmp_path / "lie.ply", n=20, fmt=fmt)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"element vertex 20\n", f"element vertex {count}\n".encode(), 1))
    with pytest.raises(SceneError) as e:
        load_scene(path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg
    assert ("declares -1000 vertex" in msg) if count.startswith("-") else ("truncated PLY (or a lying header)" in msg)


@pytest.mark.parametrize("fmt", ["binary_little_endian", "ascii"])
def test_lying_count_of_an_element_after_the_vertices(tmp_path, fmt):
    path = _variant_ply(tmp_path / "lie.ply", n=20, fmt=fmt, after=_faces(3))
    path.write_bytes(path.read_bytes().replace(b"element face 3\n", b"element face 1000000000000\n", 1))
    with pytest.raises(SceneError, match=r"1000000000000 face, which need at least \d+ bytes"):
        load_scene(path)


def test_a_header_without_end_is_refused_quickly(tmp_path):
    p = tmp_path / "endless.ply"
    p.write_bytes(b"ply\nformat ascii 1.0\n" + b"comment " + b"x" * (3 << 20) + b"\n")
    with pytest.raises(SceneError, match="no end_header in its first 1024 KiB"):
        load_scene(p)


@pytest.mark.slow
def test_million_gaussian_sh3_ply_peak_memory_stays_near_its_size(tmp_path):
    """Peak RSS of a fresh process loading a ~248 MB PLY stays under 1.5x the file (issue 12)."""
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
    assert peak < 1.5 * size
