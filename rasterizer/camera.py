"""Pinhole cameras in the rasterizer's (OpenCV) frame, built from nerfstudio camera paths.

Conventions (rendering.md): a nerfstudio ``camera_to_world`` is OpenGL-style (looks down
-Z, +Y up); the rasterizer wants OpenCV world-to-camera (looks down +Z, +Y down), so the
rotation's y and z columns are negated before inverting. Intrinsics come from the vertical
field of view: ``fx = fy = H / 2 / tan(fov / 2)``, principal point at the image centre.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import SceneError

_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])

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
    def from_fov(cls, world_to_camera, fov_y_deg: float, width: int, height: int) -> "Camera":
        if not 0.0 < fov_y_deg < 180.0:
            raise ValueError(f"vertical field of view must be in (0, 180) degrees, got {fov_y_deg}")
        f = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2.0)
        return cls(int(width), int(height), f, f, width / 2.0, height / 2.0, world_to_camera)

    @classmethod
    def from_opengl_c2w(cls, c2w, fov_y_deg: float, width: int, height: int) -> "Camera":
        """A nerfstudio camera: OpenGL camera-to-world (3x4 or 4x4) and vertical fov in degrees."""
        m = np.eye(4)
        m[:3, :] = np.asarray(c2w, dtype=np.float64).reshape(-1, 4)[:3]
        return cls.from_fov(np.linalg.inv(m @ _GL_TO_CV), fov_y_deg, width, height)

    @classmethod
    def look_at(cls, eye, target, up, fov_y_deg: float, width: int, height: int) -> "Camera":
        """A camera at ``eye`` looking at ``target``, with ``up`` pointing up in the image."""
        return cls.from_fov(look_at_world_to_camera(eye, target, up), fov_y_deg, width, height)

    @classmethod
    def orthographic(cls, world_to_camera, view_height: float, width: int, height: int) -> "Camera":
        """An orthographic camera whose image height spans ``view_height`` world units
        (``fx = fy = height / view_height`` pixels per unit), principal point at the centre."""
        if not (math.isfinite(view_height) and view_height > 0.0):
            raise ValueError(f"orthographic view height must be positive and finite, got {view_height}")
        f = height / view_height
        return cls(int(width), int(height), f, f, width / 2.0, height / 2.0, world_to_camera, ORTHO)

    @classmethod
    def ortho_look_at(cls, eye, target, up, view_height: float, width: int, height: int) -> "Camera":
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
        return {"camera_to_world": self.camera_to_world_opengl().reshape(-1).tolist(),
                "fov": self.fov_y_deg, "aspect": self.width / self.height}


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


_TOP_KEYS = {"render_width", "render_height", "camera_path", "fps", "seconds", "camera_type",
             "smoothness_value", "is_cycle", "keyframes", "crop", "default_fov",
             "default_transition_sec", "render_height_px", "render_width_px"}
_CAM_KEYS = {"camera_to_world", "fov", "aspect"}


def load_camera_path(path: str | os.PathLike) -> list[Camera]:
    """Cameras of a nerfstudio camera-path JSON (``render_width``/``height``, ``camera_path``)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise SceneError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SceneError(f"{path}: not a readable JSON camera path ({e})") from None
    if not isinstance(doc, dict):
        raise SceneError(f"{path}: camera path must be a JSON object")
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise SceneError(f"{path}: unknown camera-path fields: {', '.join(sorted(unknown))}")
    try:
        width, height = doc["render_width"], doc["render_height"]
        entries = doc["camera_path"]
    except KeyError as e:
        raise SceneError(f"{path}: camera path lacks the field {e.args[0]!r}") from None
    if (not isinstance(width, int) or not isinstance(height, int) or isinstance(width, bool)
            or width <= 0 or height <= 0 or width > 16384 or height > 16384):
        raise SceneError(f"{path}: render_width/render_height must be positive integers up to 16384")
    if doc.get("camera_type", "perspective") != "perspective":
        raise SceneError(f"{path}: camera_type {doc['camera_type']!r} is not supported (perspective only)")
    if not isinstance(entries, list) or not entries:
        raise SceneError(f"{path}: camera_path must be a non-empty list")
    cams = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise SceneError(f"{path}: camera_path[{i}] is not an object")
        unknown = set(e) - _CAM_KEYS
        if unknown:
            raise SceneError(f"{path}: camera_path[{i}] has unknown fields: {', '.join(sorted(unknown))}")
        try:
            m = np.asarray(e["camera_to_world"], dtype=np.float64)
            fov = float(e["fov"])
        except KeyError as k:
            raise SceneError(f"{path}: camera_path[{i}] lacks {k.args[0]!r}") from None
        except (TypeError, ValueError):
            raise SceneError(f"{path}: camera_path[{i}] has non-numeric values") from None
        if m.size != 16 or not np.isfinite(m).all():
            raise SceneError(f"{path}: camera_path[{i}].camera_to_world must be 16 finite numbers")
        if not 0.0 < fov < 180.0:
            raise SceneError(f"{path}: camera_path[{i}].fov must be in (0, 180) degrees, got {fov}")
        if abs(np.linalg.det(m.reshape(4, 4)[:3, :3])) < 1e-12:
            raise SceneError(f"{path}: camera_path[{i}].camera_to_world is singular")
        cams.append(Camera.from_opengl_c2w(m.reshape(4, 4), fov, width, height))
    return cams


def write_camera_path(cameras: list[Camera], path: str | os.PathLike, fps: float = 30.0) -> None:
    """Write cameras as a nerfstudio camera-path JSON (all must share one image size)."""
    w, h = cameras[0].width, cameras[0].height
    doc = {"camera_type": "perspective", "render_width": w, "render_height": h, "fps": fps,
           "seconds": len(cameras) / fps, "camera_path": [c.to_camera_path_entry() for c in cameras]}
    Path(path).write_text(json.dumps(doc, indent=1))
