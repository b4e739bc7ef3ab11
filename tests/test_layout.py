"""The layout analysis (floor, ceiling, class) on procedural scans and on the real scenes."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import rooms
from conftest import scene_path

from bench.scenes import REAL_SCENES
from rasterizer.demo import CEILING, FURNITURE
from rasterizer.layout import GROUND, INDOOR, OBJECT, analyse_layout, footprint_area, horizontal_axes
from rasterizer.preview import parse_cut, parse_up
from rasterizer.scene import Scene, load_scene
from rasterizer.stages import quat_to_rotmat

Y = np.array([0.0, 1.0, 0.0])
CABINET_TOP = FURNITURE["cabinet"][1][1]


def assert_room(lay, floor=0.0, ceiling=2.7, lowest_ceiling=None):
    """Indoor, floor and ceiling where they are, and a cut below every ceiling but above the furniture."""
    assert lay.kind == INDOOR, lay.describe()
    if floor is None:
        assert lay.floor is None, lay.describe()
    else:
        assert lay.floor == pytest.approx(floor, abs=0.05), lay.describe()
    assert lay.ceiling == pytest.approx(ceiling, abs=0.1), lay.describe()
    low = lowest_ceiling or ceiling
    assert 2.0 < lay.auto_cut < low - 0.02, (lay.auto_cut, lay.describe())


def test_demo_room_is_indoor_with_the_cut_between_the_cabinet_and_the_ceiling(demo):
    lay = analyse_layout(demo, Y)
    assert_room(lay, ceiling=CEILING)
    assert CABINET_TOP + 0.1 < lay.auto_cut < CEILING - 0.03
    assert lay.floor_tilt_deg < 0.5 and lay.floor_share > 0.8 and lay.ceiling_share > 0.8


def test_furnished_room():
    assert_room(analyse_layout(rooms.furnished_room().scene(), Y))


@pytest.mark.parametrize("share", [0.6, 0.3])
def test_partial_ceiling(share):
    """Only part of the ceiling was captured: still indoor, and the cut is below the part there is
    (not below the cabinet top, which is the highest thing where the ceiling is missing)."""
    lay = analyse_layout(rooms.furnished_room(ceiling=share).scene(), Y)
    assert_room(lay)
    assert lay.ceiling_share < 0.8


def test_several_rooms_with_different_ceiling_heights():
    """An L-shaped flat: rooms at 2.6 m, a hall at 3.0 m: the cut goes below the lower ceilings."""
    lay = analyse_layout(rooms.flat().scene(), Y)
    assert_room(lay, ceiling=2.6, lowest_ceiling=2.6)
    assert lay.ceiling_share > 0.8


def test_sloped_floor():
    """A floor rising 4° along x under a level ceiling: a tilted floor plane, still a room."""
    b = rooms.Builder(5)
    b.room(-3, -2, 3, 2, floor=False)
    rooms.furnish(b, -3, -2, 3, 2)
    b.patch((-3, 0, -2), (6, 6 * math.tan(math.radians(4)), 0), (0, 0, 4), (0.6, 0.5, 0.4), thickness=0.015)
    lay = analyse_layout(b.scene(), Y)
    assert_room(lay, floor=3 * math.tan(math.radians(4)))   # the floor's height at its centre
    assert lay.floor_tilt_deg == pytest.approx(4.0, abs=0.5)


def test_scan_tilted_off_the_vertical():
    """The whole capture 3° off the up axis (a slightly wrong domain frame)."""
    lay = analyse_layout(rooms.furnished_room().scene(rotate=rooms.rotation((1, 0, 0.3), 3)), Y)
    assert lay.kind == INDOOR and lay.floor_tilt_deg == pytest.approx(3.0, abs=0.5)
    assert 2.0 < lay.auto_cut < 2.7 - 0.16      # below the ceiling's lowest edge (3° over 6 m: ±0.16)


def test_room_without_a_floor_still_loses_its_ceiling():
    """A floor that was not captured (glass, black): the ceiling is found from the lowest content."""
    assert_room(analyse_layout(rooms.furnished_room(floor=False).scene(), Y), floor=None)


def test_open_ground_has_a_floor_and_no_ceiling():
    """A courtyard with a tree, a car, a bench and a small roofed shelter: no cut."""
    lay = analyse_layout(rooms.open_ground().scene(), Y)
    assert lay.kind == GROUND, lay.describe()
    assert lay.floor == pytest.approx(0.0, abs=0.05) and lay.ceiling is None and lay.auto_cut is None


def test_a_building_seen_from_outside_keeps_its_roof():
    """A roof over no captured inside is not a ceiling: the ceiling must cover the floor's footprint."""
    lay = analyse_layout(rooms.house_from_outside().scene(), Y)
    assert lay.kind == GROUND and lay.auto_cut is None, lay.describe()


def test_a_cloud_of_blobs_has_no_ceiling():
    """The top of a cloud (a crown of leaves, floaters) is not a surface: no ceiling, no floor."""
    lay = analyse_layout(rooms.blob_cloud(), Y)
    assert lay.kind == OBJECT, lay.describe()


