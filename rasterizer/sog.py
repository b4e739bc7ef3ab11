"""PlayCanvas SOG ("Spatially Ordered Gaussians", version 2): write a Scene as a ``.sog`` bundle, read one back.

The format is PlayCanvas's public SOG specification, version 2 (docs/sog.md has the summary): a
``meta.json`` and lossless WebP images of 8-bit RGBA pixels, one pixel per Gaussian in the same
place of every per-Gaussian image, row-major from the top left; a ``.sog`` bundle is a ZIP with the
files at its root. The frame is the scene's own (no axis change).

- ``means_l`` / ``means_u``: each axis of the position as 16 bits (low / high byte), a linear ramp
  between ``means.mins`` and ``means.maxs`` of ``n = sign(x)·ln(|x| + 1)``;
- ``scales``: RGB index a 256-entry codebook of log scales (one codebook for the three axes);
- ``quats``: smallest-three quaternion — RGB the three other components of the unit quaternion
  (largest made positive) times √2 mapped to 0..255, A = 252 + index of the largest in
  ``rot_0..rot_3``;
- ``sh0``: RGB index a 256-entry codebook of the DC coefficients, A = sigmoid(opacity)·255;
- ``shN_centroids`` / ``shN_labels`` (SH degree ≥ 1): a palette of SH coefficient sets (64 per row,
  one pixel per coefficient, RGB = the three colour channels, each a 256-entry codebook index) and
  a 16-bit palette index per Gaussian (R low byte, G high byte).

The writer follows what PlayCanvas's ``splat-transform`` (3.7.0, the reference tool) does wherever
the specification leaves a choice, so that the files compare: Gaussians in its Morton order,
images ``ceil(√n / 4)·4`` wide and ``ceil(n / width / 4)·4`` high with zeroed padding, its
truncating byte conversions, codebooks from the same histogram-and-dynamic-programming 1-D
quantiser, a palette of ``min(64, 2^floor(log2(n / 1024)))·1024`` entries. The palette itself comes
from our own deterministic k-means (:mod:`rasterizer.kmeans`, GPU when there is one): k-means++
seeds, leaves, each Gaussian weighted by :func:`sh_weights`.
WebP is libwebp's lossless encoder at the reference's default settings, plus ``exact`` so that
fully transparent pixels keep their RGB. Same scene → same bytes.

The reader decodes exactly as the specification (and splat-transform's reader) does, in float64
rounded once to float32, and rejects malformed files with a :class:`SceneError` naming the file
and the problem.
"""
from __future__ import annotations

import functools
import io
import itertools
import json
import logging
import math
import os
import time
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from .errors import SceneError
from .scene import Scene, atomic_write

log = logging.getLogger(__name__)

VERSION = 2
META = "meta.json"
FILES = {
    "means": ["means_l.webp", "means_u.webp"],
    "scales": ["scales.webp"],
    "quats": ["quats.webp"],
    "sh0": ["sh0.webp"],
    "shN": ["shN_centroids.webp", "shN_labels.webp"],
}
CODEBOOK_SIZE = 256
PALETTE_ROW = 64                   # palette entries per row of shN_centroids
MAX_PALETTE = 65536                # 16-bit labels
SH_COEFFS = (0, 3, 8, 15)          # AC coefficients per colour channel for SH degree 0..3
QUAT_MODE = 252                    # quats alpha = QUAT_MODE + index of the dropped component
MAX_SIDE = 16383                   # WebP's largest image side
KMEANS_ITERATIONS = 10             # splat-transform's default (-i / --sh-iterations)
#: libwebp's lossless defaults as splat-transform calls them (WebPEncodeLosslessRGBA: quality 70,
#: method 4) plus ``exact``: keep the RGB of fully transparent pixels (alpha = opacity can be 0)
WEBP = {"lossless": True, "quality": 70, "method": 4, "exact": True}
MAX_META_BYTES = 16 << 20
CHUNK = 1 << 18                    # rows per chunk of the per-Gaussian encoders
GENERATOR = "splatter rasterizer.sog"
SQRT2 = math.sqrt(2.0)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")   # a local file header, or the end record of an empty ZIP
# the three stored components for each dropped one (rot_0..rot_3 order)
_KEPT = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])


