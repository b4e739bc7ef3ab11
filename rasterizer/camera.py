"""Cameras in the rasterizer's (OpenCV) frame, and nerfstudio camera-path JSON in and out.

Conventions (rendering.md): a nerfstudio ``camera_to_world`` is OpenGL-style (looks down
-Z, +Y up); the rasterizer wants OpenCV world-to-camera (looks down +Z, +Y down), so the
rotation's y and z columns are negated before inverting. Perspective intrinsics come from the
vertical field of view: ``fx = fy = H / 2 / tan(fov / 2)``; orthographic ones from the world
units the image height spans: ``fx = fy = H / ortho_height``; the principal point is the image
centre. ``docs/formats.md`` describes the camera-path file as we read it.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import SceneError, one_line
from .scene import atomic_write

log = logging.getLogger(__name__)

_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])

#: The largest image a camera may ask for. A render holds about RENDER_BYTES_PER_PIXEL bytes a pixel
#: at its peak (float32 RGB 12, transmittance and alpha 8, the clamped float and 8-bit copies made
#: while encoding 16, the tile offsets under 1; 36 measured on a 4096x4096 preview), and the image
#: buffers get RENDER_MEMORY_BUDGET: 2^26 pixels (8192x8192). A side is bounded by what the image
#: formats can store (WebP: 16383).
RENDER_BYTES_PER_PIXEL = 40
RENDER_MEMORY_BUDGET = 5 << 29       # 2.5 GiB
MAX_PIXELS = RENDER_MEMORY_BUDGET // RENDER_BYTES_PER_PIXEL
MAX_SIDE = 16383


def image_size_problem(width, height) -> str | None:
    """Why ``width`` x ``height`` cannot be rendered (not positive integers, a side or the pixel
    count beyond :data:`MAX_SIDE` / :data:`MAX_PIXELS`), or None when it can."""
    if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in (width, height)):
        return f"image size must be two integers, got {width!r} x {height!r}"
    if width <= 0 or height <= 0:
        return f"image size {width}x{height}: width and height must be positive"
    if width > MAX_SIDE or height > MAX_SIDE:
        return f"image size {width}x{height}: a side may be at most {MAX_SIDE} pixels"
    if width * height > MAX_PIXELS:
        return (f"image size {width}x{height}: {width * height} pixels is more than the renderer's "
                f"{MAX_PIXELS} ({RENDER_MEMORY_BUDGET / 2**30:g} GiB of image buffers)")
    return None

#: camera models, gsplat 1.4.0's names: ``pinhole`` (perspective; fx, fy in pixels) and ``ortho``
#: (orthographic; fx, fy in pixels per world unit, the projection Jacobian is constant)
PINHOLE, ORTHO = "pinhole", "ortho"
MODELS = (PINHOLE, ORTHO)


@dataclass(frozen=True)
class Camera:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    world_to_camera: np.ndarray  # (4, 4) float64, OpenCV convention
    model: str = PINHOLE         # PINHOLE or ORTHO

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera size must be positive, got {self.width}x{self.height}")
        if self.model not in MODELS:
            raise ValueError(f"camera model must be one of {', '.join(MODELS)}, got {self.model!r}")
        w2c = np.asarray(self.world_to_camera, dtype=np.float64)
        if w2c.shape != (4, 4) or not np.isfinite(w2c).all():
            raise ValueError("world_to_camera must be a finite 4x4 matrix")
        object.__setattr__(self, "world_to_camera", w2c)

    @classmethod
    def from_fov(cls, world_to_camera, fov_y_deg: float, width: int, height: int) -> Camera:
        if not 0.0 < fov_y_deg < 180.0:
            raise ValueError(f"vertical field of view must be in (0, 180) degrees, got {fov_y_deg}")
        f = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2.0)
        return cls(int(width), int(height), f, f, width / 2.0, height / 2.0, world_to_camera)

    @classmethod
    def from_opengl_c2w(cls, c2w, fov_y_deg: float, width: int, height: int) -> Camera:
        """A nerfstudio camera: OpenGL camera-to-world (3x4 or 4x4) and vertical fov in degrees."""
        return cls.from_fov(opengl_c2w_to_world_to_camera(c2w), fov_y_deg, width, height)

    @classmethod
    def look_at(cls, eye, target, up, fov_y_deg: float, width: int, height: int) -> Camera:
        """A camera at ``eye`` looking at ``target``, with ``up`` pointing up in the image."""
        return cls.from_fov(look_at_world_to_camera(eye, target, up), fov_y_deg, width, height)

    @classmethod
    def orthographic(cls, world_to_camera, view_height: float, width: int, height: int) -> Camera:
        """An orthographic camera whose image height spans ``view_height`` world units
        (``fx = fy = height / view_height`` pixels per unit), principal point at the centre."""
        if not (math.isfinite(view_height) and view_height > 0.0):
            raise ValueError(f"orthographic view height must be positive and finite, got {view_height}")
        f = height / view_height
        return cls(int(width), int(height), f, f, width / 2.0, height / 2.0, world_to_camera, ORTHO)

    @classmethod
    def ortho_look_at(cls, eye, target, up, view_height: float, width: int, height: int) -> Camera:
        """An orthographic camera at ``eye`` looking at ``target`` (``up`` up in the image)."""
        return cls.orthographic(look_at_world_to_camera(eye, target, up), view_height, width, height)

    @property
    def is_ortho(self) -> bool:
        return self.model == ORTHO

    @property
    def view_height(self) -> float:
        """World units spanned by the image height (orthographic cameras)."""
        return self.height / self.fy

    @property
    def fov_y_deg(self) -> float:
        if self.is_ortho:
            raise ValueError("an orthographic camera has no field of view (see view_height)")
        return math.degrees(2.0 * math.atan(0.5 * self.height / self.fy))

    @property
    def center(self) -> np.ndarray:
        """Camera position in world coordinates."""
        r, t = self.world_to_camera[:3, :3], self.world_to_camera[:3, 3]
        return -r.T @ t

    def camera_to_world_opengl(self) -> np.ndarray:
        """The nerfstudio (OpenGL) camera-to-world 4x4 matrix of this camera."""
        return np.linalg.inv(self.world_to_camera) @ _GL_TO_CV

    def to_camera_path_entry(self) -> dict:
        """This camera as an entry of a nerfstudio camera path (``fov`` or, orthographic, ``ortho_height``)."""
        if self.fx != self.fy or self.cx != self.width / 2.0 or self.cy != self.height / 2.0:
            raise ValueError("a camera path stores square pixels and a centred principal point only; "
                             f"this camera has fx {self.fx}, fy {self.fy}, cx {self.cx}, cy {self.cy}")
        entry = {"camera_to_world": self.camera_to_world_opengl().reshape(-1).tolist()}
        if self.is_ortho:
            entry["ortho_height"] = self.view_height
        else:
            entry["fov"] = self.fov_y_deg
        entry["aspect"] = self.width / self.height
        return entry


def opengl_c2w_to_world_to_camera(c2w) -> np.ndarray:
    """OpenCV world-to-camera of a nerfstudio (OpenGL) camera-to-world, 3x4 or 4x4 (last row ignored)."""
    m = np.eye(4)
    m[:3, :] = np.asarray(c2w, dtype=np.float64).reshape(-1, 4)[:3]
    return np.linalg.inv(m @ _GL_TO_CV)


def look_at_world_to_camera(eye, target, up) -> np.ndarray:
    """OpenCV world-to-camera of a camera at ``eye`` looking at ``target``, ``up`` up in the image."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    forward = target - eye
    if np.linalg.norm(forward) == 0:
        raise ValueError("look_at: eye and target coincide")
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:  # looking along `up`: any perpendicular will do
        right = np.cross(forward, np.roll(up, 1))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, forward, eye  # OpenCV axes
    return np.linalg.inv(c2w)



