"""The numerical check of splitting long tile lists in the GPU blend (built on the branch
``split-lists``, not in main's kernels yet), in NumPy: a tile list longer than ``seg`` entries
is cut at the multiples of ``seg`` of the pair array, as that build cuts it; each piece after the
first is blended from T = 1 (on the GPU by separate blocks, at once), then the pieces are combined per
pixel in order (C += T C_k, T *= T_k; a piece where the pixel stops, locally or by the running
product, is walked again from the true T so the stop rule stays exact), and compared with the
sequential NumPy reference (stages.blend) on the real scenes' test cameras, whose "far" views put up
to 376k entries in one tile. See docs/gpu.md ("Where the inside views' blend goes").

    python tools/segmented_blend_check.py [--seg 2048]     (needs the real scenes: $SPLATTER_SCENES)
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
from cameras import cameras_for  # noqa: E402

from bench.scenes import find_scene  # noqa: E402
from rasterizer import stages  # noqa: E402
from rasterizer.scene import load_scene  # noqa: E402
from rasterizer.stages import T_MIN  # noqa: E402

f32 = np.float32
run = stages.blend_pixels        # the reference's own per-pixel loop, from any starting (T, C)


def segmented(p, colors, opac, bins, cam, seg):
    """The image blended segment by segment and combined: (rgb, alpha, pixels re-blended, segments)."""
    W, H = cam.width, cam.height
    rgb, t_img = np.zeros((H, W, 3), f32), np.ones((H, W), f32)
    resumed = n_seg = 0
    for tile in np.flatnonzero(np.diff(bins.offsets)):
        ys, xs, px, py = stages.tile_pixels(int(tile), bins.tiles_x, W, H)
        start, end = int(bins.offsets[tile]), int(bins.offsets[tile + 1])
        cuts = [start, *range((start // seg + 1) * seg, end, seg), end] if end - start > seg else [start, end]
        segs = [bins.gaussian_ids[a:b] for a, b in itertools.pairwise(cuts)]
        n_seg += len(segs)
        one, zero = np.ones(px.size, f32), np.zeros((px.size, 3), f32)
        parts = [run(p, colors, opac, s, px, py, one, zero) for s in segs]   # in parallel on a GPU
        C, T, done = parts[0]
        for s, (c_s, t_s, stop_s) in zip(segs[1:], parts[1:]):
            redo = ~done & (stop_s | (T * t_s <= f32(T_MIN)))
            ok = ~done & ~redo
            C[ok] += T[ok, None] * c_s[ok]
            T[ok] = T[ok] * t_s[ok]
            if redo.any():     # the pixel saturates in this segment: re-blend it from the true T
                idx = np.flatnonzero(redo)
                resumed += idx.size
                C[idx], T[idx], done[idx] = run(p, colors, opac, s, px[idx], py[idx], T[idx], C[idx])
        shape = (ys.stop - ys.start, xs.stop - xs.start)
        rgb[ys, xs] = C.reshape(*shape, 3)
        t_img[ys, xs] = T.reshape(shape)
    return np.clip(rgb, 0, 1).astype(f32), (1 - t_img).astype(f32), resumed, n_seg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seg", type=int, default=2048, help="entries per segment")
    seg = ap.parse_args(argv).seg
    for name, size in (("v3dg-donut-fused.ply", (517, 389)), ("aframe-gs-luma-seal.splat", (517, 389)),
                       ("playcanvas-playbot-lod0-500k.ply", (320, 240))):
        path = find_scene(name)
        if path is None:
            print(f"{name}: not found (set SPLATTER_SCENES); skipped")
            continue
        scene = load_scene(path)
        g = stages.activate(scene)
        for view, cam in cameras_for(scene, size=size).items():
            p, colors = stages.project(g, cam), stages.sh_colors(g, cam)
            bins = stages.bin_tiles(p, cam)
            if not np.diff(bins.offsets).any():
                continue
            ref_rgb, ref_a = stages.blend(p, colors, g.opacities, bins, cam, (0, 0, 0))
            t0 = time.time()
            rgb, a, resumed, nseg = segmented(p, colors, g.opacities, bins, cam, seg)
            d, da = np.abs(rgb.astype(np.float64) - ref_rgb), np.abs(a.astype(np.float64) - ref_a)
            same8 = np.array_equal(np.round(rgb * 255), np.round(ref_rgb * 255))
            print(f"{name} {view}: longest list {np.diff(bins.offsets).max()}, {nseg} segments of <= {seg}, "
                  f"{resumed} pixels re-blended; max |d rgb| {d.max():.2e}, max |d alpha| {da.max():.2e}, "
                  f"8-bit rgb {'identical' if same8 else 'DIFFERS'} ({time.time() - t0:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
