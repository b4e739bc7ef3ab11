"""The public render functions: compose the five stages on a chosen backend.

``render(scene, camera)`` renders one view; ``render_batch`` renders many views of one
scene, activating (and on a GPU, uploading) it once. Backends: ``numpy`` (the reference),
``cpu`` (numba), ``gpu`` (CuPy), ``auto`` (the GPU when CuPy sees a device, else ``cpu``).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from . import backends
from .camera import Camera
from .scene import Scene


@dataclass
class Image:
    rgb: np.ndarray    # (H, W, 3) float32 in [0, 1], background composited
    alpha: np.ndarray  # (H, W) float32, 1 - final transmittance


class Prepared:
    """A scene activated (and uploaded) once for one backend."""

    def __init__(self, scene: Scene, backend: str = "auto"):
        self.backend = backends.get(backend)
        self.gaussians = self.backend.upload(scene)
        self.n = len(scene)

    def subset(self, index) -> Prepared:
        """The Gaussians selected by ``index`` (a boolean mask or indices), taken on the backend: the
        same arrays as ``Prepared(scene.subset(index))`` (activation is per Gaussian) without a second
        upload."""
        out = object.__new__(Prepared)
        out.backend = self.backend
        out.gaussians = self.backend.subset(self.gaussians, index)
        out.n = len(out.gaussians)
        return out

    def frame(self, camera: Camera, background=(0.0, 0.0, 0.0)):
        """One view as the backend's own (rgb, alpha) arrays, on its device (not downloaded)."""
        be, g = self.backend, self.gaussians
        proj, colors = be.project_and_color(g, camera)
        bins = be.bin_tiles(proj, camera)
        return be.blend(proj, colors, g.opacities, bins, camera, _background(background))

    def render(self, camera: Camera, background=(0.0, 0.0, 0.0), downscale: int = 1) -> Image:
        """One view, downloaded; with ``downscale`` k > 1 (a camera at k times the size) each k x k
        block of pixels averaged on the backend first (:func:`rasterizer.stages.downscale`)."""
        rgb, alpha = self.frame(camera, background)
        if downscale > 1:
            rgb, alpha = self.backend.downscale(rgb, alpha, downscale)
        return Image(*self.backend.download(rgb, alpha))

    def render8(self, camera: Camera, background=(0.0, 0.0, 0.0)) -> np.ndarray:
        """One view as 8-bit RGB (H, W, 3) (:func:`rasterizer.imageio.to_uint8`), converted on the
        backend before it is downloaded (the video's frames)."""
        return self.backend.download8(self.frame(camera, background)[0])


def _background(bg) -> tuple[float, float, float]:
    vals = tuple(float(v) for v in bg)
    if len(vals) != 3 or not all(np.isfinite(vals)):
        raise ValueError(f"background must be three finite numbers, got {bg!r}")
    return vals


def render(scene: Scene, camera: Camera, background=(0.0, 0.0, 0.0), backend: str = "auto") -> Image:
    """Render one view of ``scene``: float32 RGB (H, W, 3) and alpha (H, W)."""
    return Prepared(scene, backend).render(camera, background)


def render_batch(scene: Scene, cameras: Iterable[Camera], background=(0.0, 0.0, 0.0),
                 backend: str = "auto") -> Iterator[Image]:
    """Render several views of one scene without re-activating or re-uploading it."""
    prepared = Prepared(scene, backend)
    for cam in cameras:
        yield prepared.render(cam, background)
