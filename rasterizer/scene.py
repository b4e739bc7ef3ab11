"""Gaussian scenes: the in-memory layout and PLY / antimatter15 ``.splat`` I/O.

A :class:`Scene` keeps the values exactly as an INRIA / nerfstudio PLY stores them
(log scales, logit opacities, raw ``w, x, y, z`` quaternions, SH coefficients), so that
reading and writing a PLY is lossless. Rendering activates them (``exp``, ``sigmoid``,
normalisation) in :func:`rasterizer.stages.activate`.
"""
from __future__ import annotations

import io
import logging
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement, PlyListProperty, PlyParseError

from .errors import SceneError, one_line
from .sh import C0 as SH_C0

log = logging.getLogger(__name__)

#: bytes of records read and decoded at a time: small enough to stay in the CPU's cache
CHUNK_BYTES = 1 << 20
#: threads decoding a PLY's chunks at once (at most the CPUs there are)
LOAD_THREADS = 8
#: a PLY header longer than this is refused (real ones are a few KiB)
HEADER_MAX_BYTES = 1 << 20
#: number of ``f_rest_*`` properties for SH degree 0..3
F_REST_COUNT = {0: 0, 9: 1, 24: 2, 45: 3}
REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
            "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
PLY_MAGIC = (b"ply\n", b"ply\r")
SPLAT_RECORD = np.dtype([("pos", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])


@dataclass
class Scene:
    """N Gaussians, stored raw as in the PLY (see module docstring)."""

    means: np.ndarray        # (N, 3) float32 world positions
    scales: np.ndarray       # (N, 3) float32 log scales
    quats: np.ndarray        # (N, 4) float32 w, x, y, z, not necessarily unit length
    opacities: np.ndarray    # (N,)   float32 logits
    sh: np.ndarray           # (N, K, 3) float32, K = (degree + 1)^2; sh[:, 0] = f_dc
    normals: np.ndarray | None = None  # (N, 3) float32, carried through untouched
    source: str = field(default="<memory>", compare=False)

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        k = self.sh.shape[1] if self.sh.ndim == 3 else -1
        if (self.means.shape != (n, 3) or self.scales.shape != (n, 3) or self.quats.shape != (n, 4)
                or self.opacities.shape != (n,) or self.sh.shape != (n, k, 3)
                or k not in (1, 4, 9, 16)):
            raise ValueError(f"inconsistent Scene arrays: means {self.means.shape}, scales "
                             f"{self.scales.shape}, quats {self.quats.shape}, opacities "
                             f"{self.opacities.shape}, sh {self.sh.shape}")

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        return int(round(np.sqrt(self.sh.shape[1]))) - 1

    def subset(self, index) -> Scene:
        """The Gaussians selected by a boolean mask or an index array, same file of origin."""
        return Scene(self.means[index], self.scales[index], self.quats[index], self.opacities[index],
                     self.sh[index], None if self.normals is None else self.normals[index], self.source)

    def sigmoid_opacities(self) -> np.ndarray:
        with np.errstate(over="ignore"):  # a logit below about -709: exp is inf, the opacity 0
            return 1.0 / (1.0 + np.exp(-self.opacities.astype(np.float64)))


# --------------------------------------------------------------------------- loading

def load_scene(path: str | os.PathLike) -> Scene:
    """Load a PLY, SOG (bundle, meta.json or its folder) or ``.splat`` scene, told by content.

    PLY and SOG are recognised by their first bytes; ``.splat`` has no header and goes by its name.
    """
    from .sog import is_sog, read_sog  # sog builds on this module

    if os.fspath(path) in ("", b""):
        raise SceneError("the scene path is empty")
    path = Path(path)
    if not path.exists():
        raise SceneError(f"{path}: no such file")
    if path.is_dir():
        if is_sog(path):
            return read_sog(path)
        raise SceneError(f"{path}: a folder without a SOG meta.json, not a scene file")
    if not path.is_file():
        raise SceneError(f"{path}: not a file")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise SceneError(f"{path}: cannot read ({one_line(e.strerror or e)})") from None
    if magic in PLY_MAGIC:
        return load_ply(path)
    if is_sog(path):
        return read_sog(path)
    if path.suffix.lower() == ".splat":
        return load_splat(path)
    raise SceneError(f"{path}: not a PLY file (no 'ply' header), not a SOG (ZIP or meta.json) "
                     "and not a .splat file")


def load_ply(path: str | os.PathLike) -> Scene:
    """Read an INRIA / nerfstudio-export Gaussian PLY by property name.

    Normals are optional, extra properties and elements are ignored, the SH degree follows from
    the number of ``f_rest_*`` properties (channel-major). Rows with any non-finite value (or a
    zero quaternion) are dropped and counted in the log. The records are read a chunk at a time
    straight into the scene's arrays, several chunks at once in threads, so the peak memory is
    the scene plus one chunk per thread.
    """
    path = Path(path)
    vertices = open_vertices(path, REQUIRED)
    names = set(vertices.dtype.names or ())
    n_rest = sum(1 for p in names if p.startswith("f_rest_"))
    if n_rest not in F_REST_COUNT:
        raise SceneError(f"{path}: {n_rest} f_rest properties; expected 0, 9, 24 or 45 (SH degree 0-3)")
    if any(f"f_rest_{i}" not in names for i in range(n_rest)):
        raise SceneError(f"{path}: f_rest properties are not numbered 0..{n_rest - 1}")
    n = vertices.count
    if n == 0:
        raise SceneError(f"{path}: the PLY holds zero Gaussians")
    k = (F_REST_COUNT[n_rest] + 1) ** 2
    has_normals = all(p in names for p in ("nx", "ny", "nz"))
    # the PLY properties behind each array; sh[:, j, c] is f_dc_c (j = 0) or, channel-major,
    # f_rest_{c*(k-1) + j-1}
    sh_props = [[f"f_dc_{c}" if j == 0 else f"f_rest_{c * (k - 1) + j - 1}" for c in range(3)]
                for j in range(k)]
    props = {"means": ["x", "y", "z"], "scales": ["scale_0", "scale_1", "scale_2"],
             "quats": ["rot_0", "rot_1", "rot_2", "rot_3"], "opacities": "opacity", "sh": sh_props}
    if has_normals:
        props["normals"] = ["nx", "ny", "nz"]
    fields: Mapping = vertices.dtype.fields or {}
    lists = sorted(p for p in names if fields[p][0].kind not in "biuf"
                   and p in {q for v in props.values() for q in np.ravel(v)})
    if lists:
        raise SceneError(f"{path}: PLY vertex properties {', '.join(lists)} are lists, not numbers")
    columns = _Columns(vertices.dtype, props)
    rows = _Rows(n, k, has_normals)

    def decode(start: int, records: np.ndarray):
        block = columns.block(records)
        out = rows.at(start, len(block))
        for name, idx in columns.index.items():
            np.take(block, idx, axis=1, out=out[name])
        return rows.check(start, len(block))

    return rows.scene(path, vertices.decode_chunks(decode))


@dataclass
class VertexRecords:
    """The ``vertex`` element of a PLY, its header checked against the file's size.

    Binary records whose place in the file is known are read a chunk at a time (``offset`` set);
    otherwise (ASCII, list properties) plyfile has parsed them into ``parsed``.
    """

    path: Path
    count: int
    dtype: np.dtype                   # one record, byte order as stored
    offset: int | None = None         # byte offset of the first binary record
    parsed: np.ndarray | None = None  # the records, when plyfile parsed the body

    def decode_chunks(self, decode) -> list:
        """``decode(first_row, records)`` for each chunk of about :data:`CHUNK_BYTES` of records, in up
        to :data:`LOAD_THREADS` threads (reading a file and NumPy's copies release the GIL); the
        results in row order. Each thread reads its chunks into its own reused buffer."""
        offset = self.offset
        if offset is None:   # plyfile parsed the body
            if self.parsed is None or not len(self.parsed):
                return []
            with np.errstate(over="ignore", invalid="ignore"):
                return [decode(0, self.parsed)]
        size = self.dtype.itemsize
        rows = max(1, CHUNK_BYTES // size)
        starts = range(0, self.count, rows)
        local = threading.local()
        opened: list = []

        def one(start: int):
            if not hasattr(local, "file"):
                local.file = open(self.path, "rb")
                opened.append(local.file)
                local.raw = np.empty(min(rows, self.count) * size, np.uint8)
            want = min(rows, self.count - start) * size
            local.file.seek(offset + start * size)
            got = local.file.readinto(local.raw.data[:want])
            if got != want:  # the file shrank since its header was checked
                raise SceneError(f"{self.path}: truncated PLY body ({self.count} vertices declared, "
                                 f"the file ends inside vertex {start + got // size})")
            with np.errstate(over="ignore", invalid="ignore"):  # doubles beyond float32 become inf: dropped
                return decode(start, local.raw[:want].view(self.dtype))

        try:
            workers = min(LOAD_THREADS, os.cpu_count() or 1, len(starts))
            if workers <= 1:
                return [one(start) for start in starts]
            with ThreadPoolExecutor(workers, thread_name_prefix="ply-load") as pool:
                return list(pool.map(one, starts))
        finally:
            for f in opened:
                f.close()


def open_vertices(path: str | os.PathLike, required) -> VertexRecords:
    """The PLY's ``vertex`` records with the properties ``required`` present.

    plyfile parses the header (from at most :data:`HEADER_MAX_BYTES`); before any record is read,
    every element's count is checked against the bytes the file holds (binary: the exact record
    size; ASCII: at least two characters a value), so a lying header is refused with one line
    instead of an allocation it cannot back.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(HEADER_MAX_BYTES)
    except FileNotFoundError:
        raise SceneError(f"{path}: no such file") from None
    except OSError as e:
        raise SceneError(f"{path}: cannot read ({one_line(e.strerror or e)})") from None
    stream = io.BytesIO(head)
    try:
        ply = PlyData._parse_header(stream)  # plyfile's header parser, without reading any data
        elements = list(ply.elements)
        dtypes = [el.dtype(ply.byte_order) for el in elements]
    except (PlyParseError, ValueError, UnicodeDecodeError, TypeError) as e:
        if len(head) == HEADER_MAX_BYTES and b"end_header" not in head:
            raise SceneError(f"{path}: not a readable PLY file (no end_header in its first "
                             f"{HEADER_MAX_BYTES >> 10} KiB)") from None
        raise SceneError(f"{path}: not a readable PLY file ({one_line(e)})") from None
    header_len = stream.tell()
    _check_counts(path, ply, elements, size - header_len)
    vertex = [i for i, el in enumerate(elements) if el.name == "vertex"]
    if not vertex:
        raise SceneError(f"{path}: PLY has no 'vertex' element")
    v = vertex[0]
    el = elements[v]
    props = {p.name: p for p in el.properties}
    missing = [p for p in required if p not in props]
    if missing:
        raise SceneError(f"{path}: PLY vertex element lacks required properties: {', '.join(missing)}")
    lists = [p for p in required if isinstance(props[p], PlyListProperty)]
    if lists:
        raise SceneError(f"{path}: PLY vertex properties {', '.join(lists)} are lists, not numbers")
    if not ply.text and not any(_has_list(e) for e in elements[:v + 1]):
        offset = header_len + sum(e.count * dt.itemsize for e, dt in zip(elements[:v], dtypes[:v]))
        return VertexRecords(path, el.count, dtypes[v], offset=offset)
    try:  # ASCII, or list properties before or in the vertex records: plyfile parses the body
        parsed = PlyData.read(str(path), mmap=False)["vertex"].data
    except (PlyParseError, ValueError, UnicodeDecodeError, TypeError, IndexError, OSError) as e:
        raise SceneError(f"{path}: truncated or corrupt PLY body ({one_line(e)})") from None
    return VertexRecords(path, el.count, parsed.dtype, parsed=parsed)


def _has_list(element) -> bool:
    return any(isinstance(p, PlyListProperty) for p in element.properties)


def _check_counts(path: Path, ply: PlyData, elements, body_bytes: int) -> None:
    """Refuse negative counts and counts the body cannot hold, before anything is allocated."""
    need = 0
    for el in elements:
        if el.count < 0:
            raise SceneError(f"{path}: PLY header declares {el.count} {one_line(el.name)} entries")
        if ply.text:  # each value at least one character and a separator, a row at least a line end
            row = max(1, 2 * len(el.properties))
        else:         # lists may be empty: their length field only
            row = sum(np.dtype(p.len_dtype if isinstance(p, PlyListProperty) else p.val_dtype).itemsize
                      for p in el.properties)
        need += el.count * row
    if need - (1 if ply.text else 0) > body_bytes:  # an ASCII file may lack the last line end
        counts = ", ".join(f"{el.count} {one_line(el.name)}" for el in elements)
        exact = not ply.text and not any(_has_list(el) for el in elements)
        raise SceneError(f"{path}: truncated PLY (or a lying header): the header declares {counts}, which "
                         f"need {'' if exact else 'at least '}{need} bytes; the file holds {body_bytes} "
                         "after its header")


class _Columns:
    """Where the values of each scene array sit in a chunk of records.

    When every property of the record has one floating type (the usual all-float32 PLY), a chunk
    is viewed as a (rows, properties) matrix with no copy; otherwise the properties used are
    copied into a float32 matrix first. ``index`` maps an array name to its columns (any shape).
    """

    def __init__(self, dtype: np.dtype, props: dict):
        self.dtype = dtype
        used = sorted({p for v in props.values() for p in np.ravel(v)})
        names: tuple[str, ...] = dtype.names or ()
        fields: Mapping = dtype.fields or {}
        types = {fields[name][0] for name in names}
        first = next(iter(types)) if len(types) == 1 else None
        uniform = (first is not None and first.kind == "f" and dtype.itemsize == len(names) * first.itemsize
                   and all(fields[name][1] == i * first.itemsize for i, name in enumerate(names)))
        self.matrix_type = first if uniform else None
        self.used: list[str] = [] if uniform else used   # the columns copied when the records are not a matrix
        column = {name: i for i, name in enumerate(names if uniform else used)}
        self.index = {k: np.array(_positions(v, column), np.intp) for k, v in props.items()}

    def block(self, records: np.ndarray) -> np.ndarray:
        if self.matrix_type is not None:
            m = records.view(self.matrix_type).reshape(len(records), -1)
            return m if m.dtype == np.float32 else m.astype(np.float32)
        out = np.empty((len(records), len(self.used)), np.float32)
        for j, name in enumerate(self.used):
            out[:, j] = records[name]
        return out


def _positions(names, column: dict):
    """``names`` (a name, or nested lists of names) with each name replaced by its column."""
    return column[names] if isinstance(names, str) else [_positions(v, column) for v in names]


class _Rows:
    """The scene's arrays, filled a chunk at a time (chunks may arrive in any order, from several
    threads): :meth:`check` finds a chunk's rows with a non-finite value or a zero quaternion, and
    :meth:`scene` moves the good rows down over the dropped ones, in row order, without copying
    the arrays (nothing moves when every row is good)."""

    def __init__(self, n: int, k: int, normals: bool):
        self.n = n
        self.arrays = {"means": np.empty((n, 3), np.float32), "scales": np.empty((n, 3), np.float32),
                       "quats": np.empty((n, 4), np.float32), "opacities": np.empty(n, np.float32),
                       "sh": np.empty((n, k, 3), np.float32)}
        if normals:
            self.arrays["normals"] = np.empty((n, 3), np.float32)

    def at(self, start: int, rows: int) -> dict[str, np.ndarray]:
        """Views of the arrays where rows ``start .. start + rows`` go."""
        return {name: a[start:start + rows] for name, a in self.arrays.items()}

    def check(self, start: int, rows: int) -> tuple[int, int, np.ndarray | None]:
        """``(start, rows, ok)`` for rows just written: ``ok`` the mask of the good ones, None when all are."""
        s = slice(start, start + rows)
        checked = [self.arrays[name][s] for name in ("means", "scales", "quats", "opacities", "sh")]
        return start, rows, usable_rows(checked, self.arrays["quats"][s])

    def scene(self, path: Path, checks: list) -> Scene:
        """The scene of the good rows; ``checks`` are :meth:`check`'s results of every chunk."""
        kept = 0
        for start, rows, ok in sorted(checks, key=lambda c: c[0]):
            good = rows if ok is None else int(ok.sum())
            if ok is not None or kept != start:
                for arr in self.arrays.values():
                    arr[kept:kept + good] = arr[start:start + rows] if ok is None else arr[start:start + rows][ok]
            kept += good
        dropped = self.n - kept
        if dropped:
            log.warning("%s: dropped %d of %d Gaussians with non-finite values or a zero quaternion",
                        path, dropped, self.n)
            if kept == 0:
                raise SceneError(f"{path}: every Gaussian has non-finite values or a zero quaternion")
        a = {name: arr[:kept] for name, arr in self.arrays.items()}
        return Scene(a["means"], a["scales"], a["quats"], a["opacities"], a["sh"], a.get("normals"), str(path))


def usable_rows(arrays, quats: np.ndarray) -> np.ndarray | None:
    """The mask of the rows a scene keeps: every value of ``arrays`` (row-major, one row per Gaussian)
    finite and the quaternion (``quats``, (n, 4)) not zero; None when every row is usable."""
    nonzero = np.einsum("ij,ij->i", quats, quats) > 0  # a zero quaternion has no rotation
    # min and max are NaN or infinite exactly when some value is: one fast pass over each array
    if nonzero.all() and all(np.isfinite(a.min()) and np.isfinite(a.max()) for a in arrays):
        return None
    ok = nonzero
    for a in arrays:
        ok &= np.isfinite(a.reshape(len(a), -1)).all(1)
    return ok


def load_splat(path: str | os.PathLike) -> Scene:
    """Read an antimatter15 ``.splat`` (32 bytes a Gaussian, SH degree 0) into raw PLY values,
    a chunk of records at a time."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise SceneError(f"{path}: the .splat file holds zero Gaussians")
    if size % SPLAT_RECORD.itemsize:
        raise SceneError(f"{path}: {size} bytes is not a whole number of 32-byte .splat records "
                         "(truncated or not a .splat file)")
    n = size // SPLAT_RECORD.itemsize
    rows = _Rows(n, 1, normals=False)
    checks = []
    chunk = CHUNK_BYTES // SPLAT_RECORD.itemsize
    buf = np.empty(min(chunk, n), SPLAT_RECORD)
    with open(path, "rb") as f, np.errstate(divide="ignore", invalid="ignore"):
        for start in range(0, n, chunk):
            r = min(chunk, n - start)
            got = f.readinto(buf.view(np.uint8).data[:r * SPLAT_RECORD.itemsize])
            if got != r * SPLAT_RECORD.itemsize:
                raise SceneError(f"{path}: the file shrank while it was read")
            rec, out = buf[:r], rows.at(start, r)
            out["means"][:] = rec["pos"]
            out["scales"][:] = np.log(rec["scale"].astype(np.float64))
            rgba = rec["rgba"].astype(np.float64) / 255.0
            out["sh"][:, 0, :] = (rgba[:, :3] - 0.5) / SH_C0
            a = np.clip(rgba[:, 3], 1e-7, 1.0 - 1e-7)  # 0 and 255 have no finite logit
            out["opacities"][:] = np.log(a / (1.0 - a))
            out["quats"][:] = (rec["rot"].astype(np.float32) - 128.0) / 128.0
            checks.append(rows.check(start, r))
    return rows.scene(path, checks)


# --------------------------------------------------------------------------- writing

def save_ply(scene: Scene, path: str | os.PathLike) -> Path:
    """Write ``scene`` as an INRIA-layout binary PLY (atomically: temp name, then rename)."""
    path = Path(path)
    n, k = len(scene), scene.sh.shape[1]
    props = ["x", "y", "z"]
    if scene.normals is not None:
        props += ["nx", "ny", "nz"]
    props += [f"f_dc_{i}" for i in range(3)] + [f"f_rest_{i}" for i in range(3 * (k - 1))]
    props += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    columns = [scene.means]
    if scene.normals is not None:
        columns.append(scene.normals)
    columns += [scene.sh[:, 0, :], scene.sh[:, 1:, :].transpose(0, 2, 1).reshape(n, -1),
                scene.opacities[:, None], scene.scales, scene.quats]
    flat = np.concatenate([np.asarray(c, np.float32) for c in columns], axis=1)
    records = flat.view(np.dtype([(p, "<f4") for p in props])).reshape(n)
    return atomic_write(path, lambda f: PlyData([PlyElement.describe(records, "vertex")]).write(f))


@contextmanager
def staged_file(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary name beside ``path`` for a writer to fill: renamed onto ``path`` (with the usual mode)
    when the block ends normally, removed when it raises. No reader ever sees a half-written ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Run ``write(fileobj)`` into a temp file beside ``path``, then rename it into place."""
    with staged_file(path) as tmp, open(tmp, "wb") as f:
        write(f)
    return Path(path)


def current_umask() -> int:
    """The process's umask (new outputs get ``0o666 & ~umask``, folders ``0o777 & ~umask``)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
