"""Shared fixtures: the real scenes (skipped with a reason when absent) and image metrics."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.scenes import REAL_SCENES, REPO, scenes_dir

SCENE_FILES = tuple(REAL_SCENES)


def scene_path(name: str) -> Path:
    d = scenes_dir()
    if d is None or not (d / name).is_file():
        pytest.skip(f"real scene {name} not found (looked in {d or REPO.parent / 'shared' / 'scenes'}; "
                    "set SPLATTER_SCENES)")
    return d / name


@pytest.fixture(scope="session")
def demo():
    from rasterizer.demo import demo_scene
    return demo_scene()


def psnr(a, b) -> float:
    from rasterizer.imageio import psnr as _psnr
    return _psnr(a, b)


# One Gaussian whose alpha lands within float rounding of 1/255 at a pixel can be kept by one renderer
# and skipped by another (gsplat's __expf, NumPy's exp and numba's exp round differently): the alphas
# then differ by that Gaussian's alpha times T, a hair over 1/255 where T = 1. The slack admits that flip.
ALPHA_SLACK = 1e-6


def assert_images_agree(a, b, min_psnr=50.0, what=""):
    """The contract's bar: PSNR ≥ ``min_psnr`` on 8-bit RGB, alpha within 1/255 (+ ``ALPHA_SLACK``)."""
    p = psnr(a.rgb, b.rgb)
    da = float(np.abs(a.alpha - b.alpha).max())
    assert p >= min_psnr, f"{what}: PSNR {p:.2f} dB < {min_psnr}"
    assert da <= 1.0 / 255.0 + ALPHA_SLACK, f"{what}: alpha differs by {da:.6f} > 1/255"
