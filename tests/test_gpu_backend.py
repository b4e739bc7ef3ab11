"""The CuPy backend against the NumPy reference and numba on the real scenes (GPU machines only).

Skipped, with the reason printed, where CuPy or a CUDA device is missing (CI's CPU machine).
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_images_agree, scene_path
from rasterizer.backends import gpu_unavailable_reason
from rasterizer.render import Prepared, render_batch
from rasterizer.scene import load_scene
from rasterizer.testcams import cameras_for

REASON = gpu_unavailable_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=f"GPU backend unavailable: {REASON}")]

SCENES = ["loadersgl-train-1000.ply", "v3dg-donut-fused.ply", "aframe-gs-luma-seal.splat",
          "playcanvas-playbot-lod0-500k.ply"]


@pytest.fixture(scope="module", params=SCENES)
def case(request):
    scene = load_scene(scene_path(request.param))
    size = (517, 389) if len(scene) < 200_000 else (320, 240)
    return request.param, scene, cameras_for(scene, size=size)


def test_gpu_matches_reference_and_numba(case):
    name, scene, cams = case
    gpu, ref, cpu = Prepared(scene, "gpu"), Prepared(scene, "numpy"), Prepared(scene, "cpu")
    for view, cam in cams.items():
        g = gpu.render(cam, (0.1, 0.2, 0.3))
        assert_images_agree(g, ref.render(cam, (0.1, 0.2, 0.3)), what=f"{name} {view} gpu vs numpy")
        assert_images_agree(g, cpu.render(cam, (0.1, 0.2, 0.3)), what=f"{name} {view} gpu vs numba")
        if view == "away":
            assert g.alpha.max() == 0.0


def test_gpu_is_bit_identical_run_to_run(case):
    name, scene, cams = case
    gpu = Prepared(scene, "gpu")
    for cam in cams.values():
        a, b = gpu.render(cam), Prepared(scene, "gpu").render(cam)
        assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.alpha, b.alpha), name


def test_chunked_blend_equals_unchunked(case, monkeypatch):
    name, scene, cams = case
    whole = {v: Prepared(scene, "gpu").render(c) for v, c in cams.items()}
    monkeypatch.setenv("SPLATTER_GPU_MAX_ISECT", "5000")        # force many depth chunks
    for view, cam in cams.items():
        chunked = Prepared(scene, "gpu").render(cam)
        assert np.array_equal(chunked.rgb, whole[view].rgb), f"{name} {view}"
        assert np.array_equal(chunked.alpha, whole[view].alpha), f"{name} {view}"


def test_batch_equals_single_renders(case):
    name, scene, cams = case
    batch = list(render_batch(scene, list(cams.values()), backend="gpu"))
    for img, cam in zip(batch, cams.values()):
        single = Prepared(scene, "gpu").render(cam)
        assert np.array_equal(img.rgb, single.rgb)