@dataclass
class SogStats:
    path: Path
    count: int
    sh_degree: int
    palette: int            # SH palette entries (0 for SH degree 0)
    width: int
    height: int
    bytes: int
    seconds: float
    kmeans_seconds: float
    kmeans_device: str      # "cpu", "gpu" or "" (no palette)


def image_size(count: int) -> tuple[int, int]:
    """Width and height of the per-Gaussian images (splat-transform's choice: multiples of 4)."""
    width = math.ceil(math.sqrt(count) / 4) * 4
    height = math.ceil(count / width / 4) * 4
    return width, height


def palette_size(count: int) -> int:
    """SH palette entries for ``count`` Gaussians: the largest power of two ≤ count, at most 65,536."""
    return int(min(64.0, 2.0 ** math.floor(math.log2(count / 1024))) * 1024)


# --------------------------------------------------------------------------- writing

def write_sog(scene: Scene, path: str | os.PathLike, *, iterations: int = KMEANS_ITERATIONS,
              device: str = "auto", seed: int = 0, workers: int | None = None) -> SogStats:
    """Write ``scene`` as a SOG v2 bundle (a ZIP) at ``path``, atomically (temp name, then rename).

    ``device`` picks where the SH k-means runs (``auto``: the GPU when CuPy sees one); ``seed``
    fixes its random choices; ``workers`` bounds the threads that quantise and encode images.
    Returns sizes and timings; logs progress.
    """
    from .kmeans import array_module, kmeans, quantize_1d  # the writer's: a reader never imports it

    t0 = time.perf_counter()
    path = Path(path)
    n = len(scene)
    if n == 0:
        raise SceneError(f"{scene.source}: zero Gaussians; nothing to write")
    if iterations < 1:
        raise SceneError(f"k-means iterations must be at least 1, got {iterations}")
    _check_finite(scene)
    width, height = image_size(n)
    if width > MAX_SIDE or height > MAX_SIDE:
        raise SceneError(f"{scene.source}: {n} Gaussians do not fit one SOG ({width}x{height} images; "
                         f"WebP allows {MAX_SIDE}x{MAX_SIDE})")
    degree = scene.sh_degree
    log.info("SOG: %d Gaussians, SH degree %d, %dx%d images -> %s", n, degree, width, height, path)
    if workers is None:
        # Beside a CPU k-means (ten times longer than the rest) one stream does the rest in time and
        # bounds the memory held at once; beside a GPU one, the rest is the critical path.
        on_gpu = degree > 0 and array_module(device)[1] == "gpu"
        workers = min(8, os.cpu_count() or 1) if on_gpu else 1
    images: dict[str, Future[bytes]] = {}   # member name -> its WebP bytes, being encoded
    with ThreadPoolExecutor(max_workers=workers) as pool:
        def encode(name, rgba, w=width, h=height):
            images[name] = pool.submit(encode_webp, rgba, w, h, name)

        def pack():
            """Morton order, then positions and rotations: the pool does this while the k-means runs."""
            order = morton_order(scene.means)
            lo, hi, mins, maxs = encode_means(scene.means, order, width * height)
            encode(FILES["means"][0], lo.reshape(-1))
            encode(FILES["means"][1], hi.reshape(-1))
            del lo, hi
            encode(FILES["quats"][0], encode_quats(scene.quats, order, width * height).reshape(-1))
            log.info("SOG: Morton order, positions and rotations packed (%.2f s)", time.perf_counter() - t0)
            _trim()
            return order, mins, maxs

        packed = pool.submit(pack)
        # the 1-D codebooks: one after the other (each holds a few arrays of all the values)
        def codebooks_1d():
            out = (quantize_1d(scene.scales.T.ravel(), CODEBOOK_SIZE),
                   quantize_1d(scene.sh[:, 0, :].T.ravel(), CODEBOOK_SIZE))
            _trim()
            return out

        codebooks = pool.submit(codebooks_1d)

        def colour_images():
            """Scales, colours and opacity in Morton order, once both are ready: also beside the k-means."""
            order = packed.result()[0]
            (scales_cb, scales_lab), (colors_cb, colors_lab) = codebooks.result()
            scales = _blank_image(width, height)
            scales[:n, :3] = scales_lab.reshape(3, n).T[order]
            scales[:n, 3] = 255
            encode(FILES["scales"][0], scales.reshape(-1))
            sh0 = _blank_image(width, height)
            sh0[:n, :3] = colors_lab.reshape(3, n).T[order]
            sh0[:n, 3] = encode_opacity(scene.opacities[order])
            encode(FILES["sh0"][0], sh0.reshape(-1))
            return scales_cb, colors_cb

        colours = pool.submit(colour_images)   # waits in a worker only on jobs queued before it
        km = None
        if degree > 0:
            km = kmeans(_rows(scene.sh[:, 1:, :]), palette_size(n), iterations=iterations, seed=seed,
                        device=device, weights=sh_weights(scene))
            _trim()
        order, mins, maxs = packed.result()
        shn: dict[str, Any] | None = None
        if km is not None:
            # the labels image first: it encodes while the palette's codebook is made
            labels = km.labels[order]
            lab = _blank_image(width, height)
            lab[:n, 0] = labels & 0xFF
            lab[:n, 1] = labels >> 8
            lab[:n, 3] = 255
            encode(FILES["shN"][1], lab.reshape(-1))
            del labels, lab
            palette, coeffs = len(km.centroids), SH_COEFFS[degree]
            # the clustered rows are (coefficient, channel) pairs; the codebook pools all of them
            cb, cb_lab = quantize_1d(km.centroids.T.ravel(), CODEBOOK_SIZE)
            cb_lab = cb_lab.reshape(coeffs, 3, palette).transpose(1, 0, 2)   # [channel, coefficient, entry]
            rows = -(-palette // PALETTE_ROW)
            cen = np.zeros((rows * PALETTE_ROW, coeffs, 4), np.uint8)
            cen[:palette, :, :3] = cb_lab.transpose(2, 1, 0)
            cen[:palette, :, 3] = 255
            encode(FILES["shN"][0], cen.reshape(-1), PALETTE_ROW * coeffs, rows)
            shn = {"count": palette, "bands": degree, "codebook": _floats(cb), "files": FILES["shN"]}
        scales_cb, colors_cb = colours.result()
        log.info("SOG: scales, colours%s quantised (%.2f s)", " and SH palette" if shn else "",
                 time.perf_counter() - t0)
        blobs = {name: images[name].result() for key in FILES for name in FILES[key] if name in images}
    meta = {
        "version": VERSION,
        "asset": {"generator": GENERATOR},
        "count": n,
        "antialias": False,
        "means": {"mins": mins, "maxs": maxs, "files": FILES["means"]},
        "scales": {"codebook": _floats(scales_cb), "files": FILES["scales"]},
        "quats": {"files": FILES["quats"]},
        "sh0": {"codebook": _floats(colors_cb), "files": FILES["sh0"]},
        **({"shN": shn} if shn else {}),
    }
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
    atomic_write(path, lambda f: _write_zip(f, meta_bytes, blobs))
    stats = SogStats(path, n, degree, shn["count"] if shn else 0, width, height, path.stat().st_size,
                     time.perf_counter() - t0, km.seconds if km else 0.0, km.device if km else "")
    log.info("SOG: wrote %s (%d bytes, %.2f s)", path, stats.bytes, stats.seconds)
    return stats


@functools.cache
def _glibc():
    """glibc's C library through ctypes, or None where the C library is another."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim   # noqa: B018 - glibc's own
        return libc
    except (OSError, AttributeError):
        return None


def _trim() -> None:
    """Give glibc's free heap pages back to the system after each step of the writer: its thread
    arenas otherwise keep what the steps freed (measured on 1M SH-3 Gaussians, 0.1-0.2x the PLY
    of peak memory)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def warm_up(device: str = "auto"):
    """Bring the GPU k-means up in a background thread while the caller loads the scene (0.45 s of a
    fresh process on an H200), with the kernels of SH-3 palette rows, the usual capture's; other
    degrees load theirs when they run. The thread (None on the CPU) is for joining before an exit."""
    from .kmeans import warm_up as warm_up_kmeans

    return warm_up_kmeans(device, dims=(3 * SH_COEFFS[3],))


def sh_weights(scene: Scene) -> np.ndarray:
    """How much a Gaussian's SH error can show in a render: its opacity times the geometric mean of
    its two largest axes (the square root of its largest cross-section). The palette's k-means
    weighs each Gaussian by it, so big opaque Gaussians get their view-dependent colour first."""
    s = np.sort(scene.scales, axis=1).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):   # absurd values: 0, inf or 0 x inf
        w = scene.sigmoid_opacities() * np.exp(0.5 * (s[:, 1] + s[:, 2]))
    # k-means takes finite, positive weights: a Gaussian that cannot show gets the least one
    f32 = np.finfo(np.float32)
    return np.clip(np.nan_to_num(w, nan=f32.tiny), f32.tiny, f32.max).astype(np.float32)