# --------------------------------------------------------------------------- camera-path JSON

#: a camera path larger than this is refused before parsing (10 000 cameras take about 4 MB)
CAMERA_PATH_MAX_BYTES = 64 << 20
#: a camera path nests 5 levels deep (viewer keyframes and crop included)
CAMERA_PATH_MAX_DEPTH = 64
#: ``camera_type`` values we render → camera model; nerfstudio's others (fisheye, equirectangular,
#: omnidirectional, vr180) are refused
CAMERA_TYPES = {"perspective": PINHOLE, "orthographic": ORTHO}
_USED = {"render_width", "render_height", "camera_type", "camera_path"}
#: top-level keys nerfstudio's viewer and scripts write that we do not need
_NERFSTUDIO = {"fps", "seconds", "smoothness_value", "is_cycle", "keyframes", "crop", "default_fov",
               "default_transition_sec"}
_USED_PER_CAMERA = {"camera_to_world", "fov", "ortho_height"}
_NERFSTUDIO_PER_CAMERA = {"aspect", "render_time"}


def load_camera_path(path: str | os.PathLike) -> list[Camera]:
    """The cameras of a nerfstudio camera-path JSON (``render_width``/``render_height``, ``camera_path``,
    optional ``camera_type`` ``perspective`` or ``orthographic``); every value is checked, and what
    nerfstudio writes beyond what we use is ignored. Raises :class:`SceneError` naming the file."""
    if os.fspath(path) in ("", b""):
        raise SceneError("the camera-path name is empty")
    path = Path(path)
    doc = _read_json(path)
    if not isinstance(doc, dict):
        raise SceneError(f"{path}: a camera path must be a JSON object, got {_json_type(doc)}")
    for name in ("render_width", "render_height", "camera_path"):
        if name not in doc:
            raise SceneError(f"{path}: camera path lacks the field {name!r}")
    _ignore_unknown(path, "", doc.keys(), _USED | _NERFSTUDIO)
    width, height = (_pixels(path, doc, k) for k in ("render_width", "render_height"))
    problem = image_size_problem(width, height)
    if problem:
        raise SceneError(f"{path}: render_width x render_height: {problem}")
    ctype = doc.get("camera_type", "perspective")
    model = CAMERA_TYPES.get(ctype.lower()) if isinstance(ctype, str) else None
    if model is None:
        raise SceneError(f"{path}: camera_type {one_line(repr(ctype))[:80]} is not supported "
                         f"(we render {' and '.join(CAMERA_TYPES)} cameras)")
    entries = doc["camera_path"]
    if not isinstance(entries, list) or not entries:
        raise SceneError(f"{path}: camera_path must be a non-empty list of cameras")
    unknown: set[str] = set()
    cams = [_camera(path, i, e, model, width, height, unknown) for i, e in enumerate(entries)]
    _ignore_unknown(path, "camera_path[*].", unknown, set())
    return cams


