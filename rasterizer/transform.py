"""Moving a Gaussian scene by a similarity transform (rotation, uniform scale, translation).

``p' = s·R·p + t`` moves every Gaussian so that the new scene, seen from the moved camera,
renders the same image as the old one:

- positions ``s·R·p + t``, normals ``R·n``;
- log scales ``+ log s``; quaternions ``q_R ⊗ q`` (raw length kept);
- view-dependent colour: SH band l (l = 1..3) holds 2l+1 coefficients per channel that
  transform by a (2l+1)×(2l+1) orthogonal matrix. We obtain it from the basis itself: the
  real SH of band l at ``R·d`` are a fixed linear mix of those at ``d``, so evaluating the
  basis (INRIA's, :mod:`rasterizer.sh`) at fixed directions and their rotations and solving
  the least-squares system gives that mix exactly (to float64 rounding) — no Wigner-D sign
  conventions to get wrong. Band 0 is invariant.

nerfstudio's ``applied_transform`` (``transforms.json``) maps the COLMAP/domain frame to its
training frame; the pipeline's ``rotate`` step applies its inverse (:func:`from_matrix`,
:meth:`Similarity.inverse`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .camera import Camera
from .errors import SceneError
from .scene import Scene
from .sh import sh_basis

#: nerfstudio's fixed COLMAP → nerfstudio axis swap (``colmap_utils.colmap_to_json``): x, z, −y
COLMAP_TO_NERFSTUDIO = np.array([[1.0, 0.0, 0.0, 0.0],
                                 [0.0, 0.0, 1.0, 0.0],
                                 [0.0, -1.0, 0.0, 0.0]])


@dataclass(frozen=True)
class Similarity:
    rotation: np.ndarray      # (3, 3) proper rotation
    scale: float              # uniform, > 0
    translation: np.ndarray   # (3,)

    def matrix(self) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m

    def inverse(self) -> Similarity:
        rt = self.rotation.T
        return Similarity(rt, 1.0 / self.scale, -(rt @ self.translation) / self.scale)

    def compose(self, first: Similarity) -> Similarity:
        """``self ∘ first``: apply ``first``, then ``self``."""
        return Similarity(self.rotation @ first.rotation, self.scale * first.scale,
                          self.scale * (self.rotation @ first.translation) + self.translation)

    def apply(self, points: np.ndarray) -> np.ndarray:
        return self.scale * (np.asarray(points, np.float64) @ self.rotation.T) + self.translation

    @property
    def is_identity(self) -> bool:
        return (np.allclose(self.rotation, np.eye(3), atol=1e-12) and abs(self.scale - 1.0) < 1e-12
                and np.allclose(self.translation, 0.0, atol=1e-12))


def from_matrix(m, what: str = "transform") -> Similarity:
    """A 3x4 or 4x4 ``[s·R | t]`` as a :class:`Similarity`; anything else is a :class:`SceneError`."""
    try:
        a = np.asarray(m, dtype=np.float64)
    except (TypeError, ValueError):
        raise SceneError(f"{what}: not a numeric matrix") from None
    if a.shape not in ((3, 4), (4, 4)) or not np.isfinite(a).all():
        raise SceneError(f"{what}: expected a finite 3x4 or 4x4 matrix, got shape {a.shape}")
    if a.shape == (4, 4) and not np.allclose(a[3], [0, 0, 0, 1]):
        raise SceneError(f"{what}: last row must be 0 0 0 1 (projective transforms are not supported)")
    lin = a[:3, :3]
    det = float(np.linalg.det(lin))
    if det <= 0:
        raise SceneError(f"{what}: determinant {det:.6g} ≤ 0 (a reflection or degenerate matrix cannot "
                         "move Gaussians)")
    s = det ** (1.0 / 3.0)
    r = lin / s
    if not np.allclose(r @ r.T, np.eye(3), atol=1e-5):
        raise SceneError(f"{what}: not a rotation with a uniform scale (non-uniform scale or shear)")
    u, _, vt = np.linalg.svd(r)  # snap to the nearest rotation (JSON rounding)
    return Similarity(u @ vt, s, a[:3, 3].copy())


# --------------------------------------------------------------------------- SH rotation

def _sample_dirs(n: int = 64) -> np.ndarray:
    """Fixed, well-spread unit directions (Fibonacci sphere)."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = np.pi * (1.0 + 5 ** 0.5) * i
    rho = np.sqrt(1.0 - z * z)
    return np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=1)