def _check_finite(scene: Scene) -> None:
    for name in ("means", "scales", "quats", "opacities", "sh"):
        if not np.isfinite(getattr(scene, name)).all():
            raise SceneError(f"{scene.source}: non-finite {name}; SOG needs finite values")
    if (np.einsum("ij,ij->i", scene.quats, scene.quats) == 0).any():
        raise SceneError(f"{scene.source}: a zero quaternion has no rotation; SOG cannot store it")


def _floats(values: np.ndarray) -> list[float]:
    return [float(v) for v in values]


def _rows(a: np.ndarray) -> np.ndarray:
    """A view of (n, p, q) ``a`` as (n, p·q) rows, without copying (rows may be strided)."""
    n, p, q = a.shape
    if a.strides[2] != a.itemsize or a.strides[1] != q * a.itemsize:
        a = np.ascontiguousarray(a)
    return np.lib.stride_tricks.as_strided(a, (n, p * q), (a.strides[0], a.itemsize), writeable=False)


def _blank_image(width: int, height: int) -> np.ndarray:
    """A blank per-Gaussian image, (width·height, 4) RGBA bytes filled in Gaussian order (zero after the last)."""
    return np.zeros((width * height, 4), np.uint8)


def _write_zip(f, meta_bytes: bytes, blobs: dict[str, bytes]) -> None:
    """A stored (uncompressed: WebP is compressed already) ZIP with fixed timestamps."""
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in [(META, meta_bytes), *blobs.items()]:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)


