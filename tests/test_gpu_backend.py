"""The CuPy backend against the NumPy reference and numba on the real scenes (GPU machines only).

GPU tests are skipped, with the reason printed, where CuPy or a CUDA device is missing (CI's CPU
machine); the tests at the bottom (import hygiene, the CUDA sources and their defines) run
everywhere. Agreement bar (rendering.md): PSNR >= 50 dB on 8-bit RGB and alpha within 1/255, for
pinhole and orthographic cameras (tests/cameras.py). The chunked path is checked bit-identical.
gsplat itself is the judge in test_gsplat_reference.py.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cameras import cameras_for
from conftest import REPO, SCENE_FILES, assert_images_agree, scene_path

from rasterizer import stages
from rasterizer.backends import gpu_unavailable_reason
from rasterizer.camera import Camera
from rasterizer.render import Prepared, render_batch
from rasterizer.scene import load_scene

REASON = gpu_unavailable_reason()
gpu = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=f"GPU backend unavailable: {REASON}")]
HAVE_NUMBA_BACKEND = importlib.util.find_spec("rasterizer.backends.cpu_numba") is not None
BG = (0.1, 0.2, 0.3)

SCENES = list(SCENE_FILES)


@pytest.fixture(scope="module", params=SCENES)
def case(request):
    if REASON is not None:
        pytest.skip(f"GPU backend unavailable: {REASON}")
    scene = load_scene(scene_path(request.param))
    size = (517, 389) if len(scene) < 200_000 else (320, 240)
    return request.param, scene, cameras_for(scene, size=size)


@pytest.mark.gpu
def test_gpu_matches_reference(case):
    name, scene, cams = case
    gpu_, ref = Prepared(scene, "gpu"), Prepared(scene, "numpy")
    for view, cam in cams.items():
        g = gpu_.render(cam, BG)
        assert_images_agree(g, ref.render(cam, BG), what=f"{name} {view} gpu vs numpy")
        if view == "away":                       # looking away from everything: background, no error
            assert g.alpha.max() == 0.0
            assert np.array_equal(g.rgb, np.broadcast_to(np.asarray(BG, np.float32), g.rgb.shape))
        else:
            assert g.alpha.max() > 0.0, f"{name} {view}: blank"


@pytest.mark.gpu
def test_gpu_matches_numba(case):
    if not HAVE_NUMBA_BACKEND:
        pytest.skip("the numba backend (rasterizer/backends/cpu_numba.py) is not there yet")
    name, scene, cams = case
    gpu_, cpu = Prepared(scene, "gpu"), Prepared(scene, "cpu")
    for view, cam in cams.items():
        assert_images_agree(gpu_.render(cam, BG), cpu.render(cam, BG), what=f"{name} {view} gpu vs numba")


@pytest.mark.gpu
def test_gpu_is_bit_identical_run_to_run(case):
    name, scene, cams = case
    gpu_ = Prepared(scene, "gpu")
    for view, cam in cams.items():
        a, b, c = gpu_.render(cam, BG), gpu_.render(cam, BG), Prepared(scene, "gpu").render(cam, BG)
        for other in (b, c):
            assert np.array_equal(a.rgb, other.rgb) and np.array_equal(a.alpha, other.alpha), f"{name} {view}"


@pytest.mark.gpu
def test_chunked_equals_unchunked_bit_for_bit(case, monkeypatch, caplog):
    name, scene, cams = case
    prepared = Prepared(scene, "gpu")
    whole = {v: prepared.render(c, BG) for v, c in cams.items()}
    monkeypatch.setenv("SPLATTER_GPU_MAX_ISECT", "500")         # force many depth chunks
    with caplog.at_level("INFO", logger="rasterizer.backends.gpu_cupy"):
        for view, cam in cams.items():
            chunked = prepared.render(cam, BG)
            assert np.array_equal(chunked.rgb, whole[view].rgb), f"{name} {view}"
            assert np.array_equal(chunked.alpha, whole[view].alpha), f"{name} {view}"
    assert "depth chunks" in caplog.text                         # the chunked path really ran


@pytest.mark.gpu
def test_batch_equals_single_renders(case):
    name, scene, cams = case
    batch = list(render_batch(scene, list(cams.values()), BG, backend="gpu"))
    assert len(batch) == len(cams)
    for img, (view, cam) in zip(batch, cams.items()):
        single = Prepared(scene, "gpu").render(cam, BG)
        assert np.array_equal(img.rgb, single.rgb) and np.array_equal(img.alpha, single.alpha), f"{name} {view}"


@pytest.mark.gpu
@pytest.mark.skipif(REASON is not None, reason=f"GPU backend unavailable: {REASON}")
def test_stages_match_the_reference_stages():
    """project and sh_colors per Gaussian, tile lists as sets, on the SH-3 scene."""
    import cupy as cp

    from rasterizer.backends import gpu_cupy as be
    scene = load_scene(scene_path("v3dg-donut-fused.ply"))
    cam = cameras_for(scene, size=(517, 389))["oblique"]
    g_ref = stages.activate(scene)
    p_ref = stages.project(g_ref, cam)
    g = be.upload(scene)
    p = be.project(g, cam)
    radii = cp.asnumpy(p.radii)
    assert (radii == p_ref.radii).mean() > 0.999                 # ceil() may flip on rounding ties
    both = (radii > 0) & (p_ref.radii > 0)
    np.testing.assert_allclose(cp.asnumpy(p.means2d)[both], p_ref.means2d[both], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(cp.asnumpy(p.conics)[both], p_ref.conics[both], rtol=2e-3, atol=1e-5)
    # SH colour: the standalone kernel (every Gaussian) and the fused one (those that reach a pixel)
    np.testing.assert_allclose(cp.asnumpy(be.sh_colors(g, cam)), stages.sh_colors(g_ref, cam), atol=2e-5)
    _, fused = be.project_and_color(g, cam)
    used = cp.asnumpy(p.counts) > 0
    np.testing.assert_allclose(cp.asnumpy(fused)[used], stages.sh_colors(g_ref, cam)[used], atol=2e-5)
    # tile lists: front to back (depth, then index), and each pair one the reference lists too
    # (the GPU drops only Gaussians too faint to reach 1/255 in a tile)
    bins, ref_bins = be.bin_tiles(p, cam), stages.bin_tiles(p_ref, cam)
    ids, off = cp.asnumpy(bins.gaussian_ids), cp.asnumpy(bins.offsets)
    depths = cp.asnumpy(p.depths)
    for t in range(len(off) - 1):
        mine = ids[off[t]:off[t + 1]]
        d = depths[mine]
        assert np.all((d[1:] > d[:-1]) | ((d[1:] == d[:-1]) & (mine[1:] > mine[:-1]))), f"tile {t} order"
    n = len(g)
    tile_of = lambda offsets, m: np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))  # noqa: E731
    pairs = tile_of(off, len(ids)).astype(np.int64) * n + ids
    ref_pairs = tile_of(ref_bins.offsets, 0).astype(np.int64) * n + ref_bins.gaussian_ids
    assert np.isin(pairs, ref_pairs).mean() > 0.999
    assert len(ids) < len(ref_bins.gaussian_ids)


@pytest.mark.gpu
@pytest.mark.skipif(REASON is not None, reason=f"GPU backend unavailable: {REASON}")
@pytest.mark.parametrize("k", [2, 3])
def test_downscale_on_the_gpu_is_the_reference_bit_for_bit(k):
    """The preview's supersampling resolve on the device: the same bits as stages.downscale, on a
    rendered view (downloaded at full size and resolved on the host, against resolved on the device)."""
    import dataclasses
    scene = load_scene(scene_path("v3dg-donut-fused.ply"))
    cam = cameras_for(scene, size=(160, 120))["oblique"]
    big = dataclasses.replace(cam, width=cam.width * k, height=cam.height * k, fx=cam.fx * k, fy=cam.fy * k,
                              cx=cam.cx * k, cy=cam.cy * k)
    prepared = Prepared(scene, "gpu")
    full = prepared.render(big, BG)
    want_rgb, want_alpha = stages.downscale(full.rgb, full.alpha, k)
    got = prepared.render(big, BG, downscale=k)
    assert got.rgb.shape == (120, 160, 3) and got.alpha.shape == (120, 160)
    assert np.array_equal(got.rgb, want_rgb) and np.array_equal(got.alpha, want_alpha)
    assert got.alpha.max() > 0.5


@pytest.mark.gpu
@pytest.mark.skipif(REASON is not None, reason=f"GPU backend unavailable: {REASON}")
def test_8_bit_frames_are_converted_on_the_gpu_to_the_same_bytes():
    """The video's frames: 8-bit on the device, byte for byte imageio.to_uint8 of the float image, on a
    rendered view and on values at every rounding edge (k/255 and (k + 0.5)/255 and outside [0, 1])."""
    import cupy as cp

    from rasterizer.backends import gpu_cupy
    from rasterizer.imageio import to_uint8
    scene = load_scene(scene_path("v3dg-donut-fused.ply"))
    cam = cameras_for(scene, size=(160, 120))["oblique"]
    prepared = Prepared(scene, "gpu")
    got = prepared.render8(cam, BG)
    assert got.dtype == np.uint8 and got.shape == (120, 160, 3)
    assert np.array_equal(got, to_uint8(prepared.render(cam, BG).rgb))
    k = np.arange(256, dtype=np.float64)
    edges = np.concatenate([k / 255, (k + 0.5) / 255, [-1.0, -1e-9, 1 + 1e-7, 2.0]]).astype(np.float32)
    edges = np.concatenate([edges, np.nextafter(edges, np.float32(2)), np.nextafter(edges, np.float32(-2))])
    edges = edges.reshape(1, -1, 3)
    assert np.array_equal(gpu_cupy.download8(cp.asarray(edges)), to_uint8(edges))


@pytest.mark.gpu
@pytest.mark.skipif(REASON is not None, reason=f"GPU backend unavailable: {REASON}")
def test_gpu_preview_command_renders_its_plan_from_the_scene_uploaded_beside_the_planning(tmp_path):
    """``python -m rasterizer preview --backend gpu`` uploads the scene while it plans and takes the cut
    on the device (the demo room is indoor: cut below its ceiling); its images are those of the same
    plan rendered in process from the cut scene uploaded on its own."""
    from PIL import Image as PILImage

    from rasterizer.demo import demo_scene
    from rasterizer.preview import plan_previews, write_previews
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "rasterizer", "preview", "--out", str(out), "--backend", "gpu",
                           "--format", "png", "--size", "640x360"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "uploaded while the views were planned" in done.stderr
    plan = plan_previews(demo_scene(), up="y", size=(640, 360))
    assert plan.kept is not None and 0 < plan.kept.sum() < len(plan.kept)
    write_previews(plan, tmp_path / "ref", prepared=Prepared(plan.scene, "gpu"), fmt="png")
    for view in ("top", "angle"):
        got = np.asarray(PILImage.open(out / f"preview_{view}.png"))
        want = np.asarray(PILImage.open(tmp_path / "ref" / f"preview_{view}.png"))
        assert np.array_equal(got, want), view


@pytest.mark.gpu
@pytest.mark.skipif(REASON is not None, reason=f"GPU backend unavailable: {REASON}")
@pytest.mark.parametrize("n", [700, 4096, 4097])
def test_small_view_sorts_give_the_general_paths_bins_exactly(monkeypatch, n):
    """The one-block sorts of small views (bin.cu, "Small views": bitonic sorts of keys made unique by
    their index) against the general path's stable radix sorts (sort.cu): the same Gaussian ids in tile order and tile
    ranges on every camera of the demo room's first n Gaussians (4097: the depth sort falls back)."""
    from rasterizer.backends import cuda, gpu_cupy
    from rasterizer.demo import demo_scene
    scene = demo_scene().subset(np.arange(n))
    prepared = Prepared(scene, "gpu")
    small_pairs = 0
    for size in ((96, 64), (320, 240)):
        for view, cam in cameras_for(scene, size=size).items():
            p, _ = gpu_cupy.project_and_color(prepared.gaussians, cam)
            got = gpu_cupy.bin_tiles(p, cam)
            with monkeypatch.context() as m:
                m.setattr(cuda, "SMALL_DEPTH_N", 0)
                m.setattr(cuda, "SMALL_PAIRS", 0)
                want = gpu_cupy.bin_tiles(p, cam)
            pairs = int(want.offsets[-1])
            small_pairs += 0 < pairs <= cuda.SMALL_PAIRS
            assert np.array_equal(got.offsets.get(), want.offsets.get()), f"{n} {size} {view}"
            assert np.array_equal(got.gaussian_ids.get(), want.gaussian_ids.get()), f"{n} {size} {view}"
    assert small_pairs >= 2, "no view small enough for the one-block tile sort"


