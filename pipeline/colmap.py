"""The COLMAP model as the extract step needs it: the image names in ``images.bin`` and which frame of which
recording each one is."""
from __future__ import annotations

import re
import struct
from pathlib import Path, PurePosixPath

from .errors import BadInput, one_line

_INDEX = re.compile(r"(\d+)$")


def read_image_names(path: Path) -> list[str]:
    """Image names from a COLMAP ``images.bin`` (documented binary model format).

    uint64 count; per image: uint32 id, 7 float64 (qvec, tvec), uint32 camera id, the name
    NUL-terminated, uint64 number of 2D points, then 24 bytes per point (x, y, point3D id).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise BadInput(f"{path}: cannot read ({one_line(e)})") from None
    try:
        (n,) = struct.unpack_from("<Q", data, 0)
        pos, names = 8, []
        for _ in range(n):
            pos += 4 + 7 * 8 + 4
            end = data.index(b"\0", pos)
            names.append(data[pos:end].decode("utf-8"))
            pos = end + 1
            (npts,) = struct.unpack_from("<Q", data, pos)
            pos += 8 + 24 * npts
            if pos > len(data):
                raise ValueError("2D points run past the end of the file")
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: not a readable COLMAP images.bin ({one_line(e)})") from None
    if pos != len(data):
        raise BadInput(f"{path}: {len(data) - pos} unexpected bytes after the {n} images")
    if not names:
        raise BadInput(f"{path}: the COLMAP model has no images")
    return names


def match_frames(image_names: list[str], recordings: list[str]) -> dict[str, dict[int, list[str]]]:
    """Which frame of which recording each COLMAP image is: ``{recording: {index: [names]}}``.

    A name's recording is the directory it sits in (``<scan>/<frame>.jpg``), else the
    recording its file name starts with (``<scan>_<index>.jpg``, the reconstruction server's
    naming), else the only recording. The frame index (0-based, in decoding order) is the
    number the file name ends with.
    """
    plan: dict[str, dict[int, list[str]]] = {d: {} for d in recordings}
    by_length = sorted(recordings, key=len, reverse=True)
    unmatched = []
    for name in image_names:
        p = PurePosixPath(name)
        if p.is_absolute() or ".." in p.parts or "\\" in name:
            raise BadInput(f"images.bin names {name!r}, which is not a path inside Frames/")
        m = _INDEX.search(p.stem)
        recording = next((d for d in p.parts[:-1] if d in plan), None)
        if recording is None:
            recording = next((d for d in by_length if p.name.startswith(d + "_")), None)
        if recording is None and len(recordings) == 1:
            recording = recordings[0]
        if m is None or recording is None:
            unmatched.append(name)
            continue
        plan[recording].setdefault(int(m.group(1)), []).append(name)
    if unmatched:
        raise BadInput(f"{len(unmatched)} of {len(image_names)} images in images.bin match no frame of "
                       f"the recordings {', '.join(recordings)} (e.g. {unmatched[0]!r}); expected "
                       "<recording>/<name><index>.jpg or <recording>_<index>.jpg")
    return plan


def describe_layout(image_names: list[str]) -> str:
    """How the names are laid out, for the log: nested per recording or flat, with an example."""
    example = image_names[0]
    if any("/" in n for n in image_names):
        return f"<recording>/<frame> (e.g. {example!r}), mirrored under Frames/"
    return f"flat (e.g. {example!r})"
