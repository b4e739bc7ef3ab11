"""Where a GPU frame's time goes: per stage and inside bin_tiles, host time and device time.

python -m bench.gpu_profile [--only NAME] [--view angle|top|inside]  (CuPy, a device, the real scenes)
python -m bench.gpu_profile --host [...]  (where the frame's host time goes: cProfile of the frames)

For Nsight Compute, run it under ``ncu`` with ``--frames 0`` (one untimed frame per case).
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
from pathlib import Path

import cupy as cp
import numpy as np
from cupyx.profiler import benchmark

from rasterizer import stages
from rasterizer.backends import gpu_cupy as be
from rasterizer.render import Prepared

from .gpu import VIEWS, bench_cameras, bench_scenes
from .scenes import scenes_dir


def show(label, r):
    cpu = np.median(r.cpu_times) * 1e3
    gpu = np.median(r.gpu_times[0]) * 1e3
    print(f"  {label:30s} host {cpu:7.3f} ms   device {gpu:7.3f} ms")


def profile(name, scene, up, anchor, view, size=(1920, 1080), repeat=30, thrust=False):
    prep = Prepared(scene, "gpu")
    g = prep.gaussians
    cam = bench_cameras(scene, up, size, anchor)[view]
    p, colors = be.project_and_color(g, cam)
    bins = be.bin_tiles(p, cam)
    tiles_x, tiles_y = stages.tile_grid(cam)
    n = len(g)
    square = stages.Projection(cp.asnumpy(p.means2d), None, None, cp.asnumpy(p.radii))
    full = int(stages.tile_rects(square, tiles_x, tiles_y)[4].sum())
    ours = int(p.counts.sum())
    offsets = cp.asnumpy(bins.offsets)
    lengths = np.diff(offsets)
    print(f"{name} {size[0]}x{size[1]} {view}: N {n}, visible {int((p.radii > 0).sum())}, reaching "
          f"{int((p.counts > 0).sum())}, pairs {ours} (gsplat's squares: {full}, {ours / max(full, 1):.2f}), "
          f"chunks {len(bins.chunks)}, tile list length mean {lengths.mean():.0f} max {lengths.max()}")
    if repeat == 0:                      # one frame only (under ncu)
        prep.frame(cam)
        cp.cuda.Device().synchronize()
        return
    bench = dict(n_repeat=repeat, n_warmup=3)
    show("whole frame", benchmark(prep.frame, (cam,), **bench))
    show("project_and_color", benchmark(be.project_and_color, (g, cam), **bench))
    show("bin_tiles", benchmark(be.bin_tiles, (p, cam), **bench))
    show("blend", benchmark(be.blend, (p, colors, g.opacities, bins, cam, (0, 0, 0)), **bench))
    if len(bins.chunks) > 1:
        return
    show("  depth sort (radix, 4 passes)", benchmark(be.radix_sort, (p.depth_keys, 32), dict(keys_out=False),
                                                     **bench))
    order = be.radix_sort(p.depth_keys, 32, keys_out=False)[1]
    show("  running sums", benchmark(be.running_sums, (order, p.counts), **bench))
    if thrust:                           # CuPy's thrust / CUB equivalents, for comparison
        show("  depth sort (thrust argsort)", benchmark(cp.argsort, (p.depth_keys,), **bench))
        show("  running sums (cumsum)", benchmark(lambda: cp.cumsum(p.counts[order], dtype=np.int64), **bench))
    ends = be.running_sums(order, p.counts)
    show("  read total", benchmark(lambda: int(ends[-1]), **bench))
    show("  bins_for (dup+sort+ranges)", benchmark(be._bins_for, (p, order, ends, 0, n, 0, ours, tiles_x, tiles_y,
                                                                   cam.height), **bench))
    keys = cp.empty(ours, np.uint16)
    gids = cp.empty(ours, np.int32)
    show("  duplicate", benchmark(be._duplicate, (p, order, ends, 0, n, 0, keys, gids, tiles_x, tiles_y, cam.height),
                                  **bench))
    bits = be.tile_key_bits(tiles_x * tiles_y)
    show(f"  tile sort (radix, {bits} bits)", benchmark(be.radix_sort, (keys, bits, gids), **bench))
    if thrust:
        show("  tile sort (thrust argsort)", benchmark(lambda: gids[cp.argsort(keys)], **bench))


def host_profile(name, scene, up, anchor, view, size=(1920, 1080), repeat=200, top=30):
    """cProfile of ``repeat`` frames (:meth:`Prepared.frame`, no sync between them but the frame's own):
    the Python and CuPy calls that make up the host time of a frame, per frame, by own time. CuPy's
    Cython entry points (allocation, slicing, kernel launch) show as builtin methods."""
    prep = Prepared(scene, "gpu")
    cam = bench_cameras(scene, up, size, anchor)[view]
    for _ in range(5):
        prep.frame(cam)
    cp.cuda.Device().synchronize()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(repeat):
        prep.frame(cam)
    prof.disable()
    cp.cuda.Device().synchronize()
    stats = pstats.Stats(prof)
    total = stats.total_tt / repeat * 1e3
    print(f"{name} {size[0]}x{size[1]} {view}: host {total:.3f} ms a frame under cProfile "
          f"(profiling inflates it); own time per frame, top {top}:")
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])
    for (file, line, func), (_, calls, own, cum, _) in rows[:top]:
        where = func if file == "~" else f"{Path(file).name}:{line} {func}"
        print(f"  {own / repeat * 1e3:7.4f} ms own {cum / repeat * 1e3:7.4f} ms cum {calls / repeat:6.1f} calls  "
              f"{where[:90]}")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_profile", description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="only the scenes whose name contains this")
    ap.add_argument("--view", action="append", choices=VIEWS, help="views (default all)")
    ap.add_argument("--thrust", action="store_true", help="also time CuPy's argsort / cumsum in their place")
    ap.add_argument("--frames", type=int, default=30, help="timed repeats (0: one untimed frame, for ncu)")
    ap.add_argument("--host", action="store_true", help="instead: cProfile of the frames' host side")
    args = ap.parse_args(argv)
    d = scenes_dir()
    if d is None:
        raise SystemExit("the real scenes are needed: set SPLATTER_SCENES")
    for name, (scene, up, anchor) in bench_scenes(d).items():
        if args.only and args.only not in name:
            continue
        for view in args.view or VIEWS:
            if args.host:
                host_profile(name, scene, up, anchor, view, repeat=max(args.frames, 1))
            else:
                profile(name, scene, up, anchor, view, repeat=args.frames, thrust=args.thrust)


if __name__ == "__main__":
    main()