def encode_webp(rgba: np.ndarray, width: int, height: int, name: str = "image") -> bytes:
    """Lossless WebP of a flat RGBA buffer, checked to decode to the very same bytes."""
    img = Image.frombuffer("RGBA", (width, height), rgba, "raw", "RGBA", 0, 1)
    buf = io.BytesIO()
    img.save(buf, format="WEBP", **WEBP)
    data = buf.getvalue()
    back = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA")).reshape(-1)
    if not np.array_equal(back, rgba):
        raise RuntimeError(f"{name}: this Pillow/libwebp's lossless WebP does not round-trip "
                           f"({int(np.count_nonzero(back != rgba))} bytes differ)")
    return data


# --------------------------------------------------------------------------- the encodings

def _part1by2(v: np.ndarray) -> np.ndarray:
    """Spread the low 10 bits of ``v`` to every third bit (Morton interleave)."""
    v = v & np.uint32(0x3FF)
    v = (v ^ (v << np.uint32(16))) & np.uint32(0xFF0000FF)
    v = (v ^ (v << np.uint32(8))) & np.uint32(0x0300F00F)
    v = (v ^ (v << np.uint32(4))) & np.uint32(0x030C30C3)
    v = (v ^ (v << np.uint32(2))) & np.uint32(0x09249249)
    return v


