"""The scenes benchmarks and tests use: the real ones (found, never shipped) and bigger ones made from them.

The real trained scenes are not ours and are never committed: they are looked up in
``$SPLATTER_SCENES`` or ``../shared/scenes`` beside the checkout. :data:`REAL_SCENES` is the one
list of them (file name → the world up axis of that file), used by the benchmarks and the tests.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from rasterizer.scene import Scene

REPO = Path(__file__).resolve().parents[1]
#: file name → up axis (``--up``) of every real scene the suite and the benchmarks know
REAL_SCENES = {
    "loadersgl-train-1000.ply": "y",          # SH 3, 1000 Gaussians (start of a real file)
    "v3dg-donut-fused.ply": "y",              # SH 0, 45k, a small object without normals
    "aframe-gs-luma-seal.splat": "-y",        # antimatter15 .splat, 101k; y points down (as in antimatter15 files)
    "playcanvas-playbot-lod0-500k.ply": "-y",  # SH 0, 500k, y points down in this file
}
SH3_SCENE = "loadersgl-train-1000.ply"
BIG_SCENE = "playcanvas-playbot-lod0-500k.ply"


def scenes_dir() -> Path | None:
    """``$SPLATTER_SCENES``, else ``../shared/scenes`` beside the checkout; None when absent."""
    d = Path(os.environ.get("SPLATTER_SCENES", REPO.parent / "shared" / "scenes"))
    return d if d.is_dir() else None


def find_scene(name: str) -> Path | None:
    d = scenes_dir()
    return d / name if d is not None and (d / name).is_file() else None


def tile_scene(scene: Scene, n_target: int, gap: float = 0.05) -> Scene:
    """Copies of ``scene`` on a square grid in the ground plane of its two widest axes.

    The result has exactly ``n_target`` Gaussians (the last copy is cut short), keeps the
    SH degree, and spaces copies by the robust extent of the original so they do not overlap.
    """
    reps = math.ceil(n_target / len(scene))
    side = math.ceil(math.sqrt(reps))
    lo, hi = np.percentile(scene.means, [1, 99], axis=0)
    extent = (hi - lo) * (1.0 + gap)
    a, b = np.argsort(extent)[::-1][:2]                      # the two widest axes
    offsets = np.zeros((reps, 3), np.float32)
    idx = np.arange(reps)
    offsets[:, a] = (idx % side - (side - 1) / 2) * extent[a]
    offsets[:, b] = (idx // side - (side - 1) / 2) * extent[b]
    n = len(scene)

    def rep(arr):
        return np.concatenate([arr] * reps)[:n_target]

    means = (np.concatenate([scene.means + o for o in offsets])[:n_target]).astype(np.float32)
    return Scene(means, rep(scene.scales), rep(scene.quats), rep(scene.opacities), rep(scene.sh),
                 None if scene.normals is None else rep(scene.normals), f"{scene.source} x{n_target / n:.2f}")


def add_tiled_scene_arguments(ap, repeat: int) -> None:
    """The options of the benchmarks that measure a big SH-3 PLY tiled from a real scene."""
    ap.add_argument("--gaussians", type=int, default=1_000_000, help="Gaussians in the tiled SH-3 PLY")
    ap.add_argument("--repeat", type=int, default=repeat, help=f"runs per case (default {repeat})")
    ap.add_argument("--source", type=Path, default=None, help="PLY to tile (default: the real SH-3 scene)")