def test_lone_object_has_neither():
    lay = analyse_layout(rooms.lone_object().scene(), Y)
    assert lay.kind == OBJECT and lay.floor is None and lay.auto_cut is None, lay.describe()


def test_units_do_not_matter_above_the_minimum_clearance():
    """The same room in centimetres: the same analysis, heights x 100."""
    lay = analyse_layout(rooms.furnished_room().scene(scale=100.0), Y)
    assert lay.kind == INDOOR
    assert lay.floor == pytest.approx(0.0, abs=5.0) and lay.ceiling == pytest.approx(270.0, abs=10.0)
    assert 200.0 < lay.auto_cut < 268.0


@pytest.mark.parametrize("turn, up", [(rooms.rotation((1, 0, 0), 90), "z"),
                                      (rooms.rotation((1, 0, 0), 180), "-y"),
                                      (rooms.rotation((0.3, 0.2, 1.0), 25), None)])
def test_any_up_axis(turn, up):
    """The room turned so that up is +Z, -Y or an arbitrary vector: the same heights along it."""
    upv = parse_up(up) if up else turn @ Y
    lay = analyse_layout(rooms.furnished_room().scene(rotate=turn), upv)
    assert_room(lay)


def test_floaters_do_not_move_the_floor_or_the_ceiling(demo):
    rng = np.random.default_rng(7)
    n = len(demo) // 20                       # 5 % floaters in a box twice the room's size, a third opaque
    far = rng.uniform([-6, -2, -4], [6, 5, 4], (n, 3)).astype(np.float32)
    op = np.where(rng.random(n) < 0.33, 1.0, -3.0).astype(np.float32)
    noisy = Scene(np.concatenate([demo.means, far]), np.concatenate([demo.scales, demo.scales[:n]]),
                  np.concatenate([demo.quats, demo.quats[:n]]), np.concatenate([demo.opacities, op]),
                  np.concatenate([demo.sh, demo.sh[:n]]))
    a, b = analyse_layout(demo, Y), analyse_layout(noisy, Y)
    assert b.kind == INDOOR
    assert abs(a.floor - b.floor) < 0.03 and abs(a.ceiling - b.ceiling) < 0.05 and abs(a.auto_cut - b.auto_cut) < 0.1
    # the floaters are not content (what the framing uses)
    assert np.isin(np.arange(len(demo), len(noisy)), b.content).mean() < 0.05


def _with(scene: Scene, extra: Scene) -> Scene:
    """``scene`` and ``extra`` in one, ``extra``'s SH padded with zeros to ``scene``'s degree."""
    sh = np.zeros((len(extra), scene.sh.shape[1], 3), np.float32)
    sh[:, :extra.sh.shape[1]] = extra.sh
    return Scene(*(np.concatenate([getattr(scene, k), getattr(extra, k)]) for k in ("means", "scales", "quats",
                                                                                  "opacities")),
                 np.concatenate([scene.sh, sh]))


@pytest.mark.parametrize("where", ["window", "shell"])
def test_background_outside_the_room_keeps_it_a_room(demo, where):
    """What a trainer leaves of the world outside an indoor capture: big round Gaussians behind a wall
    (the garden seen through a window) or all around (sky). Few, but each alone covers a grid cell,
    and thousands of such cells made the floor a minority of the footprint: the room lost its cut."""
    b = rooms.Builder(5)
    if where == "window":       # 2000 blobs of sigma 0.3 m, 6-20 m behind the back wall (4 % of the scene)
        b.blobs(b.rng.uniform([-12, -1, -22], [12, 8, -8], (2000, 3)), (0.4, 0.6, 0.3), 0.3, 0.7)
    else:                       # 3000 blobs of sigma 0.6 m on a shell 15-25 m away
        v = b.rng.normal(size=(3000, 3))
        v *= b.rng.uniform(15, 25, (3000, 1)) / np.linalg.norm(v, axis=1, keepdims=True)
        b.blobs(v + [0, 1.3, 0], (0.6, 0.65, 0.7), 0.6, 0.8)
    lay = analyse_layout(_with(demo, b.scene()), Y)
    assert_room(lay, ceiling=CEILING)
    assert CABINET_TOP + 0.1 < lay.auto_cut


@pytest.mark.parametrize("name", list(REAL_SCENES))
def test_real_scenes_are_not_cut(name):
    """The real scenes are objects or open ground: none of them is indoor."""
    lay = analyse_layout(load_scene(scene_path(name)), parse_up(REAL_SCENES[name]))
    assert lay.kind != INDOOR and lay.auto_cut is None, lay.describe()


def test_playbot_stands_on_open_ground():
    lay = analyse_layout(load_scene(scene_path("playcanvas-playbot-lod0-500k.ply")), parse_up("-y"))
    assert lay.kind == GROUND and lay.floor_share > 0.8, lay.describe()
    assert -lay.floor == pytest.approx(0.0, abs=0.03)       # the ground patch is at y ≈ 0 (y points down)