def morton_order(means: np.ndarray, bucket: int = 256) -> np.ndarray:
    """splat-transform's Morton order: the permutation that puts Gaussians on a Z-order curve.

    10 bits per axis over the bounding box of the points being sorted, a stable sort by the
    30-bit code, and every run of more than ``bucket`` equal codes sorted again the same way
    over its own bounding box.
    """
    n = len(means)
    order = np.arange(n, dtype=np.int64)
    todo = [(0, n)]
    while todo:
        s, e = todo.pop()
        idx = order[s:e]
        p = means[idx]
        lo = p.min(axis=0).astype(np.float64)
        ext = p.max(axis=0).astype(np.float64) - lo
        if not np.isfinite(ext).all() or not ext.any():
            continue
        with np.errstate(divide="ignore"):
            mul = np.where(ext == 0, 0.0, 1024.0 / ext)
        code = np.empty(len(p), np.uint32)
        for a in range(0, len(p), CHUNK):
            q = np.minimum(1023.0, (p[a:a + CHUNK].astype(np.float64) - lo) * mul).astype(np.uint32)
            code[a:a + CHUNK] = (_part1by2(q[:, 0]) + (_part1by2(q[:, 1]) << np.uint32(1))
                                 + (_part1by2(q[:, 2]) << np.uint32(2)))
        del p
        sub = np.argsort(code, kind="stable")
        order[s:e] = idx[sub]
        code = code[sub]
        cuts = np.concatenate([[0], np.flatnonzero(code[1:] != code[:-1]) + 1, [e - s]])
        for a, b in itertools.pairwise(cuts):
            if b - a > bucket:
                todo.append((s + int(a), s + int(b)))
    return order


