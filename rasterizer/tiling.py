"""Bigger scenes from real ones: copies of a scene laid out on a grid (benchmarks, stress tests)."""
from __future__ import annotations

import math

import numpy as np

from .scene import Scene


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
