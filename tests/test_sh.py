"""The SH evaluations against rasterizer/sh.py, for every degree, in every language.

sh.py (NumPy) is the definition: checked here to be an orthonormal real SH basis with the right
parity per band, and, where gsplat 1.4.0 is importable, to give gsplat's own SH sums. The numba
kernel runs on every CI run; the CUDA one (sh.cuh, used by the SH kernel and the fused projection)
where CuPy sees a device.
"""
from __future__ import annotations

import numpy as np
import pytest

from rasterizer import stages
from rasterizer.backends import gpu_unavailable_reason
from rasterizer.camera import Camera
from rasterizer.scene import Scene
from rasterizer.sh import sh_basis

DEGREES = (0, 1, 2, 3)
REASON = gpu_unavailable_reason()


def sphere_quadrature(n_theta: int = 8, n_phi: int = 16):
    """Directions and weights integrating polynomials of degree <= 15 exactly over the unit sphere."""
    u, wu = np.polynomial.legendre.leggauss(n_theta)             # u = cos(theta)
    phi = 2 * np.pi * np.arange(n_phi) / n_phi
    U, P = np.meshgrid(u, phi, indexing="ij")
    s = np.sqrt(1 - U**2)
    dirs = np.stack([s * np.cos(P), s * np.sin(P), U], -1).reshape(-1, 3)
    weights = (wu[:, None] * np.full(n_phi, 2 * np.pi / n_phi)[None, :]).ravel()
    return dirs, weights


def test_basis_is_orthonormal_on_the_sphere():
    dirs, w = sphere_quadrature()
    Y = sh_basis(dirs, 3)                                          # (M, 16) float64
    gram = (Y * w[:, None]).T @ Y
    np.testing.assert_allclose(gram, np.eye(16), atol=1e-12)


def test_each_band_has_its_parity_and_lower_degrees_are_prefixes():
    rng = np.random.default_rng(1)
    d = rng.normal(size=(200, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    Y, Yneg = sh_basis(d, 3), sh_basis(-d, 3)
    for deg in DEGREES:
        band = slice(deg * deg, (deg + 1) ** 2)
        np.testing.assert_allclose(Yneg[:, band], (-1) ** deg * Y[:, band], atol=1e-15)
        np.testing.assert_array_equal(sh_basis(d, deg), Y[:, : (deg + 1) ** 2])


def random_scene(degree: int, n: int = 4000, seed: int = 0) -> Scene:
    rng = np.random.default_rng(seed + degree)
    k = (degree + 1) ** 2
    return Scene(rng.normal(size=(n, 3)).astype(np.float32) * 3, np.full((n, 3), -3.0, np.float32),
                 rng.normal(size=(n, 4)).astype(np.float32), np.full(n, 2.0, np.float32),
                 rng.normal(size=(n, k, 3)).astype(np.float32) * 0.5, None, f"random SH-{degree}")


CAM = Camera.look_at([0.3, 0.5, -12.0], [0, 0, 0], [0, 1, 0], 60.0, 96, 64)


@pytest.mark.parametrize("degree", DEGREES)
def test_numba_colors_match_sh_py(degree):
    from rasterizer.backends import cpu_numba
    g = stages.activate(random_scene(degree))
    np.testing.assert_allclose(cpu_numba.sh_colors(g, CAM), stages.sh_colors(g, CAM), atol=5e-6)


@pytest.mark.gpu
@pytest.mark.skipif(REASON is not None, reason=f"GPU backend unavailable: {REASON}")
@pytest.mark.parametrize("degree", DEGREES)
def test_cuda_colors_match_sh_py(degree):
    """sh_kernel for every Gaussian; the fused projection kernel for those that reach a pixel."""
    import cupy as cp

    from rasterizer.backends import gpu_cupy
    scene = random_scene(degree)
    ref = stages.sh_colors(stages.activate(scene), CAM)
    g = gpu_cupy.upload(scene)
    np.testing.assert_allclose(cp.asnumpy(gpu_cupy.sh_colors(g, CAM)), ref, atol=1e-5)
    proj, colors = gpu_cupy.project_and_color(g, CAM)
    used = cp.asnumpy(proj.counts) > 0
    assert used.sum() > 100
    np.testing.assert_allclose(cp.asnumpy(colors)[used], ref[used], atol=1e-5)


@pytest.mark.parametrize("degree", DEGREES)
def test_sh_py_gives_gsplats_sh_sums(degree):
    try:
        import torch
        from gsplat import spherical_harmonics
    except Exception as e:  # noqa: BLE001 - not installed, or its CUDA build fails
        pytest.skip(f"gsplat 1.4.0 not importable ({type(e).__name__}: {e})")
    if not torch.cuda.is_available():
        pytest.skip("gsplat's SH needs a CUDA device")
    rng = np.random.default_rng(degree)
    dirs = rng.normal(size=(500, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    coeffs = rng.normal(size=(500, (degree + 1) ** 2, 3))
    ours = np.einsum("nk,nkc->nc", sh_basis(dirs, degree), coeffs)
    theirs = spherical_harmonics(degree, torch.tensor(dirs, dtype=torch.float32, device="cuda"),
                                 torch.tensor(coeffs, dtype=torch.float32, device="cuda")).cpu().numpy()
    np.testing.assert_allclose(theirs, ours, atol=2e-5)
