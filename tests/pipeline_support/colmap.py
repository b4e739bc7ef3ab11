"""Tiny COLMAP binary models for tests: ``images.bin`` and ``cameras.bin`` writers and a reader.

Format (COLMAP's documented binary model): ``images.bin`` is uint64 count, then per image uint32
id, qvec 4×float64, tvec 3×float64, uint32 camera id, the NUL-terminated name, uint64 point
count and 24 bytes a point (float64 x, y, int64 point3D id). ``cameras.bin`` is uint64 count,
then per camera int32 id, int32 model id, uint64 width, height and the model's float64 params.
"""
from __future__ import annotations

import struct
from pathlib import Path


def write_images_bin(path: Path, names: list[str], points_per_image: int = 2) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = [struct.pack("<Q", len(names))]
    for i, name in enumerate(names, 1):
        out.append(struct.pack("<I4d3dI", i, 1.0, 0.0, 0.0, 0.0, 0.1 * i, 0.0, 0.0, 1))
        out.append(name.encode() + b"\0")
        out.append(struct.pack("<Q", points_per_image))
        for k in range(points_per_image):
            out.append(struct.pack("<ddq", 10.0 + k, 20.0 + k, -1 if k % 2 else k))
    path.write_bytes(b"".join(out))
    return path


def write_cameras_bin(path: Path, width: int = 64, height: int = 48) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pinhole = 1  # model id of PINHOLE: fx, fy, cx, cy
    data = struct.pack("<Q", 1) + struct.pack("<iiQQ", 1, pinhole, width, height)
    data += struct.pack("<4d", 50.0, 50.0, width / 2, height / 2)
    path.write_bytes(data)
    return path


def read_images_bin(path: Path) -> list[tuple[int, str]]:
    data = Path(path).read_bytes()
    (n,) = struct.unpack_from("<Q", data, 0)
    pos, out = 8, []
    for _ in range(n):
        (image_id,) = struct.unpack_from("<I", data, pos)
        pos += 4 + 56 + 4
        end = data.index(b"\0", pos)
        out.append((image_id, data[pos:end].decode()))
        (npts,) = struct.unpack_from("<Q", data, end + 1)
        pos = end + 1 + 8 + 24 * npts
    assert pos == len(data), "trailing bytes in images.bin"
    return out