@pytest.mark.gpu
@pytest.mark.skipif(REASON is not None, reason=f"GPU backend unavailable: {REASON}")
@pytest.mark.parametrize("n", [2, 300, 4095, 4096, 4097, 1_000_003])
def test_radix_sort_and_running_sums_are_numpys_stable_ones(n):
    """sort.cu against NumPy: the depth sort (32-bit keys with many ties and the all-ones key of the
    culled, indices as values, keys not written), the tile sort (13 and 16 bits of uint16 keys, 17 bits
    of uint32 keys, carried int32 values) and the running sums of counts in an order, over one tile of
    keys and many (the look-back between tiles)."""
    import cupy as cp

    from rasterizer.backends import gpu_cupy
    rng = np.random.default_rng(n)
    depth = rng.uniform(0.2, 50.0, n).astype(np.float32)
    depth[rng.random(n) < 0.3] = 7.0                               # ties
    keys = depth.view(np.uint32).copy()
    keys[rng.random(n) < 0.2] = 0xFFFFFFFF                          # culled: sorted last
    none, order = gpu_cupy.radix_sort(cp.asarray(keys), 32, keys_out=False)
    assert none is None
    assert np.array_equal(order.get(), np.argsort(keys, kind="stable"))
    for dtype, bits in ((np.uint16, 13), (np.uint16, 16), (np.uint32, 17)):
        tiles = rng.integers(0, 1 << bits, n).astype(dtype)
        tiles[: n // 3] = tiles[0]                                 # one long run of a tile
        values = rng.integers(0, 2**31 - 1, n).astype(np.int32)
        got_keys, got_values = gpu_cupy.radix_sort(cp.asarray(tiles), bits, cp.asarray(values))
        want = np.argsort(tiles, kind="stable")
        assert got_keys.dtype == dtype
        assert np.array_equal(got_keys.get(), tiles[want]), (dtype, bits)
        assert np.array_equal(got_values.get(), values[want]), (dtype, bits)
    counts = rng.integers(0, 9000, n).astype(np.int32)
    counts[rng.random(n) < 0.5] = 0
    ends = gpu_cupy.running_sums(order, cp.asarray(counts))
    assert ends.dtype == np.int64
    assert np.array_equal(ends.get(), np.cumsum(counts[order.get()].astype(np.int64)))


@pytest.mark.gpu
@pytest.mark.skipif(REASON is not None, reason=f"GPU backend unavailable: {REASON}")
def test_huge_splats_around_the_camera_chunk_one_gaussian_at_a_time(monkeypatch):
    """A camera inside a cloud of huge splats: every Gaussian covers the whole image. With a limit
    below one Gaussian's tile count each Gaussian is its own chunk: same image, bit for bit."""
    from rasterizer.scene import Scene
    rng = np.random.default_rng(7)
    n = 300
    means = rng.normal(size=(n, 3)).astype(np.float32) * 2.0
    scene = Scene(means, np.full((n, 3), np.log(5.0), np.float32), rng.normal(size=(n, 4)).astype(np.float32),
                  np.full(n, -3.0, np.float32), rng.normal(size=(n, 1, 3)).astype(np.float32), None, "huge")
    cam = Camera.look_at([0, 0, 0], [0, 0, 1], [0, 1, 0], 90.0, 333, 211)
    prepared = Prepared(scene, "gpu")
    whole = prepared.render(cam)
    assert_images_agree(whole, Prepared(scene, "numpy").render(cam), what="huge splats gpu vs numpy")
    monkeypatch.setenv("SPLATTER_GPU_MAX_ISECT", "100")          # < 22 x 14 tiles of one splat
    one_by_one = prepared.render(cam)
    assert np.array_equal(whole.rgb, one_by_one.rgb) and np.array_equal(whole.alpha, one_by_one.alpha)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(REASON is not None, reason=f"GPU backend unavailable: {REASON}")
def test_3m_gaussians_at_1080p_stay_under_1_gib():
    import cupy as cp

    from bench.gpu import PeakMemory
    from bench.scenes import tile_scene
    from rasterizer.preview import preview_cameras
    base = load_scene(scene_path("playcanvas-playbot-lod0-500k.ply"))
    scene = tile_scene(base, 3_000_000)
    del base
    cp.get_default_memory_pool().free_all_blocks()
    mem = PeakMemory()
    try:
        prepared = Prepared(scene, "gpu")
        for cam in preview_cameras(scene, up="-y", size=(1920, 1080)).values():
            img = prepared.render(cam)
            assert img.alpha.mean() > 0.01
    finally:
        mem.close()
    assert mem.peak < 2**30, f"peak GPU memory {mem.peak / 2**20:.0f} MiB"


# --------------------------------------------------------------------------- everywhere (CI too)

@pytest.mark.gpu
@pytest.mark.skipif(REASON is not None, reason=f"GPU backend unavailable: {REASON}")
def test_the_auto_backend_on_a_gpu_imports_no_numba():
    code = ("import sys; from rasterizer.backends import get; be = get('auto'); "
            "assert be.__name__.endswith('gpu_cupy'), be.__name__; "
            "assert 'numba' not in sys.modules, 'numba imported'")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_a_cpu_preview_never_brings_cuda_up(tmp_path):
    """``preview --backend cpu`` starts no warm-up: neither CuPy nor the CUDA driver is loaded (on a GPU
    machine that would cost a context; on any machine, time)."""
    if not Path("/proc/self/maps").is_file():
        pytest.skip("no /proc/self/maps here to see the loaded libraries")
    code = ("import sys; from rasterizer.cli import main; "
            f"rc = main(['preview', '--out', {str(tmp_path / 'out')!r}, '--backend', 'cpu', '--size', '160x90']); "
            "maps = open('/proc/self/maps').read(); "
            "assert rc == 0, rc; assert 'cupy' not in sys.modules, 'cupy imported'; "
            "assert 'libcuda' not in maps, 'the CUDA driver is loaded'")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "out" / "preview_top.jpg").is_file()