def test_footprint_area_is_the_projected_ellipse():
    """2π √det of the covariance projected on the horizontal plane, for random Gaussians and up vectors."""
    rng = np.random.default_rng(3)
    n = 500
    s = Scene(rng.normal(size=(n, 3)).astype(np.float32), rng.normal(-3, 1, (n, 3)).astype(np.float32),
              rng.normal(size=(n, 4)).astype(np.float32), np.zeros(n, np.float32), np.zeros((n, 1, 3), np.float32))
    for up in (Y, parse_up("0.3,0.9,-0.2")):
        q = s.quats / np.linalg.norm(s.quats, axis=1, keepdims=True)
        r = quat_to_rotmat(q.astype(np.float32)).astype(np.float64)
        cov = r @ (np.exp(2 * s.scales.astype(np.float64))[:, :, None] * np.eye(3)) @ r.transpose(0, 2, 1)
        p = np.stack(horizontal_axes(up))
        expected = 2 * np.pi * np.sqrt(np.linalg.det(p @ cov @ p.T))
        np.testing.assert_allclose(footprint_area(s, up), expected, rtol=1e-4)


def test_horizontal_axes_are_orthonormal_and_follow_the_world_axes():
    e1, e2 = horizontal_axes(Y)
    np.testing.assert_allclose([e1, e2], [[1, 0, 0], [0, 0, 1]], atol=1e-12)
    up = parse_up("0.1,0.99,0")
    e1, e2 = horizontal_axes(up)
    np.testing.assert_allclose(np.array([e1, e2, up]) @ np.array([e1, e2, up]).T, np.eye(3), atol=1e-12)
    assert e1[0] > 0.99 and e2[2] > 0.99


@pytest.mark.parametrize("text, expected", [("y", [0, 1, 0]), ("-y", [0, -1, 0]), ("+Z", [0, 0, 1]),
                                            (" x ", [1, 0, 0]), ("0,1,0", [0, 1, 0]), ("0,0,-2", [0, 0, -1])])
def test_parse_up(text, expected):
    np.testing.assert_allclose(parse_up(text), expected)


def test_parse_up_normalises_vectors():
    v = parse_up("0.1,0.99,0")
    assert np.linalg.norm(v) == pytest.approx(1.0) and v[1] / v[0] == pytest.approx(9.9)


@pytest.mark.parametrize("text", ["w", "0,0,0", "1,nan,0", "1,inf,0", "1,2", "1,2,3,4", "up", ""])
def test_parse_up_rejects_with_one_line(text):
    with pytest.raises(ValueError) as e:
        parse_up(text)
    assert "\n" not in str(e.value) and repr(text) in str(e.value)


@pytest.mark.parametrize("text, expected", [("auto", "auto"), ("NONE", "none"), ("1.5", 1.5), (2, 2.0)])
def test_parse_cut(text, expected):
    assert parse_cut(text) == expected


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "high", ""])
def test_parse_cut_rejects_with_one_line(text):
    with pytest.raises(ValueError) as e:
        parse_cut(text)
    assert "\n" not in str(e.value)


def _with_rows(scene: Scene, means: np.ndarray, log_scale: float) -> Scene:
    """``scene`` plus opaque, isotropic Gaussians at ``means`` with the given log-scale."""
    n = len(means)
    sh = np.zeros((n,) + scene.sh.shape[1:], np.float32)
    return Scene(np.concatenate([scene.means, means.astype(np.float32)]),
                 np.concatenate([scene.scales, np.full((n, 3), log_scale, np.float32)]),
                 np.concatenate([scene.quats, np.tile(np.float32([1, 0, 0, 0]), (n, 1))]),
                 np.concatenate([scene.opacities, np.full(n, 3.0, np.float32)]),
                 np.concatenate([scene.sh, sh]))


@pytest.mark.parametrize("spread, log_scale", [(3e38, -3.0), (1.0, 80.0), (1.0, -80.0), (1e-30, -3.0)])
def test_absurd_finite_scenes_are_objects_without_warnings(spread, log_scale):
    """Finite values near float32's limits overflow on the way (positions ~3e38 give an infinite
    extent, log-scales of +-80 infinite footprints): an object, no exception, no RuntimeWarning."""
    rng = np.random.default_rng(3)
    empty = Scene(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32), np.zeros((0, 4), np.float32),
                  np.zeros(0, np.float32), np.zeros((0, 1, 3), np.float32))
    scene = _with_rows(empty, rng.uniform(-1, 1, (4000, 3)) * spread, log_scale)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lay = analyse_layout(scene, Y)
    assert lay.kind == OBJECT and lay.floor is None and lay.ceiling is None


def test_a_few_absurd_outliers_leave_a_room_as_it_is():
    """0.3 % of Gaussians at +-3e38 (finite, garbage) change neither the class nor the floor and ceiling."""
    room = rooms.furnished_room().scene()
    rng = np.random.default_rng(4)
    outliers = rng.choice([-3e38, 3e38], (max(3, len(room) * 3 // 1000), 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lay = analyse_layout(_with_rows(room, outliers, -3.0), Y)
    assert_room(lay)
