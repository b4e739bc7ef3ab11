"""Every available backend against the golden images of the demo scene (PSNR ≥ 50 dB)."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from conftest import REPO, psnr
from PIL import Image

from rasterizer.backends import available, gpu_unavailable_reason
from rasterizer.render import Prepared

GOLDEN = REPO / "golden"
sys.path.insert(0, str(GOLDEN))
from regenerate import SIZE, camera_of, camera_record, golden_cameras  # noqa: E402

RECORDS = json.loads((GOLDEN / "cameras.json").read_text())

BACKENDS = ["numpy", "cpu", pytest.param("gpu", marks=[pytest.mark.gpu, pytest.mark.skipif(
    "gpu" not in available(), reason=f"GPU backend unavailable: {gpu_unavailable_reason()}")])]


@pytest.fixture(scope="module")
def scenes(demo):
    """The demo as stored, and after the previews' automatic section cut."""
    from rasterizer.preview import plan_previews
    return {False: demo, True: plan_previews(demo, size=SIZE).scene}


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_matches_golden_images(scenes, backend):
    prepared = {cut: Prepared(s, backend) for cut, s in scenes.items()}
    for name, rec in RECORDS["cameras"].items():
        img = prepared[rec["cut"]].render(camera_of(rec), RECORDS["background"])
        golden = np.asarray(Image.open(GOLDEN / f"{name}.png").convert("RGB"), np.float32) / 255.0
        assert img.rgb.shape == golden.shape, name
        score = psnr(img.rgb, golden)
        assert score >= 50.0, f"{backend} {name}: PSNR {score:.2f} dB against golden/{name}.png"


def test_golden_cameras_are_todays_cameras(demo):
    """The preview cameras (and the cut) of today's code frame like the stored ones: regenerate golden/ if
    a change is meant to move them."""
    now = {name: camera_record(cam, cut) for name, (cam, cut) in golden_cameras(demo).items()}
    assert sorted(now) == sorted(RECORDS["cameras"])
    for name, rec in now.items():
        stored = RECORDS["cameras"][name]
        for key in ("model", "width", "height", "cut"):
            assert rec[key] == stored[key], f"{name}: {key} changed; regenerate golden/ if intended"
        np.testing.assert_allclose([rec[k] for k in ("fx", "fy", "cx", "cy")],
                                   [stored[k] for k in ("fx", "fy", "cx", "cy")], rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(rec["world_to_camera"], stored["world_to_camera"], atol=1e-6,
                                   err_msg=f"{name}: camera changed; regenerate golden/ if intended")
