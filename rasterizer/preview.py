"""Preview cameras framed on a scene's robust bounds, and the preview images themselves.

Floaters must not steer the framing: bounds use Gaussians with opacity ≥ 0.1 and the
2nd-98th percentile per axis (all Gaussians when too few pass). Views:

- ``top``: above the centre looking straight down along −up, the robust footprint in frame;
- ``angle``: from an upper corner of the box, 45° above the horizontal, looking at the centre.

Both are framed with a margin (10 % by default) so that every corner of the robust box is
in the image. The default background is nerfstudio's viewer grey-blue.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .camera import Camera
from .imageio import save_image
from .render import Prepared
from .scene import Scene

log = logging.getLogger(__name__)

DEFAULT_BACKGROUND = (0.1490, 0.1647, 0.2157)
DEFAULT_SIZE = (1280, 720)
DEFAULT_FOV = 50.0
VIEWS = ("top", "angle")
_AXES = {"x": 0, "y": 1, "z": 2}


@dataclass
class Bounds:
    lo: np.ndarray       # (3,) robust minimum per axis
    hi: np.ndarray       # (3,) robust maximum per axis
    count: int           # Gaussians the percentiles were taken over

    @property
    def center(self) -> np.ndarray:
        return (self.lo + self.hi) / 2.0

    @property
    def extent(self) -> np.ndarray:
        return self.hi - self.lo

    def corners(self) -> np.ndarray:
        return np.array([[(self.lo, self.hi)[(k >> a) & 1][a] for a in range(3)] for k in range(8)])


class PreviewError(RuntimeError):
    """Some preview views failed; ``written`` holds the ones that did not."""

    def __init__(self, failures: dict[str, str], written: dict[str, Path]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in failures.items()))
        self.failures, self.written = failures, written


def parse_up(up: str) -> np.ndarray:
    """``x|y|z`` with an optional sign → a unit world axis."""
    s = up.strip().lower()
    sign = -1.0 if s.startswith("-") else 1.0
    axis = _AXES.get(s.lstrip("+-"))
    if axis is None:
        raise ValueError(f"up axis must be one of x, y, z, -x, -y, -z; got {up!r}")
    v = np.zeros(3)
    v[axis] = sign
    return v


def robust_bounds(scene: Scene, min_opacity: float = 0.1, percentiles=(2.0, 98.0)) -> Bounds:
    """Per-axis percentile box of the opaque Gaussians (floaters and outliers ignored)."""
    opaque = scene.sigmoid_opacities() >= min_opacity
    enough = max(16, int(0.005 * len(scene)))
    pts = scene.means[opaque] if opaque.sum() >= min(enough, len(scene)) else scene.means
    lo, hi = np.percentile(pts.astype(np.float64), percentiles, axis=0)
    # a flat or point-like scene still needs a box with some size on every axis
    size = max(float(np.max(hi - lo)), 1e-6)
    pad = np.maximum(size * 0.01 - (hi - lo), 0.0) / 2.0
    return Bounds(lo - pad, hi + pad, int(len(pts)))


def _frame(bounds: Bounds, direction, up_hint, fov_y_deg, width, height, margin) -> Camera:
    """Camera on the ray centre + D·direction looking at the centre, D the least that keeps
    every box corner inside the frame shrunk by ``margin``."""
    c = bounds.center
    fwd = -np.asarray(direction, float) / np.linalg.norm(direction)
    right = np.cross(fwd, up_hint)
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    ky = math.tan(math.radians(fov_y_deg) / 2.0) / (1.0 + margin)
    kx = ky * width / height
    rel = bounds.corners() - c
    need = np.maximum(np.abs(rel @ right) / kx, np.abs(rel @ down) / ky) - rel @ fwd
    dist = max(float(need.max()), 0.05 * float(np.max(bounds.extent)), 1e-4)
    return Camera.look_at(c - fwd * dist, c, up_hint, fov_y_deg, width, height)


def _horizontal_axes(up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two world axes orthogonal to ``up``, in x, y, z order (x and z for +Y up)."""
    k = int(np.argmax(np.abs(up)))
    a, b = (np.eye(3)[i] for i in range(3) if i != k)
    return a, b


