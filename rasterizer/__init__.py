"""splatter's tile-based EWA Gaussian-splat rasterizer (gsplat 1.4.0 "classic" semantics).

Public API::

    from rasterizer import load_scene, Camera, render, render_batch
    scene = load_scene("splat.ply")
    img = render(scene, Camera.look_at(eye, target, up, 60, 1280, 720), backend="auto")
    img.rgb, img.alpha   # float32 (H, W, 3) and (H, W)
"""
from .camera import Camera, load_camera_path
from .errors import BackendUnavailable, SceneError
from .render import Image, Prepared, render, render_batch
from .scene import Scene, load_scene, save_ply

__all__ = [
           "BackendUnavailable",
           "Camera",
           "Image",
           "Prepared",
           "Scene",
           "SceneError",
           "load_camera_path",
           "load_scene",
           "render",
           "render_batch",
           "save_ply",
]
