"""The previews: what they show on the demo room, how they frame real scenes, the cut, the overlay,
the orbit, the files. Checks look at rendered pixels, so they fail when the pictures are wrong."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import rooms
from conftest import REPO, scene_path
from PIL import Image

from bench.scenes import REAL_SCENES
from rasterizer.demo import CEILING_COLOR, DARK, FURNITURE, LIGHT, ROOM_X, ROOM_Z, SQUARE
from rasterizer.imageio import to_uint8
from rasterizer.preview import ELEVATION_DEG, PreviewError, plan_previews, preview_cameras, write_previews
from rasterizer.render import Prepared, render
from rasterizer.scene import Scene, load_scene

SMALL = (320, 180)


@pytest.fixture(scope="module")
def demo_plan(demo):
    return plan_previews(demo, size=(640, 360))


@pytest.fixture(scope="module")
def demo_views(demo_plan):
    p = Prepared(demo_plan.scene, "cpu")
    return {v: p.render(c) for v, c in demo_plan.cameras.items()}


def pixel_of(cam, point):
    """Pixel (column, row) of a world point."""
    t = cam.world_to_camera[:3, :3] @ np.asarray(point, float) + cam.world_to_camera[:3, 3]
    if cam.is_ortho:
        return int(cam.fx * t[0] + cam.cx), int(cam.fy * t[1] + cam.cy)
    return int(cam.fx * t[0] / t[2] + cam.cx), int(cam.fy * t[1] / t[2] + cam.cy)


def near(rgb, color, tol):
    return np.abs(rgb - np.asarray(color, np.float32)).max(-1) <= tol


def framing(img):
    """(fill, border): the robust extent of the covered pixels (alpha ≥ 0.5, 0.2-99.8 percentile)
    over the limiting image dimension, and the share of border pixels covered."""
    a = img.alpha >= 0.5
    h, w = a.shape
    ys, xs = np.nonzero(a)
    x0, x1 = np.percentile(xs, [0.2, 99.8])
    y0, y1 = np.percentile(ys, [0.2, 99.8])
    fill = max((x1 - x0 + 1) / w, (y1 - y0 + 1) / h)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]).mean()
    return fill, border


# --------------------------------------------------------------------------- the demo room

def test_top_view_is_a_floor_plan_looking_straight_down(demo_plan):
    top = demo_plan.cameras["top"]
    assert top.is_ortho
    np.testing.assert_allclose(top.world_to_camera[2, :3], [0, -1, 0], atol=1e-9)   # looks along -up
    # +X to the right, -Z up in the image
    (xa, ya), (xb, yb) = pixel_of(top, [1, 0, 0]), pixel_of(top, [-1, 0, 0])
    assert xa > xb and ya == yb
    (xa, ya), (xb, yb) = pixel_of(top, [0, 0, -1]), pixel_of(top, [0, 0, 1])
    assert ya < yb and xa == xb


def test_top_view_shows_the_floor_and_every_piece_of_furniture_and_not_the_ceiling(demo_plan, demo_views):
    top, rgb = demo_plan.cameras["top"], demo_views["top"].rgb
    # the checkerboard: light and dark squares alternate along a row of square centres
    centre = lambda i, j: [-ROOM_X + (i + 0.5) * SQUARE, 0.0, -ROOM_Z + (j + 0.5) * SQUARE]  # noqa: E731
    for j in (3, 5):
        cols = [rgb[pixel_of(top, centre(i, j))[::-1]] for i in range(4, 9)]
        light = [bool(near(c, LIGHT, 0.12)) for c in cols]
        dark = [bool(near(c, DARK, 0.12)) for c in cols]
        assert all(a != b for a, b in zip(light, dark)), cols
        assert light in ([True, False, True, False, True], [False, True, False, True, False]), cols
    # every piece of furniture, seen from above at the centre of its top: its colour is the closest
    # of the scene's (the glossy ones are brighter from above: SH)
    palette = {name: c for name, (_, _, c) in FURNITURE.items()} | {"light floor": LIGHT, "dark floor": DARK,
                                                                      "ceiling": CEILING_COLOR}
    for name, (lo, hi, _color) in FURNITURE.items():
        u, v = pixel_of(top, [(lo[0] + hi[0]) / 2, hi[1], (lo[2] + hi[2]) / 2])
        seen = np.median(rgb[v - 2:v + 3, u - 2:u + 3].reshape(-1, 3), 0)
        closest = min(palette, key=lambda k: np.linalg.norm(seen - palette[k]))
        assert closest == name, f"{name}: {seen} looks like {closest}"
    # and no ceiling
    assert near(rgb, CEILING_COLOR, 0.06).mean() < 0.005


def test_without_the_cut_the_top_view_is_the_ceiling(demo):
    """The control: the same checks fail on the uncut scene, so they test the cut."""
    plan = plan_previews(demo, size=SMALL, cut="none")
    assert plan.cut_height is None and len(plan.scene) == len(demo)
    rgb = render(plan.scene, plan.cameras["top"], backend="cpu").rgb
    assert near(rgb, CEILING_COLOR, 0.06).mean() > 0.5


def test_angle_view_looks_into_the_room_and_shows_the_floor(demo_plan, demo_views, demo):
    cam = demo_plan.cameras["angle"]
    fwd = cam.world_to_camera[2, :3]
    assert math.degrees(math.asin(-fwd[1])) == pytest.approx(ELEVATION_DEG, abs=1e-6)
    rgb = demo_views["angle"].rgb
    floor = near(rgb, LIGHT, 0.1) | near(rgb, DARK, 0.1)
    assert floor.mean() > 0.03, floor.mean()        # a sixth of the room's picture (which is a third of the frame)
    # the control: without the cut a closed box (but for a glimpse through the door)
    closed = render(demo, cam, backend="cpu").rgb
    assert (near(closed, LIGHT, 0.1) | near(closed, DARK, 0.1)).mean() < floor.mean() / 3


@pytest.mark.parametrize("view", ["top", "angle"])
def test_demo_content_fills_the_frame_and_is_not_cut_off(demo_plan, demo_views, view):
    fill, border = framing(demo_views[view])
    assert fill >= (0.85 if view == "top" else 0.75), fill
    assert border < 0.02, border
    # the room's floor corners are inside the frame
    cam = demo_plan.cameras[view]
    for x in (-ROOM_X, ROOM_X):
        for z in (-ROOM_Z, ROOM_Z):
            u, v = pixel_of(cam, [x, 0.0, z])
            assert 0 < u < cam.width - 1 and 0 < v < cam.height - 1


def test_the_plan_is_deterministic(demo, demo_plan):
    again = plan_previews(demo, size=(640, 360))
    for v in ("top", "angle"):
        np.testing.assert_array_equal(again.cameras[v].world_to_camera, demo_plan.cameras[v].world_to_camera)
    assert again.cut_height == demo_plan.cut_height


def test_floaters_do_not_move_the_framing(demo):
    rng = np.random.default_rng(5)
    n = len(demo) // 100                       # 1 % far-away floaters, half of them transparent
    far = rng.uniform(-50, 50, (n, 3)).astype(np.float32)
    opac = np.where(rng.random(n) < 0.5, -6.0, 2.0).astype(np.float32)
    noisy = Scene(np.concatenate([demo.means, far]), np.concatenate([demo.scales, demo.scales[:n]]),
                  np.concatenate([demo.quats, demo.quats[:n]]), np.concatenate([demo.opacities, opac]),
                  np.concatenate([demo.sh, demo.sh[:n]]))
    a, b = preview_cameras(demo, size=SMALL), preview_cameras(noisy, size=SMALL)
    assert b["top"].view_height == pytest.approx(a["top"].view_height, rel=0.03)
    assert np.abs(b["top"].center[[0, 2]] - a["top"].center[[0, 2]]).max() < 0.1
    assert np.abs(b["angle"].center - a["angle"].center).max() < 0.3


# --------------------------------------------------------------------------- the cut

@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("cut", ["auto", 1.0])
def test_the_cut_is_a_filter_of_gaussians(demo, tmp_path, backend, cut):
    """The written previews equal renders of the scene without the Gaussians above the cut height."""
    plan = plan_previews(demo, size=(160, 90), cut=cut)
    height = demo.means @ np.float32([0, 1, 0])
    expected_cut = plan.layout.auto_cut if cut == "auto" else plan.layout.floor + cut
    assert plan.cut_height == pytest.approx(expected_cut)
    filtered = demo.subset(height <= plan.cut_height)
    assert 0 < len(filtered) < len(demo) and len(plan.scene) == len(filtered)
    paths = write_previews(plan, tmp_path, backend=backend, fmt="png", overlay=False, aa=1)
    for view, path in paths.items():
        expected = to_uint8(render(filtered, plan.cameras[view], background=(0.1490, 0.1647, 0.2157),
                                   backend=backend).rgb)
        np.testing.assert_array_equal(np.asarray(Image.open(path)), expected, err_msg=view)


# --------------------------------------------------------------------------- the overlay

def test_scale_bar_length_is_its_label_times_the_orthographic_scale(demo, tmp_path):
    plan = plan_previews(demo, size=(960, 540))
    path = write_previews(plan, tmp_path, backend="cpu", fmt="png", views=("top",), aa=1)["top"]
    px = np.asarray(Image.open(path)).astype(int)
    white = (px == 255).all(-1)
    # the bar: the longest run of pure white pixels in a row of the bottom-left quarter
    best = (0, 0, 0)
    for row in range(px.shape[0] // 2, px.shape[0]):
        r = np.concatenate([[0], white[row, : px.shape[1] // 2].astype(int), [0]])
        edges = np.flatnonzero(np.diff(r))
        for a, b in zip(edges[::2], edges[1::2]):
            best = max(best, (b - a, row, a))
    length_px = best[0]
    # its label, read back from the overlay module's rule, is a round length in metres
    from rasterizer.overlay import round_length
    label_m = round_length(0.2 * 960 / plan.cameras["top"].fx)
    assert label_m in (0.5, 1.0, 2.0)                       # the room is 6 m wide: a 1 or 2 m bar
    assert length_px == round(label_m * plan.cameras["top"].fx)
    assert 0.1 < length_px / 960 < 0.35                      # about a fifth of the width


def test_overlay_is_only_on_the_top_view_and_can_be_left_out(demo, tmp_path):
    plan = plan_previews(demo, size=SMALL)
    with_ = write_previews(plan, tmp_path / "a", backend="cpu", fmt="png", aa=1)
    without = write_previews(plan, tmp_path / "b", backend="cpu", fmt="png", aa=1, overlay=False)
    top_a, top_b = (np.asarray(Image.open(p["top"])) for p in (with_, without))
    differ = (top_a != top_b).any(-1)
    h, w = differ.shape
    assert differ.any() and not differ[: h // 2].any()              # only the bottom: bar and marker
    assert differ[:, : w // 2].any() and differ[:, w // 2:].any()   # bottom left and bottom right
    np.testing.assert_array_equal(np.asarray(Image.open(with_["angle"])), np.asarray(Image.open(without["angle"])))


# --------------------------------------------------------------------------- real scenes

@pytest.mark.parametrize("name", ["v3dg-donut-fused.ply", "aframe-gs-luma-seal.splat",
                                  "playcanvas-playbot-lod0-500k.ply"])
def test_real_objects_are_not_cut_and_fill_the_frame(name):
    scene = load_scene(scene_path(name))
    plan = plan_previews(scene, up=REAL_SCENES[name], size=SMALL)
    assert plan.cut_height is None and plan.scene is scene
    prepared = Prepared(scene, "cpu")
    for view, need in (("top", 0.85), ("angle", 0.75)):
        fill, border = framing(prepared.render(plan.cameras[view]))
        assert fill >= need, f"{view}: content spans {fill:.0%} of the limiting dimension"
        assert border < 0.01, f"{view}: {border:.1%} of the border is covered (cut off)"


def test_up_axis_is_selectable():
    s = load_scene(scene_path("playcanvas-playbot-lod0-500k.ply"))   # y points down in this file
    cams = preview_cameras(s, up="-y", size=SMALL)
    np.testing.assert_allclose(cams["top"].world_to_camera[2, :3], [0, 1, 0], atol=1e-9)
    assert cams["angle"].center[1] < -0.5                       # above the robot, i.e. at smaller y
    again = preview_cameras(s, up="0,-1,0", size=SMALL)
    np.testing.assert_array_equal(again["angle"].world_to_camera, cams["angle"].world_to_camera)


def test_several_rooms_get_a_floor_plan_with_every_room(tmp_path):
    """The L-shaped flat: the top view shows floor in every room (no ceiling left anywhere)."""
    scene = rooms.flat().scene()
    plan = plan_previews(scene, size=SMALL)
    rgb = render(plan.scene, plan.cameras["top"], backend="cpu").rgb
    floor = (0.6, 0.5, 0.4)
    for x, z in ((1.5, 2.0), (3.2, 6.0), (5.0, 6.0), (2.0, 9.5)):     # living, bedroom, hall, kitchen
        u, v = pixel_of(plan.cameras["top"], [x, 0.0, z])
        assert near(rgb[v, u], floor, 0.12), (x, z, rgb[v, u])


# --------------------------------------------------------------------------- orbit and files

def test_orbit_keeps_the_angle_views_cut_and_framing(demo_plan):
    cams = demo_plan.orbit_cameras(n_frames=12, size=SMALL, sweep_deg=300)
    centre = (demo_plan.content.points.min(0) + demo_plan.content.points.max(0)) / 2
    rel = [c.center - centre for c in cams]
    r = [np.linalg.norm(d) for d in rel]
    el = [math.degrees(math.asin(d[1] / np.linalg.norm(d))) for d in rel]
    assert max(r) - min(r) < 1e-9 and el == pytest.approx([ELEVATION_DEG] * 12)
    az = np.unwrap([math.atan2(d[2], d[0]) for d in rel])
    assert math.degrees(az[-1] - az[0]) == pytest.approx(300 * 11 / 12)
    horiz = rel[0] - rel[0][1] * np.array([0, 1, 0])
    np.testing.assert_allclose(horiz / np.linalg.norm(horiz), demo_plan.azimuth, atol=1e-9)   # the ¾ view's corner
    for cam in cams:                                                   # the content stays in every frame
        t = demo_plan.content.points @ cam.world_to_camera[:3, :3].T + cam.world_to_camera[:3, 3]
        u, v = cam.fx * t[:, 0] / t[:, 2] + cam.cx, cam.fy * t[:, 1] / t[:, 2] + cam.cy
        assert (t[:, 2] > 0).all() and (u > 0).all() and (u < cam.width).all()
        assert (v > 0).all() and (v < cam.height).all()


def test_write_previews_jpeg_files(demo_plan, tmp_path):
    out = write_previews(demo_plan, tmp_path, backend="cpu")
    for name in ("top", "angle"):
        with Image.open(out[name]) as im:
            assert im.format == "JPEG" and im.size == (640, 360)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preview_angle.jpg", "preview_top.jpg"]


def test_a_failing_view_does_not_cost_the_other(demo_plan, tmp_path):
    (tmp_path / "preview_top.jpg").mkdir()                 # the top view cannot be written
    with pytest.raises(PreviewError) as e:
        write_previews(demo_plan, tmp_path, backend="cpu", aa=1)
    assert list(e.value.failures) == ["top"] and list(e.value.written) == ["angle"]
    assert (tmp_path / "preview_angle.jpg").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preview_angle.jpg", "preview_top.jpg"]   # no temp files


def test_prepared_must_hold_the_scene_after_the_cut(demo, demo_plan, tmp_path):
    with pytest.raises(ValueError, match="after the cut"):
        write_previews(demo_plan, tmp_path, prepared=Prepared(demo, "cpu"))


def test_anti_aliasing_renders_larger_and_filters_down(demo_plan, tmp_path):
    one = write_previews(demo_plan, tmp_path / "1", backend="cpu", fmt="png", aa=1, views=("angle",))
    two = write_previews(demo_plan, tmp_path / "2", backend="cpu", fmt="png", aa=2, views=("angle",))
    a, b = (np.asarray(Image.open(p["angle"])).astype(float) for p in (one, two))
    assert a.shape == b.shape == (360, 640, 3)
    diff = np.abs(a - b)
    assert diff.mean() < 3.0 and diff.max() > 40             # the same picture, but edges differ


# --------------------------------------------------------------------------- the CLI

def cli(*args):
    return subprocess.run([sys.executable, "-m", "rasterizer", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


def test_cli_preview_options(tmp_path):
    r = cli("preview", "--out", tmp_path, "--size", "320x180", "--backend", "cpu", "--cut", "1.2", "--no-overlay",
            "--aa", "1")
    assert r.returncode == 0, r.stderr
    assert "layout: indoor" in r.stderr and "cut 1.2 above the floor" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preview_angle.jpg", "preview_top.jpg"]


@pytest.mark.parametrize("args, needle", [(["--cut", "high"], "--cut"), (["--cut", "-1"], "--cut"),
                                          (["--up", "0,0,0"], "--up"), (["--aa", "9"], "--aa")])
def test_cli_preview_bad_options_are_one_line(tmp_path, args, needle):
    r = cli("preview", "--out", tmp_path / "o", "--backend", "cpu", *args)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_cli_info_prints_the_layout(tmp_path):
    from rasterizer.demo import demo_scene
    from rasterizer.scene import save_ply
    path = save_ply(demo_scene(), tmp_path / "room.ply")
    r = cli("info", path)
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(":", 1) for line in r.stdout.splitlines())
    assert lines["class"].split()[0] == "indoor"
    assert abs(float(lines["floor"].split()[0])) < 0.05 and abs(float(lines["ceiling"].split()[0]) - 2.7) < 0.1
    assert 2.0 < float(lines["auto cut"].split()[0]) < 2.7


def test_the_default_anti_aliasing_stays_within_the_pixel_budget():
    """The render is ``aa`` times the size: the default factor shrinks to what the budget holds, an
    explicit one beyond it is refused before anything is rendered."""
    from rasterizer.camera import MAX_PIXELS
    from rasterizer.preview import aa_problem, max_aa
    assert max_aa(1280, 720) == 4 and max_aa(4096, 4096) == 2 and max_aa(8192, 8192) == 1
    for w, h in ((1280, 720), (3000, 2000), (8192, 8192), (5000, 3000)):
        a = max_aa(w, h)
        assert w * h * a * a <= MAX_PIXELS and (a == 4 or w * h * (a + 1) ** 2 > MAX_PIXELS or a == 1)
        assert aa_problem(w, h, a) is None
        if a < 4:
            assert "more than the renderer's" in aa_problem(w, h, a + 1)