def write_camera_path(cameras: list[Camera], path: str | os.PathLike, fps: float = 30.0) -> Path:
    """Write cameras as a nerfstudio camera-path JSON (atomically). They must share one image size and
    one model; orthographic ones get ``camera_type: orthographic`` and an ``ortho_height`` each."""
    cameras = list(cameras)
    if not cameras:
        raise ValueError("write_camera_path: no cameras")
    first = cameras[0]
    if any((c.width, c.height, c.model) != (first.width, first.height, first.model) for c in cameras):
        raise ValueError("write_camera_path: the cameras of one path share one image size and one model")
    ctype = next(t for t, m in CAMERA_TYPES.items() if m == first.model)
    doc = {"camera_type": ctype, "render_width": first.width, "render_height": first.height, "fps": fps,
           "seconds": len(cameras) / fps, "camera_path": [c.to_camera_path_entry() for c in cameras]}
    text = json.dumps(doc, indent=1, allow_nan=False)
    return atomic_write(Path(path), lambda f: f.write(text.encode()))


def _read_json(path: Path):
    if path.exists() and not path.is_dir() and not path.is_file():    # a FIFO or a device: open() may block
        raise SceneError(f"{path}: not a file")
    try:
        with open(path, "rb") as f:
            raw = f.read(CAMERA_PATH_MAX_BYTES + 1)
    except FileNotFoundError:
        raise SceneError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SceneError(f"{path}: is a folder, not a camera-path file") from None
    except OSError as e:
        raise SceneError(f"{path}: cannot read the camera path ({one_line(e.strerror or e)})") from None
    if len(raw) > CAMERA_PATH_MAX_BYTES:
        raise SceneError(f"{path}: larger than {CAMERA_PATH_MAX_BYTES >> 20} MiB: not a camera path")
    # json's C scanner recurses once per level and can overflow the C stack where a library has
    # raised the recursion limit: deep nesting is refused before parsing
    if _json_depth(raw) > CAMERA_PATH_MAX_DEPTH:
        raise SceneError(f"{path}: not a camera path (JSON nested deeper than {CAMERA_PATH_MAX_DEPTH} levels)")
    try:
        return json.loads(raw)
    except RecursionError:
        raise SceneError(f"{path}: not a camera path (JSON nested too deeply)") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, Python's limit on integer digits
        raise SceneError(f"{path}: not a readable JSON camera path ({one_line(e)[:200]})") from None


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)


