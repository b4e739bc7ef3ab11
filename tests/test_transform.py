"""Moving scenes between frames: SH band rotation is exact, renders agree before and after."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_images_agree, psnr, scene_path

from rasterizer import Camera, render
from rasterizer.errors import SceneError
from rasterizer.preview import preview_cameras, robust_bounds
from rasterizer.scene import Scene, load_scene, save_ply
from rasterizer.sh import sh_basis
from rasterizer.transform import (
    COLMAP_TO_NERFSTUDIO,
    Similarity,
    from_matrix,
    matrix_to_quat,
    quat_multiply,
    rotate_sh,
    sh_band_matrices,
    transform_camera,
    transform_scene,
)

SIZE = (240, 136)


def random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def quat_to_matrix(q) -> np.ndarray:
    w, x, y, z = np.asarray(q, np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def sh_color(sh: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Raw SH colour (before +0.5 and the clamp) of each Gaussian along its direction."""
    return np.einsum("nk,nkc->nc", sh_basis(dirs, int(round(np.sqrt(sh.shape[1]))) - 1), sh.astype(np.float64))


# --------------------------------------------------------------------------- the SH algebra

@pytest.mark.parametrize("seed", range(5))
def test_band_matrices_are_orthogonal_and_exact(seed):
    rng = np.random.default_rng(seed)
    r = random_rotation(rng)
    mats = sh_band_matrices(r, 3)
    dirs = rng.normal(size=(500, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    b, b_rot = sh_basis(dirs, 3), sh_basis(dirs @ r.T, 3)
    for l, d in enumerate(mats):
        assert d.shape == (2 * l + 1, 2 * l + 1)
        np.testing.assert_allclose(d @ d.T, np.eye(2 * l + 1), atol=1e-12)
        sl = slice(l * l, (l + 1) ** 2)
        np.testing.assert_allclose(b_rot[:, sl], b[:, sl] @ d.T, atol=1e-12)  # at directions not fitted


def test_band_matrices_compose_like_rotations():
    rng = np.random.default_rng(7)
    a, b = random_rotation(rng), random_rotation(rng)
    for da, db, dab in zip(sh_band_matrices(a, 3), sh_band_matrices(b, 3), sh_band_matrices(a @ b, 3)):
        np.testing.assert_allclose(da @ db, dab, atol=1e-12)


def test_band_1_is_the_rotation_itself_in_inrias_order():
    """Band 1 is (−C1·y, C1·z, −C1·x): its matrix is R permuted and signed accordingly."""
    r = random_rotation(np.random.default_rng(3))
    p = np.array([[0, -1, 0], [0, 0, 1], [-1, 0, 0]], float)  # Y1 = C1 · p @ d
    np.testing.assert_allclose(sh_band_matrices(r, 1)[1], p @ r @ p.T, atol=1e-12)


@pytest.mark.parametrize("which", ["demo", "real"])
def test_colour_along_every_direction_survives_the_rotation(which, demo):
    """Per Gaussian: colour of the rotated SH along R·d equals the original along d (float32 exact)."""
    scene = demo if which == "demo" else load_scene(scene_path("loadersgl-train-1000.ply"))
    assert scene.sh_degree == 3
    rng = np.random.default_rng(11)
    r = random_rotation(rng)
    d = rng.normal(size=(len(scene), 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    before = sh_color(scene.sh, d)
    after = sh_color(rotate_sh(scene.sh, r), d @ r.T)
    scale = float(np.abs(scene.sh).max())
    np.testing.assert_allclose(after, before, atol=2e-6 * scale)


def test_degree_0_and_lower_degrees_pass_through():
    rng = np.random.default_rng(0)
    r = random_rotation(rng)
    for k in (1, 4, 9):
        sh = rng.normal(size=(50, k, 3)).astype(np.float32)
        out = rotate_sh(sh, r)
        np.testing.assert_array_equal(out[:, 0], sh[:, 0])
        d = rng.normal(size=(50, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        np.testing.assert_allclose(sh_color(out, d @ r.T), sh_color(sh, d), atol=1e-5)


# --------------------------------------------------------------------------- quaternions and matrices

def test_quaternion_composition_matches_matrices():
    rng = np.random.default_rng(5)
    for _ in range(20):
        r = random_rotation(rng)
        q = matrix_to_quat(r)
        np.testing.assert_allclose(quat_to_matrix(q), r, atol=1e-12)
        p = rng.normal(size=4) * 1.7  # raw, not unit: the length is kept
        out = quat_multiply(q, p)
        assert np.linalg.norm(out) == pytest.approx(np.linalg.norm(p))
        np.testing.assert_allclose(quat_to_matrix(out), r @ quat_to_matrix(p), atol=1e-12)


def test_from_matrix_splits_rotation_scale_translation_and_inverts():
    rng = np.random.default_rng(2)
    r, t = random_rotation(rng), rng.normal(size=3)
    m = np.hstack([2.0 * r, t[:, None]])
    sim = from_matrix(m)
    assert sim.scale == pytest.approx(2.0)
    np.testing.assert_allclose(sim.matrix()[:3], m, atol=1e-12)
    np.testing.assert_allclose(sim.compose(sim.inverse()).matrix(), np.eye(4), atol=1e-12)
    p = rng.normal(size=(10, 3))
    np.testing.assert_allclose(sim.inverse().apply(sim.apply(p)), p, atol=1e-12)
    assert from_matrix(np.eye(4)).is_identity


@pytest.mark.parametrize("m, needle", [
    ([[-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], "reflection"),
    ([[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], "non-uniform scale"),
    ([[1, 0, 0], [0, 1, 0]], "3x4 or 4x4"),
    ([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1]], "last row"),
    ("nonsense", "not a numeric matrix"),
])
def test_from_matrix_rejects_what_cannot_move_gaussians(m, needle):
    with pytest.raises(SceneError, match=needle):
        from_matrix(m, "applied_transform")


# --------------------------------------------------------------------------- renders agree

def cameras_around(scene: Scene) -> list[Camera]:
    cams = list(preview_cameras(scene, size=SIZE).values())
    b = robust_bounds(scene)
    c, e = b.center, float(np.max(b.extent))
    cams.append(Camera.look_at(c + np.array([0.35, 0.12, 0.25]) * e, c, [0, 1, 0], 70, *SIZE))  # inside-ish
    return cams


def nerfstudio_and_domain(scene: Scene, sim: Similarity):
    """``scene`` as nerfstudio's training frame holds it, and the pipeline's rotation back."""
    trained = transform_scene(scene, sim)
    return trained, transform_scene(trained, sim.inverse())


@pytest.mark.parametrize("which", ["demo", "real"])
@pytest.mark.parametrize("transform", ["nerfstudio", "similarity"])
def test_render_before_equals_render_after(which, transform, demo):
    """Render of splat.ply from C = render of splat_rot.ply from the transformed C (PSNR ≥ 50 dB)."""
    scene = demo if which == "demo" else load_scene(scene_path("loadersgl-train-1000.ply"))
    if transform == "nerfstudio":
        sim = from_matrix(COLMAP_TO_NERFSTUDIO).inverse()   # what the rotate step applies
    else:
        rng = np.random.default_rng(4)
        sim = Similarity(random_rotation(rng), 0.4, rng.normal(size=3))
    moved = transform_scene(scene, sim)
    for cam in cameras_around(scene):
        a = render(scene, cam, backend="cpu")
        b = render(moved, transform_camera(cam, sim), backend="cpu")
        assert a.alpha.mean() > 0.005, "camera sees nothing: the test would be vacuous"
        assert_images_agree(a, b, 50.0, f"{which}/{transform}")


def test_render_differs_without_the_sh_rotation(demo):
    """Control: moving positions and quaternions but not SH bands 1-3 fails the 50 dB bar,
    so the test above really checks the view-dependent colour."""
    sim = from_matrix(COLMAP_TO_NERFSTUDIO).inverse()
    moved = transform_scene(demo, sim)
    wrong = Scene(moved.means, moved.scales, moved.quats, moved.opacities, demo.sh, moved.normals)
    cam = cameras_around(demo)[2]
    a = render(demo, cam, backend="cpu")
    assert psnr(a.rgb, render(wrong, transform_camera(cam, sim), backend="cpu").rgb) < 35.0
    assert psnr(a.rgb, render(moved, transform_camera(cam, sim), backend="cpu").rgb) >= 50.0


def test_rotated_scene_survives_the_ply_round_trip(tmp_path):
    scene = load_scene(scene_path("loadersgl-train-1000.ply"))
    moved = transform_scene(scene, from_matrix(COLMAP_TO_NERFSTUDIO).inverse())
    back = load_scene(save_ply(moved, tmp_path / "splat_rot.ply"))
    for f in ("means", "scales", "quats", "opacities", "sh", "normals"):
        np.testing.assert_array_equal(getattr(back, f), getattr(moved, f))
    # the axis swap only permutes and negates: positions are exact
    np.testing.assert_array_equal(back.means, np.stack([scene.means[:, 0], -scene.means[:, 2],
                                                        scene.means[:, 1]], axis=1))