def sh_band_matrices(rotation: np.ndarray, degree: int) -> list[np.ndarray]:
    """``D[l]`` (l = 0..degree) with ``Y_l(R·d) = D[l] @ Y_l(d)`` for INRIA's real SH basis."""
    r = np.asarray(rotation, np.float64)
    dirs = _sample_dirs()
    b = sh_basis(dirs, degree)
    b_rot = sh_basis(dirs @ r.T, degree)
    out = []
    for l in range(degree + 1):
        sl = slice(l * l, (l + 1) * (l + 1))
        dt, *_ = np.linalg.lstsq(b[:, sl], b_rot[:, sl], rcond=None)  # b_rot = b @ D^T
        out.append(dt.T)
    return out


def rotate_sh(sh: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """SH coefficients (N, K, 3) of Gaussians turned by ``rotation``: the colour seen along
    ``R·d`` afterwards is the colour seen along ``d`` before."""
    degree = int(round(np.sqrt(sh.shape[1]))) - 1
    out = np.array(sh, dtype=np.float32, copy=True)
    if degree == 0:
        return out
    # new coeffs c' with Σ c'·Y(d') = Σ c·Y(Rᵀd')  →  c'_l = D_l(Rᵀ)ᵀ c_l
    mats = sh_band_matrices(np.asarray(rotation, np.float64).T, degree)
    for l in range(1, degree + 1):
        sl = slice(l * l, (l + 1) * (l + 1))
        m = mats[l].T.astype(np.float32)
        out[:, sl, :] = np.matmul(m, out[:, sl, :])
    return out


# --------------------------------------------------------------------------- scene and camera

def matrix_to_quat(r: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a rotation matrix (Shepperd's method, w ≥ 0)."""
    r = np.asarray(r, np.float64)
    tr = np.trace(r)
    cands = np.array([tr, r[0, 0], r[1, 1], r[2, 2]])
    k = int(np.argmax(cands))
    if k == 0:
        w = np.sqrt(1.0 + tr) / 2.0
        q = [w, (r[2, 1] - r[1, 2]) / (4 * w), (r[0, 2] - r[2, 0]) / (4 * w), (r[1, 0] - r[0, 1]) / (4 * w)]
    else:
        i, j, l = k - 1, k % 3, (k + 1) % 3
        v = np.zeros(3)
        v[i] = np.sqrt(1.0 + r[i, i] - r[j, j] - r[l, l]) / 2.0
        w = (r[l, j] - r[j, l]) / (4 * v[i])
        v[j] = (r[j, i] + r[i, j]) / (4 * v[i])
        v[l] = (r[l, i] + r[i, l]) / (4 * v[i])
        q = [w, *v]
    quat = np.array(q)
    quat /= np.linalg.norm(quat)
    return quat if quat[0] >= 0 else -quat


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a ⊗ b`` of (…, 4) w, x, y, z quaternions."""
    aw, ax, ay, az = np.moveaxis(np.asarray(a), -1, 0)
    bw, bx, by, bz = np.moveaxis(np.asarray(b), -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz,
                     aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def transform_scene(scene: Scene, sim: Similarity) -> Scene:
    """The scene moved by ``sim`` (see the module docstring); raw values stay raw.

    Raises ``ValueError`` when ``sim`` takes a finite position or scale beyond float32's range (a
    translation of 1e300, say): the moved scene could not be stored."""
    r = sim.rotation
    with np.errstate(over="ignore", invalid="ignore"):
        means = sim.apply(scene.means).astype(np.float32)
        scales = (scene.scales.astype(np.float64) + np.log(sim.scale)).astype(np.float32)
    lost = int(np.count_nonzero(~np.isfinite(means).all(1) | ~np.isfinite(scales).all(1)))
    if lost:
        raise ValueError(f"the transform moves {lost} of {len(scene)} Gaussians beyond float32's range "
                         f"(scale {sim.scale:.3g}, translation {np.abs(sim.translation).max():.3g})")
    quats = quat_multiply(matrix_to_quat(r), scene.quats.astype(np.float64)).astype(np.float32)
    normals = None if scene.normals is None else (scene.normals.astype(np.float64) @ r.T).astype(np.float32)
    sh = rotate_sh(scene.sh, r)
    return Scene(means, scales, quats, scene.opacities.copy(), sh, normals, scene.source)


def transform_camera(cam: Camera, sim: Similarity) -> Camera:
    """The camera that sees ``transform_scene(scene, sim)`` as ``cam`` sees ``scene``.

    With a scale the camera frame is scaled too, which a pinhole projection does not see; an
    orthographic one's pixels per unit shrink by the scale.
    """
    w2c = cam.world_to_camera
    inv = sim.inverse()
    new = np.eye(4)
    new[:3, :3] = w2c[:3, :3] @ inv.rotation
    new[:3, 3] = (w2c[:3, :3] @ inv.translation + w2c[:3, 3]) * sim.scale
    k = 1.0 / sim.scale if cam.is_ortho else 1.0
    return Camera(cam.width, cam.height, cam.fx * k, cam.fy * k, cam.cx, cam.cy, new, cam.model)
