"""The CuPy backend against the NumPy reference and numba on the real scenes (GPU machines only).

GPU tests are skipped, with the reason printed, where CuPy or a CUDA device is missing (CI's CPU
machine); the import-hygiene tests at the bottom run everywhere. Agreement bar (rendering.md):
PSNR >= 50 dB on 8-bit RGB and alpha within 1/255. The chunked path is checked bit-identical.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, SCENE_FILES, assert_images_agree, scene_path
from rasterizer import stages
from rasterizer.backends import gpu_unavailable_reason
from rasterizer.camera import Camera
from rasterizer.render import Prepared, render_batch
from rasterizer.scene import load_scene
from cameras import cameras_for

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
    # SH colour: the standalone kernel (another camera's cache) and the fused one
    far = cameras_for(scene, size=(517, 389))["top"]
    np.testing.assert_allclose(cp.asnumpy(be.sh_colors(g, far)), stages.sh_colors(g_ref, far), atol=2e-5)
    used = cp.asnumpy(p.counts) > 0
    np.testing.assert_allclose(cp.asnumpy(be.sh_colors(g, cam))[used], stages.sh_colors(g_ref, cam)[used],
                               atol=2e-5)
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
    from rasterizer.preview import preview_cameras
    from bench.scenes import tile_scene
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