def preview_cameras(scene: Scene, up: str = "y", size=DEFAULT_SIZE, fov_y_deg: float = DEFAULT_FOV,
                    margin: float = 0.1, bounds: Bounds | None = None) -> dict[str, Camera]:
    """The ``top`` and ``angle`` cameras for ``scene``."""
    u = parse_up(up)
    b = bounds or robust_bounds(scene)
    w, h = size
    a_ax, b_ax = _horizontal_axes(u)
    ext = b.extent
    # top: the longer side of the footprint runs along the image width, pointing right
    # (for +Y up: +X to the right, -Z to the top, like a map)
    # (a near-square footprint keeps the map orientation)
    right = b_ax if abs(ext @ b_ax) > 1.1 * abs(ext @ a_ax) else a_ax
    top = _frame(b, u, np.cross(u, right), fov_y_deg, w, h, margin)
    corner = (a_ax + b_ax) / math.sqrt(2.0)
    angle = _frame(b, corner + u, u, fov_y_deg, w, h, margin)        # 45° above the horizontal
    return {"top": top, "angle": angle}


def orbit_cameras(scene: Scene, n_frames: int = 150, up: str = "y", size=DEFAULT_SIZE,
                  elevation_deg: float = 35.0, sweep_deg: float = 360.0, fov_y_deg: float = DEFAULT_FOV,
                  margin: float = 0.1, bounds: Bounds | None = None) -> list[Camera]:
    """Cameras circling the robust centre at ``elevation_deg``, one radius for the whole orbit
    (the largest that any frame needs), starting at the ``angle`` preview's azimuth."""
    u = parse_up(up)
    b = bounds or robust_bounds(scene)
    a_ax, b_ax = _horizontal_axes(u)
    el = math.radians(elevation_deg)
    az = np.radians(45.0) + np.radians(sweep_deg) * np.arange(n_frames) / max(n_frames, 1)
    dirs = [math.cos(el) * (math.cos(t) * a_ax + math.sin(t) * b_ax) + math.sin(el) * u for t in az]
    w, h = size
    framed = [_frame(b, d, u, fov_y_deg, w, h, margin) for d in dirs]
    radius = max(float(np.linalg.norm(cam.center - b.center)) for cam in framed)
    return [Camera.look_at(b.center + radius * d, b.center, u, fov_y_deg, w, h) for d in dirs]


def write_previews(scene: Scene, out_dir, up: str = "y", size=DEFAULT_SIZE, backend: str = "auto",
                   background=DEFAULT_BACKGROUND, fmt: str = "jpg", quality: int = 90,
                   views=VIEWS, prepared: Prepared | None = None) -> dict[str, Path]:
    """Render and write ``preview_<view>.<fmt>`` for each view; each view independent of the others.

    Raises :class:`PreviewError` after trying every view if any failed.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cams = preview_cameras(scene, up, size)
    prepared = prepared or Prepared(scene, backend)
    written, failures = {}, {}
    for name in views:
        path = out_dir / f"preview_{name}.{fmt.lstrip('.')}"
        t0 = time.perf_counter()
        try:
            img = prepared.render(cams[name], background)
            if not (img.alpha > 1.0 / 255.0).any():
                log.warning("preview %s: nothing of the scene is visible in this view", name)
            written[name] = save_image(path, img.rgb, quality=quality)
            log.info("preview %s: wrote %s (%dx%d, %.2f s)", name, path, size[0], size[1],
                     time.perf_counter() - t0)
        except Exception as e:  # one view failing must not cost the others
            failures[name] = f"{type(e).__name__}: {e}"
            log.warning("preview %s failed: %s", name, failures[name])
    if failures:
        raise PreviewError(failures, written)
    return written
