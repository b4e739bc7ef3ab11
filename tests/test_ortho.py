"""The orthographic camera (gsplat 1.4.0 ``camera_model="ortho"``) against closed forms.

An orthographic camera maps camera-space (x, y) to pixels as ``(fx x + cx, fy y + cy)`` with fx, fy
in pixels per world unit; the projection Jacobian is the constant ``[[fx, 0, 0], [0, fy, 0]]``. So a
lone isotropic Gaussian of scale s and opacity o has the 2D covariance ``(f² s² + 0.3) I`` and covers
pixel centre p with ``α = o · exp(−|p − m|² / 2 (f² s² + 0.3))`` wherever that is ≥ 1/255.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_images_agree

from rasterizer.camera import Camera
from rasterizer.render import Prepared
from rasterizer.scene import SH_C0, Scene

CPU_BACKENDS = ["numpy", "cpu"]


def _one_gaussian(pos, scale, opacity, rgb=(0.8, 0.3, 0.1)) -> Scene:
    sh = np.zeros((1, 1, 3), np.float32)
    sh[0, 0] = (np.asarray(rgb) - 0.5) / SH_C0
    return Scene(np.array([pos], np.float32), np.full((1, 3), np.log(scale), np.float32),
                 np.array([[1, 0, 0, 0]], np.float32), np.array([np.log(opacity / (1 - opacity))], np.float32), sh)


def _closed_form_alpha(cam: Camera, pos_cam, scale, opacity) -> np.ndarray:
    f = cam.fx
    mx, my = f * pos_cam[0] + cam.cx, f * pos_cam[1] + cam.cy
    var = f * f * scale * scale + 0.3
    jj, ii = np.meshgrid(np.arange(cam.width) + 0.5, np.arange(cam.height) + 0.5)
    alpha = np.minimum(0.999, opacity * np.exp(-((jj - mx) ** 2 + (ii - my) ** 2) / (2 * var)))
    return np.where(alpha >= 1 / 255, alpha, 0.0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("pos, scale", [((0.3, -0.2, 5.0), 0.05), ((-1.1, 0.45, 0.5), 0.02), ((0.0, 0.0, 80.0), 0.3)])
def test_lone_gaussian_matches_the_closed_form(backend, pos, scale):
    # identity pose: camera space is world space; 40 px per unit on a 123x97 image (odd: partial tiles)
    cam = Camera.orthographic(np.eye(4), 97 / 40.0, 123, 97)
    assert cam.fx == pytest.approx(40.0)
    opacity = 0.3            # below e^4.5 / 255: alpha < 1/255 beyond the 3-sigma radius, as the tiles assume
    img = Prepared(_one_gaussian(pos, scale, opacity), backend).render(cam)
    expected = _closed_form_alpha(cam, pos, scale, opacity)
    assert expected.max() > 0.2
    np.testing.assert_allclose(img.alpha, expected, atol=2e-6)
    np.testing.assert_allclose(img.rgb, expected[..., None] * np.array([0.8, 0.3, 0.1]), atol=2e-6)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_image_does_not_change_along_the_view_axis_but_culls_behind_the_near_plane(backend, demo):
    # SH degree 0: with bands 1-3 the colour follows the direction from the camera centre (as in gsplat)
    flat = Scene(demo.means, demo.scales, demo.quats, demo.opacities, demo.sh[:, :1].copy())
    size = (160, 96)
    prepared = Prepared(flat, backend)
    down = [0.0, 0.0, -1.0]
    near = prepared.render(Camera.ortho_look_at([0.2, 4.0, 0.1], [0.2, 0.0, 0.1], down, 5.0, *size))
    far = prepared.render(Camera.ortho_look_at([0.2, 40.0, 0.1], [0.2, 0.0, 0.1], down, 5.0, *size))
    assert_images_agree(near, far, min_psnr=60.0, what="ortho camera moved along its axis")
    assert near.alpha.mean() > 0.3
    # the same camera at floor level sees only what is above the floor... from below: nothing of
    # what lies behind it, i.e. everything above y = 0.3 is culled by the near plane
    low = prepared.render(Camera.ortho_look_at([0.2, 0.3, 0.1], [0.2, -1.0, 0.1], down, 5.0, *size))
    assert low.alpha.mean() < near.alpha.mean()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_scale_is_pixels_per_world_unit(backend):
    # two Gaussians 1 world unit apart appear fx pixels apart, whatever the distance to the camera
    sc = Scene(np.array([[-0.49, 0, 3], [0.51, 0, 30]], np.float32), np.full((2, 3), np.log(0.01), np.float32),
               np.tile(np.array([[1, 0, 0, 0]], np.float32), (2, 1)), np.full(2, 3.0, np.float32),
               np.zeros((2, 1, 3), np.float32))
    cam = Camera.orthographic(np.eye(4), 64 / 50.0, 128, 64)
    img = Prepared(sc, backend).render(cam)
    row = img.alpha[32]
    peaks = np.flatnonzero((row[1:-1] > row[:-2]) & (row[1:-1] >= row[2:])) + 1
    assert list(peaks) == [39, 89]   # means at 64 - 24.5 and 64 + 25.5 px: the centres of pixels 39 and 89