def test_importing_the_package_does_not_import_cupy():
    code = ("import sys, rasterizer, rasterizer.backends, rasterizer.render, bench.gpu; "
            "assert 'cupy' not in sys.modules, 'cupy imported'")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(REASON is None, reason="a GPU is present here")
def test_gpu_backend_without_a_gpu_is_a_clear_error():
    from rasterizer.backends import get, resolve
    from rasterizer.errors import BackendUnavailable, SceneError
    with pytest.raises(BackendUnavailable, match="backend gpu is not available") as e:
        get("gpu")
    assert isinstance(e.value, SceneError) and "\n" not in str(e.value)
    assert resolve("auto") in ("cpu", "numpy")


def test_cuda_defines_are_the_contract_constants_exactly():
    from rasterizer import sh
    from rasterizer.backends import cuda
    got = {}
    for opt in cuda.defines():
        name, value = opt[2:].split("=", 1)
        got[name] = int(value) if value.isdigit() else float.fromhex(value.strip("()").rstrip("f"))
    want = {"TILE": stages.TILE, "NEAR": stages.NEAR, "FAR": stages.FAR, "EPS2D": stages.EPS2D,
            "FRUSTUM_CLAMP": stages.FRUSTUM_CLAMP, "LAMBDA_MIN": stages.LAMBDA_MIN,
            "RADIUS_SIGMAS": stages.RADIUS_SIGMAS, "ALPHA_MIN": stages.ALPHA_MIN, "ALPHA_MAX": stages.ALPHA_MAX,
            "T_MIN": stages.T_MIN, "SH_C0": sh.C0, "SH_C1": sh.C1,
            **{f"SH_C2_{i}": v for i, v in enumerate(sh.C2)}, **{f"SH_C3_{i}": v for i, v in enumerate(sh.C3)}}
    for name, v in want.items():
        assert got[name] == (v if isinstance(v, int) else float(np.float32(v))), name


