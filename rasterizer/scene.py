"""Gaussian scenes: the in-memory layout and PLY / antimatter15 ``.splat`` I/O.

A :class:`Scene` keeps the values exactly as an INRIA / nerfstudio PLY stores them
(log scales, logit opacities, raw ``w, x, y, z`` quaternions, SH coefficients), so that
reading and writing a PLY is lossless. Rendering activates them (``exp``, ``sigmoid``,
normalisation) in :func:`rasterizer.stages.activate`.
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement, PlyParseError

from .errors import SceneError

log = logging.getLogger(__name__)

SH_C0 = 0.28209479177387814
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

    def subset(self, index) -> "Scene":
        """The Gaussians selected by a boolean mask or an index array, same file of origin."""
        return Scene(self.means[index], self.scales[index], self.quats[index], self.opacities[index],
                     self.sh[index], None if self.normals is None else self.normals[index], self.source)

    def sigmoid_opacities(self) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.opacities.astype(np.float64)))


# --------------------------------------------------------------------------- loading

def load_scene(path: str | os.PathLike) -> Scene:
    """Load a PLY, SOG (bundle, meta.json or its folder) or ``.splat`` scene, told by content.

    PLY and SOG are recognised by their first bytes; ``.splat`` has no header and goes by its name.
    """
    from .sog import is_sog, read_sog  # sog builds on this module

    path = Path(path)
    if not path.exists():
        raise SceneError(f"{path}: no such file")
    if path.is_dir():
        if is_sog(path):
            return read_sog(path)
        raise SceneError(f"{path}: a folder without a SOG meta.json, not a scene file")
    if not path.is_file():
        raise SceneError(f"{path}: not a file")
    with open(path, "rb") as f:
        magic = f.read(4)
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

    Normals are optional, extra properties are ignored, the SH degree follows from the
    number of ``f_rest_*`` properties (channel-major). Rows with any non-finite value are
    dropped and counted in the log.
    """
    path = Path(path)
    data = open_vertices(path, REQUIRED)
    names = set(data.dtype.names or ())
    n_rest = sum(1 for p in names if p.startswith("f_rest_"))
    if n_rest not in F_REST_COUNT:
        raise SceneError(f"{path}: {n_rest} f_rest properties; expected 0, 9, 24 or 45 (SH degree 0-3)")
    rest_names = [f"f_rest_{i}" for i in range(n_rest)]
    if any(p not in names for p in rest_names):
        raise SceneError(f"{path}: f_rest properties are not numbered 0..{n_rest - 1}")
    n = len(data)
    if n == 0:
        raise SceneError(f"{path}: the PLY holds zero Gaussians")
    has_normals = all(p in names for p in ("nx", "ny", "nz"))

    try:
        def cols(props):
            out = np.empty((n, len(props)), np.float32)
            for i, p in enumerate(props):  # one column at a time keeps the peak at one copy
                out[:, i] = data[p]
            return out

        means = cols(("x", "y", "z"))
        scales = cols(("scale_0", "scale_1", "scale_2"))
        quats = cols(("rot_0", "rot_1", "rot_2", "rot_3"))
        opac = np.asarray(data["opacity"], dtype=np.float32).copy()
        k = (F_REST_COUNT[n_rest] + 1) ** 2
        sh = np.empty((n, k, 3), np.float32)
        for c in range(3):
            sh[:, 0, c] = data[f"f_dc_{c}"]
            for j in range(k - 1):  # channel-major: f_rest_{c*(k-1)+j} is coefficient j+1 of channel c
                sh[:, j + 1, c] = data[f"f_rest_{c * (k - 1) + j}"]
        normals = cols(("nx", "ny", "nz")) if has_normals else None
    except ValueError as e:  # a truncated body shows up when the memmap is read
        raise SceneError(f"{path}: truncated or corrupt PLY body ({_one_line(e)})") from None
    finally:
        del data

    scene = Scene(means, scales, quats, opac, sh, normals, str(path))
    return _drop_non_finite(scene, path)


def open_vertices(path: Path, required) -> np.ndarray:
    """The PLY's ``vertex`` records, memory-mapped (parsed by plyfile), with ``required`` present."""
    try:
        ply = PlyData.read(str(path), mmap=True)
    except FileNotFoundError:
        raise SceneError(f"{path}: no such file") from None
    except (PlyParseError, ValueError, UnicodeDecodeError, IndexError, TypeError, OSError) as e:
        raise SceneError(f"{path}: not a readable PLY file ({_one_line(e)})") from None
    try:
        data = ply["vertex"].data
    except KeyError:
        raise SceneError(f"{path}: PLY has no 'vertex' element") from None
    names = set(data.dtype.names or ())
    missing = [p for p in required if p not in names]
    if missing:
        raise SceneError(f"{path}: PLY vertex element lacks required properties: {', '.join(missing)}")
    return data


def load_splat(path: str | os.PathLike) -> Scene:
    """Read an antimatter15 ``.splat`` (32 bytes a Gaussian, SH degree 0) into raw PLY values."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise SceneError(f"{path}: the .splat file holds zero Gaussians")
    if size % SPLAT_RECORD.itemsize:
        raise SceneError(f"{path}: {size} bytes is not a whole number of 32-byte .splat records "
                         "(truncated or not a .splat file)")
    rec = np.fromfile(path, dtype=SPLAT_RECORD)
    means = np.ascontiguousarray(rec["pos"], dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        scales = np.log(rec["scale"].astype(np.float64)).astype(np.float32)
    rgba = rec["rgba"].astype(np.float64) / 255.0
    sh = ((rgba[:, None, :3] - 0.5) / SH_C0).astype(np.float32)
    a = np.clip(rgba[:, 3], 1e-7, 1.0 - 1e-7)  # 0 and 255 have no finite logit
    opac = np.log(a / (1.0 - a)).astype(np.float32)
    quats = ((rec["rot"].astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    scene = Scene(means, scales, quats, opac, sh, None, str(path))
    return _drop_non_finite(scene, path)


def _drop_non_finite(scene: Scene, path: Path) -> Scene:
    ok = (np.isfinite(scene.means).all(1) & np.isfinite(scene.scales).all(1)
          & np.isfinite(scene.quats).all(1) & np.isfinite(scene.opacities)
          & np.isfinite(scene.sh).all((1, 2)))
    ok &= np.einsum("ij,ij->i", scene.quats, scene.quats) > 0  # a zero quaternion has no rotation
    dropped = int(len(ok) - ok.sum())
    if dropped:
        log.warning("%s: dropped %d of %d Gaussians with non-finite values or a zero quaternion",
                    path, dropped, len(ok))
        scene = scene.subset(ok)
        if len(scene) == 0:
            raise SceneError(f"{path}: every Gaussian has non-finite values")
    return scene


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


def atomic_write(path: Path, write) -> Path:
    """Run ``write(fileobj)`` into a temp file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