def log_transform(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return np.sign(x) * np.log(np.abs(x) + 1.0)


def _by_chunks(encode, rows: np.ndarray, width: int = 4, order: np.ndarray | None = None,
               pixels: int | None = None) -> np.ndarray:
    """(pixels, width) bytes of ``encode`` applied to ``rows[order]`` a chunk at a time (the gather
    and its float64 temporaries stay small), zero after the last row: an image's pixels, in order."""
    n = len(rows) if order is None else len(order)
    out = np.zeros((n if pixels is None else pixels, width), np.uint8)   # zero padding, as _blank_image
    for a in range(0, n, CHUNK):
        out[a:min(n, a + CHUNK)] = encode(rows[a:a + CHUNK] if order is None else rows[order[a:a + CHUNK]])
    return out


def encode_means(means: np.ndarray, order: np.ndarray | None = None, pixels: int | None = None):
    """Low and high bytes (pixels, 4) of the 16-bit log-domain positions of ``means[order]`` (zero
    after the last row), and meta's mins / maxs."""
    mins = log_transform(means.min(axis=0))
    maxs = log_transform(means.max(axis=0))

    def lo_hi(m):   # one pass per chunk: RGBA of the low bytes, then RGBA of the high bytes
        with np.errstate(invalid="ignore", divide="ignore"):
            q = 65535.0 * (log_transform(m) - mins) / (maxs - mins)
        q = np.nan_to_num(q, nan=0.0).astype(np.uint32)  # truncation, as the reference's `x & 0xff`
        out = np.full((len(m), 8), 255, np.uint8)
        out[:, 0:3] = q & 0xFF
        out[:, 4:7] = q >> 8
        return out

    both = _by_chunks(lo_hi, means, 8, order, pixels)
    lo, hi = np.ascontiguousarray(both[:, :4]), np.ascontiguousarray(both[:, 4:])
    return lo, hi, [float(v) for v in mins], [float(v) for v in maxs]


def encode_quats(quats: np.ndarray, order: np.ndarray | None = None, pixels: int | None = None) -> np.ndarray:
    """Smallest-three bytes (pixels, 4) of ``quats[order]``: the other three components ·√2 to 0..255,
    A = 252 + dropped."""
    return _by_chunks(_quat_bytes, quats, 4, order, pixels)


def _quat_bytes(quats: np.ndarray) -> np.ndarray:
    q = quats.astype(np.float64)
    norm = np.sqrt(q[:, 0] * q[:, 0] + q[:, 1] * q[:, 1] + q[:, 2] * q[:, 2] + q[:, 3] * q[:, 3])
    q = q / norm[:, None]
    big = np.zeros(len(q), np.int64)
    a = np.abs(q)
    for c in (1, 2, 3):  # the first largest, as a strict comparison left to right
        big = np.where(a[:, c] > a[np.arange(len(q)), big], c, big)
    sign = np.where(q[np.arange(len(q)), big] < 0, -1.0, 1.0) * SQRT2
    q *= sign[:, None]
    kept = np.take_along_axis(q, _KEPT[big], axis=1)
    out = np.empty((len(q), 4), np.uint8)
    out[:, :3] = np.clip(255.0 * (kept * 0.5 + 0.5), 0.0, 255.0).astype(np.uint8)
    out[:, 3] = QUAT_MODE + big
    return out


def encode_opacity(logits: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):   # logits below -709: exp is inf, the opacity 0
        a = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    return np.clip(a * 255.0, 0.0, 255.0).astype(np.uint8)


# --------------------------------------------------------------------------- reading

def is_sog(path: Path) -> bool:
    """Whether ``path`` looks like a SOG by content: a ZIP, a JSON object, or a folder with meta.json.

    (A headerless ``.splat`` whose first float happens to start with ``{`` is not taken for JSON.)
    """
    if path.is_dir():
        return (path / META).is_file()
    with open(path, "rb") as f:
        head = f.read(64)
    if head[:4] in _ZIP_MAGIC:
        return True
    return head.lstrip()[:1] == b"{" and path.suffix.lower() != ".splat"


def read_sog(path: str | os.PathLike) -> Scene:
    """Decode a SOG v2 bundle (ZIP), an unbundled ``meta.json`` or a folder holding one, into a Scene."""
    path = Path(path)
    with _Members(path) as members:
        meta = _parse_meta(path, members.read(META, MAX_META_BYTES))
        return _decode(path, meta, members)


class _Members:
    """The files of a SOG, from a ZIP or from the folder of its meta.json, read by name."""

    def __init__(self, path: Path):
        self.path = path
        self.zip: zipfile.ZipFile | None = None
        self.folder = path   # the folder of the unbundled files (unused for a ZIP)
        self.meta_name = META
        if not path.is_dir():
            with open(path, "rb") as f:
                magic = f.read(4)
            if magic in _ZIP_MAGIC:
                try:
                    self.zip = zipfile.ZipFile(path)
                except (zipfile.BadZipFile, OSError, ValueError) as e:
                    raise SceneError(f"{path}: truncated or corrupt SOG bundle ({_one_line(e)})") from None
            else:  # an unbundled meta.json: the images are beside it
                self.folder, self.meta_name = path.parent, path.name

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.zip is not None:
            self.zip.close()

    def read(self, name: str, limit: int | None = None) -> bytes:
        if name == META:
            name = self.meta_name
        if self.zip is not None:
            try:
                info = self.zip.getinfo(name)
            except KeyError:
                raise SceneError(f"{self.path}: the bundle has no member {name!r}") from None
            if limit is not None and info.file_size > limit:
                raise SceneError(f"{self.path}: {name} is {info.file_size} bytes, more than {limit}")
            try:
                return self.zip.read(info)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
                raise SceneError(f"{self.path}: {name}: truncated or corrupt member ({_one_line(e)})") from None
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise SceneError(f"{self.path}: member name {name!r} leaves the SOG folder")
        file = self.folder / rel
        if not file.is_file():
            raise SceneError(f"{self.path}: missing file {file}")
        if limit is not None and file.stat().st_size > limit:
            raise SceneError(f"{file}: {file.stat().st_size} bytes, more than {limit}")
        return file.read_bytes()


def _parse_meta(path: Path, raw: bytes) -> dict:
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise SceneError(f"{path}: bad meta.json ({_one_line(e)})") from None
    if not isinstance(meta, dict):
        raise SceneError(f"{path}: bad meta.json (not a JSON object)")
    version = meta.get("version")
    if version is None:
        raise SceneError(f"{path}: meta.json has no 'version' (SOG version 1 is not supported)")
    if version != VERSION or isinstance(version, bool):
        raise SceneError(f"{path}: unsupported SOG version {version!r} (this reader knows version {VERSION})")
    count = meta.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise SceneError(f"{path}: meta.json 'count' must be a non-negative integer, got {count!r}")
    if count == 0:
        raise SceneError(f"{path}: the SOG holds zero Gaussians")

    def section(key, codebook=False, files=1):
        sec = meta.get(key)
        if not isinstance(sec, dict):
            raise SceneError(f"{path}: meta.json lacks the '{key}' object")
        names = sec.get("files")
        if (not isinstance(names, list) or len(names) != files
                or not all(isinstance(s, str) and s for s in names)):
            raise SceneError(f"{path}: meta.json '{key}.files' must list {files} file name(s)")
        if codebook:
            sec["codebook"] = _numbers(path, f"{key}.codebook", sec.get("codebook"), CODEBOOK_SIZE)
        return sec

    section("means", files=2)
    for key in ("mins", "maxs"):
        meta["means"][key] = _numbers(path, f"means.{key}", meta["means"].get(key), 3)
    section("scales", codebook=True)
    section("quats")
    section("sh0", codebook=True)
    if meta.get("shN") is not None:
        shn = section("shN", codebook=True, files=2)
        bands, pal = shn.get("bands"), shn.get("count")
        if bands not in (1, 2, 3) or isinstance(bands, bool):
            raise SceneError(f"{path}: meta.json 'shN.bands' must be 1, 2 or 3, got {bands!r}")
        if not isinstance(pal, int) or isinstance(pal, bool) or not 1 <= pal <= MAX_PALETTE:
            raise SceneError(f"{path}: meta.json 'shN.count' must be 1..{MAX_PALETTE}, got {pal!r}")
    return meta


def _numbers(path: Path, what: str, value, length: int) -> np.ndarray:
    ok = (isinstance(value, list) and len(value) == length
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))
    arr = np.asarray(value, np.float64) if ok else None
    if arr is None or not np.isfinite(arr).all():
        raise SceneError(f"{path}: meta.json '{what}' must be {length} finite numbers")
    return arr


