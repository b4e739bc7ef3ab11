"""A fixed set of test cameras for any scene, derived from its robust bounds.

Used by the backend-agreement tests (CPU and GPU), so that every backend
is checked on the same hard cases: oblique and top views, a camera inside the scene, one far
away, an image size that is not a multiple of 16, one looking away from everything, and two
orthographic ones (straight down over the whole scene, and from inside it).
"""
from __future__ import annotations

import numpy as np

from rasterizer.camera import Camera
from rasterizer.preview import preview_cameras, robust_bounds
from rasterizer.scene import Scene


def cameras_for(scene: Scene, size=(517, 389), up: str = "y") -> dict[str, Camera]:
    w, h = size
    b = robust_bounds(scene)
    c, ext = b.center, float(np.max(b.extent))
    views = preview_cameras(scene, up=up, size=size)
    upv = np.eye(3)[1]
    side = np.array([0.3, 0.1, 1.0])
    return {
        "oblique": views["angle"],
        # straight down from above the box (perspective; the top preview itself is orthographic)
        "top": Camera.look_at(c + 1.5 * ext * upv, c, [0.0, 0.0, -1.0], 50.0, w, h),
        # at the robust centre, looking sideways through the scene
        "inside": Camera.look_at(c, c + side, upv, 70.0, w, h),
        # 40 extents away: the whole scene is a few pixels wide
        "far": Camera.look_at(c + 40.0 * ext * side / np.linalg.norm(side), c, upv, 40.0, w, h),
        # outside the scene, looking away from it: a blank image, not an error
        "away": Camera.look_at(c + 3.0 * ext * side, c + 4.0 * ext * side, upv, 50.0, w, h),
        # orthographic, straight down from above the box, the whole footprint in the frame
        "ortho_top": Camera.ortho_look_at(c + (b.hi[1] - c[1] + ext) * upv, c, [0.0, 0.0, -1.0],
                                          1.1 * max(float(b.extent[2]), float(b.extent[0]) * h / w), w, h),
        # orthographic from the robust centre, looking sideways: half the scene is behind the near plane
        "ortho_inside": Camera.ortho_look_at(c, c + side, upv, 0.5 * ext, w, h),
    }
