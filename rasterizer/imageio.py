"""Writing rendered images: float [0, 1] → 8-bit, atomically, in the format the name asks for."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from .scene import atomic_write

FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}


#: the 8-bit value of 1.0 (the GPU's twin of to_uint8 receives it as an argument)
U8_MAX = 255.0


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Round-to-nearest 8-bit of values clamped to [0, 1]."""
    return (np.clip(x, 0.0, 1.0) * U8_MAX + 0.5).astype(np.uint8)


def save_image(path: str | Path, rgb: np.ndarray, alpha: np.ndarray | None = None, quality: int = 90) -> Path:
    """Encode in memory, then write to a temp name and rename: never a partial image file."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unsupported image format {path.suffix!r} (use .jpg, .png or .webp)")
    pixels = to_uint8(rgb)
    if alpha is not None:
        if fmt == "JPEG":
            raise ValueError(f"{path}: JPEG cannot store alpha; use .png")
        pixels = np.concatenate([pixels, to_uint8(alpha)[..., None]], axis=-1)
    buf = io.BytesIO()
    kwargs = {"quality": int(quality)} if fmt in ("JPEG", "WEBP") else {}
    PILImage.fromarray(pixels).save(buf, format=fmt, **kwargs)
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two images on their 8-bit values (inf when identical)."""
    a8, b8 = to_uint8(a).astype(np.float64), to_uint8(b).astype(np.float64)
    mse = float(np.mean((a8 - b8) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)
