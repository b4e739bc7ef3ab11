"""Camera conventions: nerfstudio camera paths (OpenGL) → OpenCV world-to-camera, intrinsics."""
from __future__ import annotations

import json
import math
import os

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


def test_orthographic_path_roundtrip_and_intrinsics(tmp_path):
    cams = [Camera.ortho_look_at([0, 5, 0], [0, 0, 0], [0, 0, -1], 3.5, 160, 90),
            Camera.ortho_look_at([1, 4, 2], [0, 0, 0], [0, 1, 0], 7.25, 160, 90)]
    p = write_camera_path(cams, tmp_path / "ortho.json")
    doc = json.loads(p.read_text())
    assert doc["camera_type"] == "orthographic"
    assert [e["ortho_height"] for e in doc["camera_path"]] == pytest.approx([3.5, 7.25])
    assert all("fov" not in e for e in doc["camera_path"])
    back = load_camera_path(p)
    for a, b in zip(cams, back):
        assert b.is_ortho and (b.width, b.height, b.cx, b.cy) == (160, 90, 80, 45)
        assert b.fx == pytest.approx(a.fx, rel=1e-12) and b.fy == b.fx
        np.testing.assert_allclose(b.world_to_camera, a.world_to_camera, atol=1e-12)
    assert back[0].fx == pytest.approx(90 / 3.5)   # fx = render_height / ortho_height


