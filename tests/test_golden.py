"""Every available backend against the golden images of the demo scene (PSNR ≥ 50 dB)."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, psnr
from rasterizer.backends import available, gpu_unavailable_reason
from rasterizer.camera import Camera
from rasterizer.render import Prepared

GOLDEN = REPO / "golden"
sys.path.insert(0, str(GOLDEN))
from regenerate import camera_record, golden_cameras  # noqa: E402

RECORDS = json.loads((GOLDEN / "cameras.json").read_text())


def _camera(rec) -> Camera:
    return Camera.from_fov(np.array(rec["world_to_camera"]).reshape(4, 4), rec["fov"], rec["width"], rec["height"])


BACKENDS = ["numpy", "cpu", pytest.param("gpu", marks=[pytest.mark.gpu, pytest.mark.skipif(
    "gpu" not in available(), reason=f"GPU backend unavailable: {gpu_unavailable_reason()}")])]


@pytest.fixture(scope="module")
def prepared(demo):
    return {}


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_matches_golden_images(demo, prepared, backend):
    p = prepared.setdefault(backend, Prepared(demo, backend))
    for name, rec in RECORDS["cameras"].items():
        img = p.render(_camera(rec), RECORDS["background"])
        golden = np.asarray(Image.open(GOLDEN / f"{name}.png").convert("RGB"), np.float32) / 255.0
        assert img.rgb.shape == golden.shape, name
        score = psnr(img.rgb, golden)
        assert score >= 50.0, f"{backend} {name}: PSNR {score:.2f} dB against golden/{name}.png"


def test_preview_cameras_still_frame_like_the_golden_ones(demo):
    for name, cam in golden_cameras(demo).items():
        stored = RECORDS["cameras"][name]
        now = camera_record(cam)
        assert (now["width"], now["height"]) == (stored["width"], stored["height"])
        np.testing.assert_allclose(now["world_to_camera"], stored["world_to_camera"], atol=1e-6,
                                   err_msg=f"{name}: camera changed; regenerate golden/ if intended")
