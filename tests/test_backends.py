"""Every CPU backend against the NumPy reference on the real scenes, and repeatability."""
from __future__ import annotations

import numpy as np
import pytest
from cameras import cameras_for
from conftest import SCENE_FILES, assert_images_agree, scene_path

from rasterizer.backends import available
from rasterizer.render import Prepared
from rasterizer.scene import load_scene

SCENES = list(SCENE_FILES)


@pytest.fixture(scope="module", params=SCENES)
def scene_and_refs(request):
    scene = load_scene(scene_path(request.param))
    size = (517, 389) if len(scene) < 200_000 else (320, 240)
    cams = cameras_for(scene, size=size)
    ref = Prepared(scene, "numpy")
    return request.param, scene, cams, {name: ref.render(cam) for name, cam in cams.items()}


def test_numba_matches_reference(scene_and_refs):
    name, scene, cams, refs = scene_and_refs
    cpu = Prepared(scene, "cpu")
    for view, cam in cams.items():
        assert_images_agree(cpu.render(cam), refs[view], what=f"{name} {view}")


def test_reference_views_are_meaningful(scene_and_refs):
    """Guards the agreement test against comparing blank images: only 'away' may be empty."""
    name, _, _, refs = scene_and_refs
    for view, img in refs.items():
        covered = float((img.alpha > 0.05).mean())
        if view == "away":
            assert img.alpha.max() == 0.0 and img.rgb.max() == 0.0, f"{name}: 'away' view is not blank"
        elif view != "far":
            assert covered > 0.005, f"{name} {view}: only {covered:.1%} of pixels covered"
    assert refs["far"].alpha.max() > 0, f"{name}: far view shows nothing"


@pytest.mark.parametrize("backend", [b for b in available() if b != "gpu"])
def test_same_input_same_output_bit_for_bit(backend):
    scene = load_scene(scene_path("v3dg-donut-fused.ply"))
    cam = cameras_for(scene, size=(200, 150))["oblique"]
    runs = [Prepared(scene, backend).render(cam, (0.1, 0.2, 0.3)) for _ in range(3)]
    for r in runs[1:]:
        assert np.array_equal(r.rgb, runs[0].rgb) and np.array_equal(r.alpha, runs[0].alpha)


def test_loading_and_the_numpy_backend_never_import_numba(tmp_path):
    """Only the chosen backend's module is imported: reading every scene format, writing a SOG on the CPU and
    rendering with the NumPy reference leave numba (0.3 s of start-up, 0.4x a 1M SH-3 PLY of resident pages)
    unimported. The GPU preview counts on it (its end-to-end time is mostly start-up), and so does the SOG
    writer's peak memory."""
    import subprocess
    import sys

    from rasterizer.demo import demo_scene
    from rasterizer.scene import save_ply
    from rasterizer.splatfile import convert

    save_ply(demo_scene().subset(np.arange(2000)), tmp_path / "s.ply")
    convert(tmp_path / "s.ply", tmp_path / "s.splat")
    code = (
        "import sys\n"
        "from rasterizer.cli import main\n"
        "from rasterizer.scene import load_scene\n"
        f"load_scene({str(tmp_path / 's.splat')!r})\n"
        f"assert main(['convert', {str(tmp_path / 's.ply')!r}, {str(tmp_path / 's.sog')!r}, '--device', 'cpu']) == 0\n"
        f"load_scene({str(tmp_path / 's.sog')!r})\n"
        f"rc = main(['preview', {str(tmp_path / 's.ply')!r}, '--out', {str(tmp_path / 'out')!r},"
        " '--backend', 'numpy', '--size', '64x48'])\n"
        "assert rc == 0, rc\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'cupy')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["preview_angle.jpg", "preview_top.jpg"]


@pytest.mark.parametrize("backend", ["numpy", "cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def test_a_subset_taken_on_the_backend_renders_as_the_subset_uploaded(backend):
    """``Prepared.subset`` (the preview's section cut applied to the scene already uploaded) gives the same
    image, bit for bit, as uploading the subset itself: by mask and by indices, on the demo room (SH 3)."""
    if backend not in available():
        pytest.skip(f"backend {backend} is not available here")
    from rasterizer.demo import demo_scene
    scene = demo_scene()
    cam = cameras_for(scene, size=(160, 120))["oblique"]
    keep = scene.means[:, 1] < np.median(scene.means[:, 1])
    whole = Prepared(scene, backend)
    for index in (keep, np.flatnonzero(keep)[::3]):
        got = whole.subset(index).render(cam, (0.1, 0.2, 0.3))
        want = Prepared(scene.subset(index), backend).render(cam, (0.1, 0.2, 0.3))
        assert np.array_equal(got.rgb, want.rgb) and np.array_equal(got.alpha, want.alpha)
        assert want.alpha.max() > 0.5
    assert not np.array_equal(whole.render(cam).alpha, whole.subset(keep).render(cam).alpha)
