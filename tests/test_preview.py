"""Preview framing on the demo scene and real scenes: semantic checks that fail for real reasons."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import scene_path
from rasterizer.demo import FLOOR_HALF, SQUARE
from rasterizer.preview import orbit_cameras, preview_cameras, robust_bounds, write_previews
from rasterizer.render import render
from rasterizer.scene import Scene, load_scene


def _luma(img):
    return img.rgb @ np.array([0.299, 0.587, 0.114], np.float32)


def test_top_view_looks_down_and_shows_the_checkerboard(demo):
    cams = preview_cameras(demo, up="y", size=(640, 360))
    top = cams["top"]
    fwd = top.world_to_camera[2, :3]                         # camera +z in world coordinates
    np.testing.assert_allclose(fwd, [0, -1, 0], atol=1e-9)
    img = render(demo, top, backend="cpu")
    # project the centres of two neighbouring floor squares: one light, one dark
    sq = lambda i, j: np.array([-FLOOR_HALF + (i + 0.5) * SQUARE, 0.0, -FLOOR_HALF + (j + 0.5) * SQUARE, 1])  # noqa: E731
    lum = _luma(img)
    vals = []
    for i, j in [(2, 6), (3, 6), (4, 6), (5, 6)]:
        p = top.world_to_camera @ sq(i, j)
        u, v = top.fx * p[0] / p[2] + top.cx, top.fy * p[1] / p[2] + top.cy
        vals.append(lum[int(v), int(u)])
    light = [v > 0.6 for v in vals]
    assert light in ([True, False, True, False], [False, True, False, True]), vals
    # +X runs to the right in the top view
    a = top.world_to_camera @ [1, 0, 0, 1]
    b = top.world_to_camera @ [-1, 0, 0, 1]
    assert a[0] / a[2] > b[0] / b[2]


@pytest.mark.parametrize("view", ["top", "angle"])
def test_scene_is_centred_and_fills_a_sensible_part(demo, view):
    cam = preview_cameras(demo, size=(320, 180))[view]
    img = render(demo, cam, backend="cpu")
    cover = img.alpha > 0.5
    frac = cover.mean()
    assert 0.15 < frac < 0.9, f"{view}: scene covers {frac:.0%} of the frame"
    ys, xs = np.nonzero(cover)
    cx, cy = xs.mean() / 320, ys.mean() / 180
    assert abs(cx - 0.5) < 0.12 and abs(cy - 0.5) < 0.15, (cx, cy)
    # the frame's border rows and columns are not all covered: the scene is not cut off on all sides
    border = np.concatenate([cover[0], cover[-1], cover[:, 0], cover[:, -1]])
    assert border.mean() < 0.5


def test_angle_view_is_45_degrees_above_the_horizontal(demo):
    cam = preview_cameras(demo)["angle"]
    fwd = cam.world_to_camera[2, :3]
    elevation = np.degrees(np.arcsin(-fwd[1]))
    assert elevation == pytest.approx(45.0, abs=0.5)


def test_floaters_do_not_move_the_framing(demo):
    rng = np.random.default_rng(5)
    n = len(demo) // 100                       # 1 % far-away floaters, half of them transparent
    far = rng.uniform(-200, 200, (n, 3)).astype(np.float32)
    opac = np.where(rng.random(n) < 0.5, -6.0, 2.0).astype(np.float32)   # logits
    noisy = Scene(np.concatenate([demo.means, far]), np.concatenate([demo.scales, demo.scales[:n]]),
                  np.concatenate([demo.quats, demo.quats[:n]]), np.concatenate([demo.opacities, opac]),
                  np.concatenate([demo.sh, demo.sh[:n]]))
    b0, b1 = robust_bounds(demo), robust_bounds(noisy)
    assert np.abs(b0.center - b1.center).max() < 0.1
    assert np.abs(b0.extent - b1.extent).max() < 0.3


def test_up_axis_is_selectable():
    s = load_scene(scene_path("playcanvas-playbot-lod0-500k.ply"))   # y points down in this file
    top = preview_cameras(s, up="-y")["top"]
    np.testing.assert_allclose(top.world_to_camera[2, :3], [0, 1, 0], atol=1e-9)
    b = robust_bounds(s)
    assert top.center[1] < b.lo[1]               # above the robot, i.e. at smaller y


def test_orbit_circles_the_centre_at_constant_radius_and_elevation(demo):
    cams = orbit_cameras(demo, n_frames=12, sweep_deg=300)
    c = robust_bounds(demo).center
    r = [np.linalg.norm(cam.center - c) for cam in cams]
    el = [np.degrees(np.arcsin((cam.center - c)[1] / np.linalg.norm(cam.center - c))) for cam in cams]
    assert max(r) - min(r) < 1e-9 and el == pytest.approx([35.0] * 12)
    az = np.unwrap([np.arctan2((cam.center - c)[2], (cam.center - c)[0]) for cam in cams])
    assert np.degrees(az[-1] - az[0]) == pytest.approx(300 * 11 / 12)


def test_write_previews_jpeg_files(demo, tmp_path):
    out = write_previews(demo, tmp_path, size=(320, 180), backend="cpu")
    from PIL import Image
    for name in ("top", "angle"):
        with Image.open(out[name]) as im:
            assert im.format == "JPEG" and im.size == (320, 180)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preview_angle.jpg", "preview_top.jpg"]
