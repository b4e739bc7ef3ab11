"""Backend registry. A backend is a module offering the stage functions of
:mod:`rasterizer.stages` (``project``, ``sh_colors``, ``bin_tiles``, ``blend``) plus
``upload(scene) -> Gaussians``, ``project_and_color(g, camera) -> (Projection, colors)`` (stages 2
and 3 for one camera, which :mod:`rasterizer.render` calls; the GPU fuses them into one kernel) and
``download(rgb, alpha) -> (np.ndarray, np.ndarray)``, ``download8(rgb)`` (8-bit RGB on the host,
:func:`rasterizer.imageio.to_uint8`), ``downscale(rgb, alpha, k)`` (the supersampling resolve,
:func:`rasterizer.stages.downscale`, on the backend's own arrays) and ``warm_up()``. Only the chosen backend's module is
imported: the GPU path never imports numba, the CPU paths never import CuPy unless asked whether a GPU exists.
"""
from __future__ import annotations

import ctypes
import importlib
import importlib.util
import logging
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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


def warm_up_view():
    """The scene and camera a backend's warm-up renders: one Gaussian two units ahead, 16 x 16 pixels."""
    import numpy as np

    from ..camera import Camera
    from ..scene import Scene
    f32 = np.float32
    one = Scene(np.array([[0.0, 0.0, 2.0]], f32), np.full((1, 3), -2.0, f32), np.array([[1, 0, 0, 0]], f32),
                np.zeros(1, f32), np.zeros((1, 1, 3), f32))
    return one, Camera.look_at([0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0], 60.0, 16, 16)


def start_cuda_driver() -> None:
    """Start the CUDA driver (``cuInit``) and retain device 0's primary context (the one CuPy's runtime
    calls use) through ctypes, which lets go of the GIL during the calls: CuPy's own first calls hold
    it while the driver starts (0.2-0.35 s on an H200 host, measured with a counting main thread), so
    a warm-up thread would stall the loading and planning beside it. Nothing happens without a driver
    or a device; CuPy reports that where it is used."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        device, context = ctypes.c_int(), ctypes.c_void_p()
        if cuda.cuInit(0) == 0 and cuda.cuDeviceGet(ctypes.byref(device), 0) == 0:
            cuda.cuDevicePrimaryCtxRetain(ctypes.byref(context), device)
    except (OSError, AttributeError) as e:
        log.debug("CUDA driver start: %s", e)


class Warming:
    """The backend coming up in a background thread (:func:`warming`), and optionally the scene going
    up behind it: :meth:`upload` hands the thread a scene, :meth:`prepared` takes the result."""

    def __init__(self, name: str):
        self.name = name
        self._scene: queue.Queue = queue.Queue()
        self._prepared: Any = None     # a rasterizer.render.Prepared once the scene is up
        self.thread = threading.Thread(target=self._run, name="backend-warm-up", daemon=True)

    def _run(self) -> None:
        driver = None
        if self.name == "gpu" or (self.name == "auto" and importlib.util.find_spec("cupy") is not None):
            driver = threading.Thread(target=start_cuda_driver, name="cuda-driver-start", daemon=True)
            driver.start()   # beside CuPy's import, which holds the GIL
        try:
            if resolve(self.name) != "gpu":
                return
            if driver is not None:
                driver.join()
            get("gpu").warm_up()
            scene = self._scene.get()
            if scene is not None:   # the planning goes on meanwhile
                from ..render import Prepared
                self._prepared = Prepared(scene, "gpu")
        except Exception as e:  # noqa: BLE001 - get() or Prepared() raises it again, in the caller's thread
            log.debug("backend warm-up: %s", e)
        finally:
            if driver is not None:
                driver.join()   # never an exit while the driver starts

    def upload(self, scene) -> None:
        """Upload ``scene`` on the thread once the GPU backend is up (nothing on the CPU backends)."""
        self._scene.put(scene)

    def prepared(self, index=None):
        """The uploaded scene (a :class:`rasterizer.render.Prepared`) restricted to ``index`` (a mask or
        indices into it; None: all of it), or None when nothing went up. Only after the block, once."""
        if self._prepared is None or self.thread.is_alive():
            return None
        whole, self._prepared = self._prepared, None   # the whole scene's device memory goes back after the cut
        return whole if index is None else whole.subset(index)


@contextmanager
def warming(name: str) -> Iterator[Warming]:
    """Bring the GPU backend up in a background thread for the duration of the block, which loads and
    plans meanwhile, when ``name`` is (or ``auto`` resolves to) ``gpu``; leaving the block waits for
    it (never an exit while CUDA starts). CuPy's import, the CUDA driver and context (0.5-0.9 s of a
    fresh process on the machines measured; the driver started through :func:`start_cuda_driver`,
    without the GIL) and ``warm_up``'s tiny frame, which takes the first frame's one-time loads,
    overlap the load and the planning; a scene handed to :meth:`Warming.upload` goes up next (1M
    SH-3 preview on an H100 host: 1.77-1.92 -> 1.25-1.35 s; on an H200 host with the driver started
    so: 0.95 s).
    numba is not warmed so: its import holds the GIL, and a 1M preview on 2 cores gained nothing
    (2.35-2.8 s either way). A failure is only logged here: :func:`get` reports it where the backend
    is used."""
    warm = Warming(name)
    warm.thread.start()
    try:
        yield warm
    finally:
        warm.upload(None)   # a thread still waiting for a scene gets none
        warm.thread.join()