def _cuda_files():
    from rasterizer.backends import cuda
    return sorted(cuda.DIR.glob("*.cu")) + sorted(cuda.DIR.glob("*.cuh"))


def test_cuda_sources_restate_no_constant_of_the_contract():
    """Every number of rendering.md reaches CUDA as a define; none is written there as a literal."""
    import re

    from rasterizer import sh
    contract = [stages.NEAR, stages.FAR, stages.FRUSTUM_CLAMP, stages.EPS2D, stages.LAMBDA_MIN, stages.ALPHA_MIN,
                stages.ALPHA_MAX, stages.T_MIN, 1.0 / stages.ALPHA_MIN, sh.C0, sh.C1, *sh.C2, *sh.C3]
    banned = {float(np.float32(abs(v))) for v in contract}
    literal = re.compile(r"(?<![\w.])(\d+\.\d*|\.\d+|\d+(?:\.\d*)?[eE][-+]?\d+)f?(?![\w.])")
    files = _cuda_files()
    assert {f.name for f in files} >= {"project.cu", "bin.cu", "sort.cu", "blend.cu", "reach.cuh", "sh.cuh",
                                       "scan.cuh"}
    for f in files:
        for n, line in enumerate(f.read_text().splitlines(), 1):
            code = line.split("//")[0]
            for m in literal.finditer(code):
                assert float(np.float32(float(m.group(1)))) not in banned, f"{f.name}:{n}: {m.group(0)} restated"


