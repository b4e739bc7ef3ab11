"""Video encoding: RGB frames → H.264 yuv420p MP4 with the index up front (fast start), written to a temporary
name and renamed, with progress in the log (frames done, rate, time left)."""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

import av
import numpy as np

from rasterizer.scene import staged_file

log = logging.getLogger(__name__)

CODEC, PIX_FMT = "libx264", "yuv420p"
CODEC_OPTIONS = {"crf": "23", "preset": "medium"}
#: a progress line after the first frame and then at every tenth of the total
PROGRESS_STEPS = 10


class Progress:
    """Counts finished frames and logs ``<what>: frame k/N (p%), r frames/s, about s s left``."""

    def __init__(self, what: str, total: int):
        self.what, self.total, self.done = what, total, 0
        self.t0 = time.perf_counter()
        self.next_at = 1

    def tick(self) -> None:
        self.done += 1
        if self.done < self.next_at and self.done != self.total:
            return
        elapsed = time.perf_counter() - self.t0
        rate = self.done / elapsed if elapsed > 0 else float("inf")
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        log.info("%s: frame %d/%d (%d%%), %.2f frames/s, about %.0f s left", self.what, self.done, self.total,
                 100 * self.done // self.total, rate, left)
        step = max(1, self.total // PROGRESS_STEPS)
        self.next_at = (self.done // step + 1) * step


def write_mp4(path: Path, frames: Iterable[np.ndarray], size: tuple[int, int], fps: int, total: int,
              what: str = "video") -> Path:
    """Encode ``frames`` (``total`` uint8 (H, W, 3) arrays of ``size`` = (W, H)) into ``path``.

    The file appears under its name only when complete: any exception (from encoding, from writing, or
    raised by the ``frames`` iterator itself) removes the temporary file and propagates.
    """
    w, h = size
    with staged_file(path) as tmp, av.open(str(tmp), mode="w", format="mp4",
                                           options={"movflags": "+faststart"}) as container:
        stream = container.add_stream(CODEC, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, PIX_FMT
        stream.options = dict(CODEC_OPTIONS)
        progress = Progress(what, total)
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
            progress.tick()
        container.mux(stream.encode())
    return path
