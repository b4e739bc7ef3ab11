"""Camera conventions: nerfstudio camera paths (OpenGL) → OpenCV world-to-camera, intrinsics."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rasterizer.camera import Camera, load_camera_path, write_camera_path
from rasterizer.errors import SceneError


def _path(tmp_path, doc):
    p = tmp_path / "cams.json"
    p.write_text(json.dumps(doc))
    return p


def test_camera_path_intrinsics_and_axes(tmp_path):
    # OpenGL camera at (1, 2, 3) with identity rotation: looks down world -Z, +Y up.
    c2w = np.eye(4)
    c2w[:3, 3] = [1, 2, 3]
    doc = {"render_width": 640, "render_height": 480, "fps": 30, "seconds": 1, "camera_type": "perspective",
           "camera_path": [{"camera_to_world": c2w.ravel().tolist(), "fov": 60, "aspect": 1.33}]}
    (cam,) = load_camera_path(_path(tmp_path, doc))
    f = 0.5 * 480 / math.tan(math.radians(30))
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == pytest.approx((f, f, 320, 240))
    np.testing.assert_allclose(cam.center, [1, 2, 3])
    # a point straight ahead (world -Z) is at +z in the camera; a point above is at -y (OpenCV: y down)
    ahead = cam.world_to_camera @ [1, 2, 0, 1]
    above = cam.world_to_camera @ [1, 3, 0, 1]
    right = cam.world_to_camera @ [2, 2, 0, 1]
    assert ahead[2] == pytest.approx(3) and ahead[:2] == pytest.approx([0, 0])
    assert above[1] < 0 and right[0] > 0
    np.testing.assert_allclose(cam.camera_to_world_opengl(), c2w, atol=1e-12)


def test_look_at_and_roundtrip_through_json(tmp_path):
    cam = Camera.look_at([3, 1, -2], [0, 0.5, 0], [0, 1, 0], 47.0, 517, 389)
    p = tmp_path / "out.json"
    write_camera_path([cam], p)
    (back,) = load_camera_path(p)
    np.testing.assert_allclose(back.world_to_camera, cam.world_to_camera, atol=1e-9)
    assert back.fov_y_deg == pytest.approx(47.0)
    t = cam.world_to_camera @ [0, 0.5, 0, 1]
    assert t[0] == pytest.approx(0, abs=1e-9) and t[1] == pytest.approx(0, abs=1e-9) and t[2] > 0


@pytest.mark.parametrize("mutate, expect", [
    (lambda d: d.update(bogus=1), "unknown camera-path fields: bogus"),
    (lambda d: d["camera_path"][0].update(zoom=2), "unknown fields: zoom"),
    (lambda d: d.pop("render_width"), "render_width"),
    (lambda d: d["camera_path"][0].update(fov=0), "fov"),
    (lambda d: d["camera_path"][0].update(camera_to_world=[1, 2, 3]), "16 finite numbers"),
    (lambda d: d.update(camera_path=[]), "non-empty"),
    (lambda d: d.update(camera_type="fisheye"), "not supported"),
])
def test_bad_camera_paths(tmp_path, mutate, expect):
    doc = {"render_width": 64, "render_height": 48,
           "camera_path": [{"camera_to_world": np.eye(4).ravel().tolist(), "fov": 50, "aspect": 1}]}
    mutate(doc)
    with pytest.raises(SceneError, match=expect):
        load_camera_path(_path(tmp_path, doc))
    (tmp_path / "nojson.json").write_text("{")
    with pytest.raises(SceneError, match="nojson.json"):
        load_camera_path(tmp_path / "nojson.json")