def test_cuda_sources_compile():
    """Each kernel file, headers inlined, with the defines and every template instantiation gpu_cupy
    launches (nvcc where the machine has it)."""
    import shutil
    import tempfile
    from pathlib import Path

    from rasterizer.backends import cuda
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not found: the CUDA sources compile only on GPU machines here")
    with tempfile.TemporaryDirectory() as tmp:
        for stem in cuda.KERNELS:
            src = Path(tmp) / f"{stem}.cu"
            templates = [name for name in cuda.KERNELS[stem] if "<" in name]   # instantiated by taking their address
            taken = ", ".join(f"(void*)&{name}" for name in templates)
            src.write_text(cuda.source(stem) + (f"void* instances[] = {{{taken}}};\n" if templates else ""))
            r = subprocess.run([nvcc, "-std=c++17", "-arch=sm_80", "-ptx", *cuda.defines(), "-o",
                                str(src.with_suffix(".ptx")), str(src)], capture_output=True, text=True)
            assert r.returncode == 0, f"{stem}.cu: {r.stderr[-2000:]}"
            ptx = src.with_suffix(".ptx").read_text()
            for name in templates:
                assert f"{len(name.split('<')[0])}{name.split('<')[0]}I" in ptx, f"{name} not instantiated"
            assert "#include" not in src.read_text().replace("#include <", "")