def _json_depth(raw: bytes) -> int:
    """The deepest nesting of ``[`` and ``{`` in a JSON text, brackets inside strings not counted."""
    b = np.frombuffer(_JSON_STRING.sub(b'""', raw), np.uint8)
    step = (b == ord("[")).astype(np.int64) + (b == ord("{")) - (b == ord("]")) - (b == ord("}"))
    return int(np.cumsum(step).max(initial=0))


def _json_type(v) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(v), type(v).__name__)


def _ignore_unknown(path: Path, where: str, keys, known: set[str]) -> None:
    unknown = sorted(one_line(repr(k))[:60] for k in set(keys) - known)
    if unknown:
        log.warning("%s: ignoring camera-path fields we do not use: %s%s", path, where,
                    ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else ""))


def _number(path: Path, what: str, v) -> float:
    """A JSON number as a finite float (booleans are not numbers)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SceneError(f"{path}: {what} must be a number, got {_json_type(v)}")
    try:
        x = float(v)
    except OverflowError:
        x = math.inf
    if not math.isfinite(x):
        raise SceneError(f"{path}: {what} must be a finite number")
    return x


def _pixels(path: Path, doc: dict, key: str) -> int:
    """A whole number of pixels (``640`` or ``640.0``; not ``true``, ``"640"`` or ``640.5``)."""
    x = _number(path, key, doc[key])
    if x != int(x):
        raise SceneError(f"{path}: {key} must be a whole number of pixels, got {x}")
    return int(x)


def _matrix(path: Path, what: str, v) -> np.ndarray:
    """16 numbers, flat (row-major, as nerfstudio writes) or as 4 rows of 4."""
    if isinstance(v, list) and len(v) == 4 and all(isinstance(r, list) and len(r) == 4 for r in v):
        v = [x for r in v for x in r]
    if not isinstance(v, list) or len(v) != 16:
        raise SceneError(f"{path}: {what} must be 16 numbers (a row-major 4x4 matrix)")
    return np.array([_number(path, f"{what}[{j}]", x) for j, x in enumerate(v)]).reshape(4, 4)


def _camera(path: Path, i: int, e, model: str, width: int, height: int, unknown: set) -> Camera:
    where = f"camera_path[{i}]"
    if not isinstance(e, dict):
        raise SceneError(f"{path}: {where} must be an object, got {_json_type(e)}")
    unknown.update(k for k in e if k not in _USED_PER_CAMERA | _NERFSTUDIO_PER_CAMERA)
    key = "fov" if model == PINHOLE else "ortho_height"
    for name in ("camera_to_world", key):
        if name not in e:
            raise SceneError(f"{path}: {where} lacks {name!r}")
    c2w = _matrix(path, f"{where}.camera_to_world", e["camera_to_world"])
    value = _number(path, f"{where}.{key}", e[key])
    with np.errstate(all="ignore"):
        det = np.linalg.det(c2w[:3, :3])
        if not (math.isfinite(det) and abs(det) > 1e-12):
            raise SceneError(f"{path}: {where}.camera_to_world has no usable rotation (determinant {det:.3g})")
        w2c = opengl_c2w_to_world_to_camera(c2w)
    if not np.isfinite(w2c).all():
        raise SceneError(f"{path}: {where}.camera_to_world cannot be inverted to finite numbers")
    with np.errstate(over="ignore"):
        if not np.isfinite(w2c.astype(np.float32)).all():
            raise SceneError(f"{path}: {where}.camera_to_world holds values beyond float32, which the "
                             "renderer works in")
    rot = c2w[:3, :3]
    if not np.allclose(rot.T @ rot, np.eye(3), atol=1e-3):
        raise SceneError(f"{path}: {where}.camera_to_world is not rigid (its 3x3 part scales or shears); "
                         "a camera's position and view direction need a rotation")
    if model == PINHOLE and not 0.0 < value < 180.0:
        raise SceneError(f"{path}: {where}.fov must be in (0, 180) degrees, got {value:g}")
    if model == ORTHO and not value > 0.0:
        raise SceneError(f"{path}: {where}.ortho_height must be positive, got {value:g}")
    cam = (Camera.from_fov(w2c, value, width, height) if model == PINHOLE
           else Camera.orthographic(w2c, value, width, height))
    with np.errstate(over="ignore"):
        # the renderer works in float32 and squares the focal length (the projected covariance)
        usable = bool(np.isfinite(np.float32(cam.fx) * np.float32(cam.fx))) and cam.fx > 0.0
    if not usable:
        raise SceneError(f"{path}: {where}.{key} {value:g} gives a focal length of {cam.fx:.3g} px, "
                         "beyond what the renderer can use")
    return cam
