"""Backend registry. A backend is a module offering the stage functions of
:mod:`rasterizer.stages` (``project``, ``sh_colors``, ``bin_tiles``, ``blend``) plus
``upload(scene) -> Gaussians``, ``project_and_color(g, camera) -> (Projection, colors)`` (stages 2
and 3 for one camera, which :mod:`rasterizer.render` calls; the GPU fuses them into one kernel) and
``download(rgb, alpha) -> (np.ndarray, np.ndarray)`` and ``downscale(rgb, alpha, k)`` (the supersampling
resolve, :func:`rasterizer.stages.downscale`, on the backend's own arrays). Only the chosen backend's module is
imported: the GPU path never imports numba, the CPU paths never import CuPy unless asked whether a GPU exists.
"""
from __future__ import annotations

import importlib
import logging

from ..errors import BackendUnavailable

log = logging.getLogger(__name__)
NAMES = ("numpy", "cpu", "gpu")
_MODULES = {"numpy": "numpy_ref", "cpu": "cpu_numba", "gpu": "gpu_cupy"}
_auto_choice: str | None = None


def gpu_unavailable_reason() -> str | None:
    """Why the GPU backend cannot run here, or None when it can."""
    try:
        import cupy
    except Exception as e:  # noqa: BLE001 - ImportError, or a CUDA library that fails to load
        return f"CuPy is not importable ({type(e).__name__}: {e})"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # noqa: BLE001 - any CUDA runtime failure means "no usable device"
        return f"CuPy sees no CUDA device ({type(e).__name__}: {e})"
    if n < 1:
        return "CuPy sees no CUDA device"
    return None


def resolve(name: str) -> str:
    """Map ``auto`` to a concrete backend, logging which and why (once per process)."""
    global _auto_choice
    if name != "auto":
        if name not in NAMES:
            raise BackendUnavailable(f"unknown backend {name!r} (choose numpy, cpu, gpu or auto)")
        return name
    if _auto_choice is None:
        reason = gpu_unavailable_reason()
        _auto_choice = "gpu" if reason is None else "cpu"
        if reason is None:
            log.info("backend auto: using gpu (CuPy with a CUDA device)")
        else:
            log.info("backend auto: using cpu (numba) because %s", reason)
    return _auto_choice


def get(name: str):
    name = resolve(name)
    if name == "gpu":
        reason = gpu_unavailable_reason()
        if reason:
            raise BackendUnavailable(f"backend gpu is not available: {reason}")
    return importlib.import_module(f".{_MODULES[name]}", __name__)


def available() -> list[str]:
    out = ["numpy", "cpu"]
    if gpu_unavailable_reason() is None:
        out.append("gpu")
    return out