def test_write_refuses_what_a_camera_path_cannot_hold(tmp_path):
    persp = Camera.look_at([3, 1, -2], [0, 0, 0], [0, 1, 0], 50.0, 64, 48)
    ortho = Camera.ortho_look_at([3, 1, -2], [0, 0, 0], [0, 1, 0], 2.0, 64, 48)
    with pytest.raises(ValueError, match="one model"):
        write_camera_path([persp, ortho], tmp_path / "mixed.json")
    with pytest.raises(ValueError, match="one image size"):
        write_camera_path([persp, Camera.look_at([3, 1, -2], [0, 0, 0], [0, 1, 0], 50.0, 64, 50)], tmp_path / "s.json")
    off_centre = Camera(64, 48, 40.0, 40.0, 30.0, 24.0, persp.world_to_camera)
    with pytest.raises(ValueError, match="centred principal point"):
        write_camera_path([off_centre], tmp_path / "c.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == []     # nothing half-written


def _viewer_export(n=3, **extra):
    """A camera path as nerfstudio's viewer saves it (render_panel.py): keyframes, timing, crop, render_time."""
    c2w = np.eye(4)
    c2w[:3, 3] = [0, 0, 4]
    frames = [{"camera_to_world": c2w.ravel().tolist(), "fov": 50.0, "aspect": 4 / 3, "render_time": i / n}
              for i in range(n)]
    return {"default_fov": 50.0, "default_transition_sec": 2.0,
            "keyframes": [{"matrix": c2w.ravel().tolist(), "fov": 50.0, "aspect": 4 / 3,
                           "override_transition_enabled": False, "override_transition_sec": None}],
            "camera_type": "perspective", "render_height": 48, "render_width": 64, "fps": 30, "seconds": 0.1,
            "is_cycle": False, "smoothness_value": 0.5,
            "crop": {"crop_center": [0, 0, 0], "crop_scale": [1, 1, 1], "crop_rot": [0, 0, 0],
                     "crop_bg_color": {"r": 0, "g": 0, "b": 0}},
            "camera_path": frames, **extra}


def test_nerfstudio_viewer_export_is_accepted(tmp_path, caplog):
    cams = load_camera_path(_path(tmp_path, _viewer_export()))
    assert len(cams) == 3 and cams[0].fov_y_deg == pytest.approx(50.0)
    assert "ignoring" not in caplog.text            # every key there is one nerfstudio writes
    # keys of other tools are ignored too, and said so in one warning
    doc = _viewer_export(source={"type": "dataset"})
    doc["camera_path"][1]["zoom"] = 2
    assert len(load_camera_path(_path(tmp_path, doc))) == 3
    assert "ignoring camera-path fields we do not use: 'source'" in caplog.text
    assert "camera_path[*].'zoom'" in caplog.text


def test_sizes_and_matrices_in_their_other_spellings(tmp_path):
    doc = _viewer_export(1)
    doc.update(render_width=64.0, render_height=48.0, camera_type="Perspective")   # whole floats, any case
    doc["camera_path"][0]["camera_to_world"] = np.eye(4).tolist()                  # 4 rows of 4
    (cam,) = load_camera_path(_path(tmp_path, doc))
    assert (cam.width, cam.height) == (64, 48) and isinstance(cam.width, int)
    np.testing.assert_allclose(cam.center, [0, 0, 0])


def test_size_bound_is_what_the_renderer_allocates(tmp_path):
    from rasterizer.camera import MAX_PIXELS, MAX_SIDE, RENDER_BYTES_PER_PIXEL, RENDER_MEMORY_BUDGET
    assert MAX_PIXELS * RENDER_BYTES_PER_PIXEL <= RENDER_MEMORY_BUDGET
    ok = _viewer_export(1, render_width=8192, render_height=8192)
    assert load_camera_path(_path(tmp_path, ok))[0].width == 8192
    for w, h in ((8192, 8193), (MAX_SIDE + 1, 16), (16384, 16384)):
        with pytest.raises(SceneError, match=f"{w}x{h}"):
            load_camera_path(_path(tmp_path, _viewer_export(1, render_width=w, render_height=h)))


def _deep(n):
    return "[" * n + "]" * n


RAW = {   # camera-path files that are not JSON we can use
    "nested brackets": '{"render_width": 64, "render_height": 48, "camera_path": ' + _deep(100_000) + "}",
    "5000-digit integer": '{"render_width": ' + "9" * 5000 + ', "render_height": 48, "camera_path": []}',
    "truncated": '{"render_width": 64, "render_height"',
    "not utf-8": b'{"render_width": 64\xff}',
    "empty": "",
}


@pytest.mark.parametrize("case", RAW)
def test_unparseable_camera_paths(tmp_path, case):
    p = tmp_path / "cams.json"
    raw = RAW[case]
    p.write_bytes(raw if isinstance(raw, bytes) else raw.encode())
    with pytest.raises(SceneError) as e:
        load_camera_path(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def _set(key, value):
    return lambda d: d.update({key: value})


def _cam(key, value):
    return lambda d: d["camera_path"][0].update({key: value})


def _c2w(j, value):
    def mutate(d):
        d["camera_path"][0]["camera_to_world"][j] = value
    return mutate


@pytest.mark.parametrize("mutate, expect", [
    (lambda d: d.pop("render_width"), "lacks the field 'render_width'"),
    (lambda d: d.pop("camera_path"), "lacks the field 'camera_path'"),
    (_set("render_height", True), "render_height must be a number, got a boolean"),
    (_set("render_height", "48"), "render_height must be a number, got a string"),
    (_set("render_height", None), "render_height must be a number, got null"),
    (_set("render_height", 48.5), "whole number of pixels"),
    (_set("render_height", 0), "must be positive"),
    (_set("render_height", -48), "must be positive"),
    (_set("render_width", 10 ** 400), "render_width must be a finite number"),
    (_set("render_width", 1e300), "at most 16383"),
    (_set("camera_type", "fisheye"), "camera_type 'fisheye' is not supported"),
    (_set("camera_type", "equirectangular"), "not supported"),
    (_set("camera_type", "omnidirectional"), "not supported"),
    (_set("camera_type", 3), "camera_type 3 is not supported"),
    (_set("camera_path", []), "non-empty list"),
    (_set("camera_path", {"0": {}}), "non-empty list"),
    (lambda d: d["camera_path"].append(7), r"camera_path\[1\] must be an object, got a number"),
    (lambda d: d["camera_path"][0].pop("fov"), r"camera_path\[0\] lacks 'fov'"),
    (lambda d: d["camera_path"][0].pop("camera_to_world"), "lacks 'camera_to_world'"),
    (_cam("fov", 0), "fov must be in"),
    (_cam("fov", 180), "fov must be in"),
    (_cam("fov", True), "fov must be a number, got a boolean"),
    (_cam("fov", 10 ** 400), "fov must be a finite number"),
    (_cam("fov", 1e-300), "focal length"),
    (_cam("camera_to_world", [1, 2, 3]), "16 numbers"),
    (_cam("camera_to_world", np.eye(4)[:3].ravel().tolist()), "16 numbers"),
    (_cam("camera_to_world", [[1, 0, 0, 0]] * 3 + [[0, 0, 1]]), "16 numbers"),
    (_cam("camera_to_world", "eye"), "16 numbers"),
    (_cam("camera_to_world", [0] * 16), "no usable rotation"),
    (_cam("camera_to_world", (np.eye(4) * 1e200).ravel().tolist()), r"no usable rotation \(determinant inf\)"),
    (_c2w(3, 10 ** 400), r"camera_to_world\[3\] must be a finite number"),
    (_c2w(5, None), r"camera_to_world\[5\] must be a number, got null"),
    (_c2w(0, False), "must be a number, got a boolean"),
    (_c2w(3, 1e300), "holds values beyond float32"),
    (_cam("camera_to_world", (np.diag([2.0, 2.0, 2.0, 1.0])).ravel().tolist()), "is not rigid"),
    (_cam("fov", 1e-30), "focal length"),                 # 7e33 px: finite in float32, its square is not
])
def test_bad_camera_paths(tmp_path, mutate, expect):
    doc = _viewer_export(1)
    mutate(doc)
    with pytest.raises(SceneError, match=expect) as e:
        load_camera_path(_path(tmp_path, doc))
    assert "\n" not in str(e.value) and str(tmp_path / "cams.json") in str(e.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")
def test_a_named_pipe_is_not_a_camera_path(tmp_path):
    """open() on a FIFO blocks until a writer comes: refused before it is opened."""
    os.mkfifo(tmp_path / "cams.json")
    with pytest.raises(SceneError, match=r"cams\.json: not a file"):
        load_camera_path(tmp_path / "cams.json")


def test_non_finite_json_literals_and_bad_ortho_paths(tmp_path):
    p = tmp_path / "cams.json"
    text = json.dumps(_viewer_export(1)).replace('"fov": 50.0', '"fov": NaN', 1)
    p.write_text(text.replace('"fov": 50.0', '"fov": NaN'))   # keyframes and the frame
    with pytest.raises(SceneError, match="fov must be a finite number"):
        load_camera_path(p)
    ortho = {"camera_type": "orthographic", "render_width": 64, "render_height": 48,
             "camera_path": [{"camera_to_world": np.eye(4).ravel().tolist(), "ortho_height": 2.0}]}
    assert load_camera_path(_path(tmp_path, ortho))[0].is_ortho
    for value, expect in ((0, "positive"), (-1.0, "positive"), (1e-300, "focal length"), ("2", "a string")):
        ortho["camera_path"][0]["ortho_height"] = value
        with pytest.raises(SceneError, match=expect):
            load_camera_path(_path(tmp_path, ortho))
    ortho["camera_path"][0]["fov"] = 50.0
    del ortho["camera_path"][0]["ortho_height"]
    with pytest.raises(SceneError, match="lacks 'ortho_height'"):
        load_camera_path(_path(tmp_path, ortho))


def test_file_level_problems(tmp_path):
    with pytest.raises(SceneError, match="no such file"):
        load_camera_path(tmp_path / "absent.json")
    with pytest.raises(SceneError, match="is a folder"):
        load_camera_path(tmp_path)
    with pytest.raises(SceneError, match="empty"):
        load_camera_path("")
    with pytest.raises(SceneError, match="must be a JSON object, got a list"):
        load_camera_path(_path(tmp_path, [1, 2]))
    big = tmp_path / "big.json"
    from rasterizer.camera import CAMERA_PATH_MAX_BYTES
    with open(big, "wb") as f:
        f.truncate(CAMERA_PATH_MAX_BYTES + 1)
    with pytest.raises(SceneError, match="larger than"):
        load_camera_path(big)


def test_deep_nesting_is_refused_even_with_a_raised_recursion_limit(tmp_path):
    """json's C scanner recurses per level: with a library's raised recursion limit 100 000 brackets
    overflowed the C stack (a segfault) instead of raising RecursionError."""
    import subprocess
    import sys

    from conftest import REPO
    p = tmp_path / "deep.json"
    p.write_text('{"render_width": 64, "render_height": 48, "camera_path": ' + _deep(100_000) + "}")
    code = ("import sys; sys.setrecursionlimit(10**6)\n"
            "from rasterizer.camera import load_camera_path\n"
            "from rasterizer.errors import SceneError\n"
            "try:\n    load_camera_path(sys.argv[1])\nexcept SceneError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "nested deeper than 64 levels" in r.stdout