def _member_limit(pixels: int) -> int:
    """The most bytes an image member of about ``pixels`` pixels may hold before it is read: twice raw
    RGBA (WebP is smaller), 1 GiB at most; a ZIP member that inflates beyond it (a zip bomb) is refused."""
    return min(8 * (pixels + 65536), 1 << 30)


def _image(path: Path, members: _Members, name: str, pixels: int) -> np.ndarray:
    """A member image as (H, W, 4) uint8; ``pixels``: about how many it should have (its size bound)."""
    data = members.read(name, limit=_member_limit(pixels))
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode not in ("RGBA", "RGB", "RGBX", "L", "LA", "P", "PA"):
                raise SceneError(f"{path}: {name} is a {img.mode} image; SOG images are 8-bit RGBA")
            return np.asarray(img.convert("RGBA"))
    except SceneError:
        raise
    except Image.UnidentifiedImageError:   # its message names a BytesIO object by address
        raise SceneError(f"{path}: {name} is not a readable image (no image format Pillow knows)") from None
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
        raise SceneError(f"{path}: {name} is not a readable image ({_one_line(e)})") from None


def _decode(path: Path, meta: dict, members: _Members) -> Scene:
    n = meta["count"]
    names = [meta["means"]["files"][0], meta["means"]["files"][1], meta["quats"]["files"][0],
             meta["scales"]["files"][0], meta["sh0"]["files"][0]]
    shn = meta.get("shN")
    if shn is not None:
        names.append(shn["files"][1])
    imgs = {}
    shape = None
    for name in names:
        img = _image(path, members, name, n)
        if shape is None:
            shape = img.shape
            if shape[0] * shape[1] < n:
                raise SceneError(f"{path}: {name} is {shape[1]}x{shape[0]} = {shape[0] * shape[1]} pixels, "
                                 f"fewer than count {n}")
        elif img.shape != shape:
            raise SceneError(f"{path}: {name} is {img.shape[1]}x{img.shape[0]} but {names[0]} is "
                             f"{shape[1]}x{shape[0]}")
        imgs[name] = img.reshape(-1, 4)[:n]

    lo, hi = imgs[names[0]].astype(np.int64), imgs[names[1]].astype(np.int64)
    q16 = lo[:, :3] | (hi[:, :3] << 8)
    mins, maxs = meta["means"]["mins"], meta["means"]["maxs"]
    span = np.where(maxs - mins == 0, 1.0, maxs - mins)
    v = mins + span * (q16 / 65535.0)
    e = np.exp(np.abs(v)) - 1.0
    means = np.where(v < 0, -e, e).astype(np.float32)

    qb = imgs[names[2]]
    mode = qb[:, 3].astype(np.int64) - QUAT_MODE
    bad = np.flatnonzero((mode < 0) | (mode > 3))
    if len(bad):
        raise SceneError(f"{path}: {names[2]}: alpha {qb[bad[0], 3]} at Gaussian {bad[0]} is not a "
                         f"quaternion mode (252-255)")
    abc = (qb[:, :3] / 255.0 * 2.0 - 1.0) / SQRT2
    t = 1.0 - (abc[:, 0] * abc[:, 0] + abc[:, 1] * abc[:, 1] + abc[:, 2] * abc[:, 2])
    quats = np.empty((n, 4), np.float32)
    np.put_along_axis(quats, _KEPT[mode], abc.astype(np.float32), axis=1)
    quats[np.arange(n), mode] = np.sqrt(np.maximum(0.0, t))

    scales = meta["scales"]["codebook"].astype(np.float32)[imgs[names[3]][:, :3]]
    c0 = imgs[names[4]]
    a = np.clip(c0[:, 3] / 255.0, 1e-6, 1.0 - 1e-6)
    opacities = np.log(a / (1.0 - a)).astype(np.float32)
    degree = 0 if shn is None else shn["bands"]
    sh = np.zeros((n, (degree + 1) ** 2, 3), np.float32)
    sh[:, 0, :] = meta["sh0"]["codebook"].astype(np.float32)[c0[:, :3]]
    if shn is not None:
        coeffs = SH_COEFFS[degree]
        labels = imgs[names[5]][:, 0].astype(np.int64) | (imgs[names[5]][:, 1].astype(np.int64) << 8)
        bad = np.flatnonzero(labels >= shn["count"])
        if len(bad):
            raise SceneError(f"{path}: {names[5]}: label {labels[bad[0]]} at Gaussian {bad[0]} is outside "
                             f"the palette of {shn['count']}")
        rows = -(-shn["count"] // PALETTE_ROW)
        cen = _image(path, members, shn["files"][0], rows * PALETTE_ROW * coeffs)
        if cen.shape[1] != PALETTE_ROW * coeffs or cen.shape[0] < rows:
            raise SceneError(f"{path}: {shn['files'][0]} is {cen.shape[1]}x{cen.shape[0]}; a palette of "
                             f"{shn['count']} with {degree} bands needs {PALETTE_ROW * coeffs}x{rows}")
        entries = cen[:rows].reshape(rows * PALETTE_ROW, coeffs, 4)[:, :, :3]   # [entry, coeff, channel]
        sh[:, 1:, :] = shn["codebook"].astype(np.float32)[entries[labels]]
    return Scene(means, scales, quats, opacities, sh, None, str(path))


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
