"""Real tiny MP4 recordings (PyAV, H.264) whose frame i has a known grey level, to tell frames apart."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def grey_level(index: int) -> int:
    return 10 + 20 * (index % 12)


def make_mp4(path: Path, n_frames: int = 12, size=(64, 48), fps: int = 10) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": "10", "preset": "ultrafast"}
        for i in range(n_frames):
            img = np.full((h, w, 3), grey_level(i), np.uint8)
            c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(s.encode())
    return path


def mean_grey(jpeg: Path) -> float:
    from PIL import Image
    return float(np.asarray(Image.open(jpeg).convert("L"), np.float64).mean())


def probe_video(path: Path) -> dict:
    """Codec, pixel format, size, rate, frame count and whether ``moov`` precedes ``mdat``."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        n = sum(1 for _ in c.decode(s))
        info = {"codec": s.codec_context.name, "pix_fmt": s.codec_context.pix_fmt, "width": s.width,
                "height": s.height, "fps": float(s.average_rate), "frames": n}
    head = Path(path).read_bytes()
    info["faststart"] = 0 <= head.find(b"moov") < head.find(b"mdat")
    return info
