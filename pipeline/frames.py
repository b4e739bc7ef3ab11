"""Frame extraction: decode a recording (PyAV) and write the wanted frames as JPEG files."""
from __future__ import annotations

import io
import logging
import math
import time
from pathlib import Path

import av

from rasterizer.scene import atomic_write

from .errors import BadInput, one_line

log = logging.getLogger(__name__)

JPEG_QUALITY = 95


def save_jpeg(img, path: Path, quality: int = JPEG_QUALITY) -> None:
    """A PIL image as a JPEG, written to a temporary name and renamed."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def extract(mp4: Path, frames_dir: Path, wanted: dict[int, list[str]] | None, recording: str) -> tuple[int, int]:
    """Decode ``mp4`` and write its frames under ``frames_dir``: those ``wanted`` names (``{index: [relative
    names]}``), or, when ``wanted`` is None, every frame as ``<recording>_<index:06d>.jpg``.

    Decoding stops after the last wanted frame. Returns (frames written, frames decoded); raises BadInput when the
    video cannot be decoded or ends before a wanted frame.
    """
    t0 = time.perf_counter()
    written = count = 0
    last = max(wanted) if wanted else math.inf
    if not mp4.is_file():              # a FIFO or a device would block the decoder's open for ever
        raise BadInput(f"{mp4}: not a file")
    try:
        # metadata_errors: tags that are not UTF-8 (a damaged file) must not stop the decode; we read none
        with av.open(str(mp4), metadata_errors="replace") as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for index, frame in enumerate(container.decode(stream)):
                count = index + 1
                targets = [f"{recording}_{index:06d}.jpg"] if wanted is None else wanted.get(index, [])
                if targets:
                    img = frame.to_image()
                    for rel in targets:
                        save_jpeg(img, frames_dir / rel)
                        written += 1
                if index >= last:
                    break
    # not OSError: a failing write is no input's fault
    except (av.error.FFmpegError, IndexError, UnicodeDecodeError) as e:
        raise BadInput(f"{mp4}: cannot decode the video ({one_line(e)})") from None
    if wanted is not None:
        beyond = sorted(i for i in wanted if i >= count)
        if beyond:
            raise BadInput(f"{mp4} has {count} frames but images.bin names frame index {beyond[0]} "
                           f"({wanted[beyond[0]][0]!r}) and {len(beyond) - 1} more beyond its end")
    log.info("extract: %s: wrote %d frame(s) of %s%d decoded in %.2f s", recording, written,
             "" if wanted is None else "the first ", count, time.perf_counter() - t0)
    return written, count
