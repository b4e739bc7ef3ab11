"""Each reference stage against closed forms, and the blending rules on tiny hand-made scenes.

The same hand-made scenes run through every CPU-available backend, so a backend that gets
a rule wrong (order, stop, skip) fails here with a readable message.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from rasterizer import stages
from rasterizer.backends import available
from rasterizer.camera import Camera
from rasterizer.render import render
from rasterizer.scene import SH_C0, Scene

CPU_BACKENDS = [b for b in available() if b != "gpu"]


def make_scene(means, sigma=0.05, opacity=0.5, rgb=(1.0, 0.0, 0.0), sh_rest=None) -> Scene:
    means = np.asarray(means, np.float32).reshape(-1, 3)
    n = len(means)
    rgb = np.broadcast_to(np.asarray(rgb, np.float32), (n, 3))
    k = 1 if sh_rest is None else 1 + sh_rest.shape[1]
    sh = np.zeros((n, k, 3), np.float32)
    sh[:, 0] = (rgb - 0.5) / SH_C0
    if sh_rest is not None:
        sh[:, 1:] = sh_rest
    op = np.broadcast_to(np.asarray(opacity, np.float64), (n,))
    return Scene(means, np.full((n, 3), math.log(sigma), np.float32), np.tile([1, 0, 0, 0], (n, 1)).astype(np.float32),
                 np.log(op / (1 - op)).astype(np.float32), sh)


CAM = Camera.look_at([0, 0, -5], [0, 0, 0], [0, -1, 0], 60.0, 64, 48)   # OpenCV-like: +y down in image


def test_project_isotropic_gaussian_closed_form():
    g = stages.activate(make_scene([[0, 0, 0]], sigma=0.05))
    p = stages.project(g, CAM)
    f, z = CAM.fx, 5.0
    var = (f * 0.05 / z) ** 2 + 0.3
    assert p.means2d[0] == pytest.approx([32, 24], abs=1e-4)
    assert p.depths[0] == pytest.approx(5.0)
    assert p.conics[0] == pytest.approx([1 / var, 0, 1 / var], rel=1e-5)
    assert p.radii[0] == math.ceil(3 * math.sqrt(var + 0.1))   # λ = b + sqrt(max(0.01, 0))


def test_project_culls_behind_near_and_off_screen():
    g = stages.activate(make_scene([[0, 0, -4.995], [0, 0, -6], [40, 0, 0], [0, 0, 0]]))
    p = stages.project(g, CAM)
    assert list(p.radii > 0) == [False, False, False, True]


def test_sh_degree_1_changes_with_view_direction():
    rest = np.zeros((1, 3, 3), np.float32)
    rest[0, 1, 0] = 0.5          # coefficient 2 (basis C1*z), red channel
    g = stages.activate(make_scene([[0, 0, 0]], rgb=(0.5, 0.5, 0.5), sh_rest=rest))
    front = stages.sh_colors(g, Camera.look_at([0, 0, -5], [0, 0, 0], [0, 1, 0], 60, 8, 8))
    back = stages.sh_colors(g, Camera.look_at([0, 0, 5], [0, 0, 0], [0, 1, 0], 60, 8, 8))
    c1 = 0.4886025119029199
    assert front[0, 0] == pytest.approx(0.5 + c1 * 0.5, abs=1e-5)   # dir = +z from the camera
    assert back[0, 0] == pytest.approx(0.5 - c1 * 0.5, abs=1e-5)
    assert front[0, 1] == pytest.approx(0.5, abs=1e-6)


def test_bin_tiles_matches_brute_force():
    rng = np.random.default_rng(3)
    cam = Camera.look_at([0, 0, -4], [0, 0, 0], [0, -1, 0], 60, 100, 70)
    g = stages.activate(make_scene(rng.uniform(-1.5, 1.5, (200, 3)), sigma=0.08))
    p = stages.project(g, cam)
    bins = stages.bin_tiles(p, cam)
    for t in range(bins.tiles_x * bins.tiles_y):
        tx, ty = t % bins.tiles_x, t // bins.tiles_x
        ids = bins.gaussian_ids[bins.offsets[t]:bins.offsets[t + 1]]
        m, r = p.means2d, p.radii
        hit = (r > 0) & (np.floor((m[:, 0] - r) / 16) <= tx) & (tx < np.ceil((m[:, 0] + r) / 16)) \
            & (np.floor((m[:, 1] - r) / 16) <= ty) & (ty < np.ceil((m[:, 1] + r) / 16))
        expect = sorted(np.flatnonzero(hit), key=lambda i: (p.depths[i], i))
        assert list(ids) == expect, f"tile {t}"


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_single_gaussian_pixel_value(backend):
    scene = make_scene([[0, 0, 0]], sigma=0.2, opacity=0.8, rgb=(0.9, 0.4, 0.1))
    bg = (0.1, 0.2, 0.3)
    img = render(scene, CAM, background=bg, backend=backend)
    # the Gaussian's mean sits exactly on a pixel corner (32, 24); the pixel centre is 0.5 px away
    p = stages.project(stages.activate(scene), CAM)
    a, b, c = p.conics[0]
    sigma = 0.5 * (a * 0.25 + c * 0.25) + b * 0.25
    alpha = 0.8 * math.exp(-sigma)
    np.testing.assert_allclose(img.rgb[24, 32], np.array([0.9, 0.4, 0.1]) * alpha + (1 - alpha) * np.array(bg),
                               atol=2e-6)
    assert img.alpha[24, 32] == pytest.approx(alpha, abs=2e-6)
    assert img.alpha[0, 0] == 0 and tuple(img.rgb[0, 0]) == pytest.approx(bg)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_front_to_back_and_early_stop(backend):
    # three opaque Gaussians on the axis: after the nearest (α = 0.999) T = 1e-3; the next would
    # take T to 1e-6 ≤ 1e-4, so the pixel stops before it: only the nearest colour counts.
    scene = make_scene([[0, 0, 1.0], [0, 0, 0.0], [0, 0, -1.0]], sigma=5.0, opacity=0.99999,
                       rgb=[(0, 0, 1), (0, 1, 0), (1, 0, 0)])
    img = render(scene, CAM, backend=backend)
    np.testing.assert_allclose(img.rgb[24, 32], [0.999, 0, 0], atol=1e-5)
    assert img.alpha[24, 32] == pytest.approx(0.999, abs=1e-6)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_equal_depths_keep_index_order_and_weak_alpha_is_skipped(backend):
    scene = make_scene([[0, 0, 0], [0, 0, 0], [0, 0, -1]], sigma=0.3, opacity=[0.5, 0.5, 0.003],
                       rgb=[(1, 0, 0), (0, 1, 0), (1, 1, 1)])
    img = render(scene, CAM, backend=backend)
    px = img.rgb[24, 32]
    # index 0 first (weight ≈ 0.5), then index 1 (≈ 0.25); the nearest one has α < 1/255: skipped
    assert px[0] > 1.9 * px[1] > 0 and px[2] == 0.0


@pytest.mark.parametrize("k", [1, 2, 3])
def test_downscale_is_the_mean_of_each_block_on_every_cpu_backend(k):
    """The supersampling resolve: each output pixel the mean of its k x k block (rgb and alpha), on
    each CPU backend's own ``downscale``; a rendered view downscaled stays inside the block's range."""
    rng = np.random.default_rng(k)
    rgb = rng.random((7 * k, 5 * k, 3), dtype=np.float32)
    alpha = rng.random((7 * k, 5 * k), dtype=np.float32)
    want_rgb = rgb.astype(np.float64).reshape(7, k, 5, k, 3).mean((1, 3))
    want_alpha = alpha.astype(np.float64).reshape(7, k, 5, k).mean((1, 3))
    for backend in CPU_BACKENDS:
        from rasterizer.backends import get
        got_rgb, got_alpha = get(backend).downscale(rgb, alpha, k)
        assert got_rgb.shape == (7, 5, 3) and got_alpha.shape == (7, 5) and got_rgb.dtype == np.float32
        np.testing.assert_allclose(got_rgb, want_rgb, rtol=0, atol=2e-7)
        np.testing.assert_allclose(got_alpha, want_alpha, rtol=0, atol=2e-7)
    scene = make_scene([[0.0, 0.0, 0.0], [0.3, 0.1, 0.5]], sigma=0.3)
    big = render(scene, dataclasses_replace_size(CAM, k), backend="numpy")
    _, small_alpha = stages.downscale(big.rgb, big.alpha, k)
    assert small_alpha.max() > 0.1
    assert (small_alpha <= big.alpha.max() + 1e-7).all() and (small_alpha >= big.alpha.min() - 1e-7).all()


def dataclasses_replace_size(cam: Camera, k: int) -> Camera:
    import dataclasses
    return dataclasses.replace(cam, width=cam.width * k, height=cam.height * k, fx=cam.fx * k, fy=cam.fy * k,
                               cx=cam.cx * k, cy=cam.cy * k)
