"""Where a GPU frame's time goes: per stage and inside bin_tiles, host time and device time.

python -m bench.gpu_profile  (needs CuPy, a device and the real scenes)
"""
import cupy as cp
import numpy as np
from cupyx.profiler import benchmark

from rasterizer import stages
from rasterizer.backends import gpu_cupy as be
from rasterizer.preview import preview_cameras
from rasterizer.render import Prepared
from rasterizer.scene import load_scene

from .scenes import BIG_SCENE, SH3_SCENE, find_scene, tile_scene


def show(label, r):
    cpu = np.median(r.cpu_times) * 1e3
    gpu = np.median(r.gpu_times[0]) * 1e3
    print(f"  {label:28s} host {cpu:7.3f} ms   device {gpu:7.3f} ms")


def profile(name, scene, up, size=(1920, 1080), view="angle"):
    prep = Prepared(scene, "gpu")
    g = prep.gaussians
    cam = preview_cameras(scene, up=up, size=size)[view]
    p = be.project(g, cam)
    colors = be.sh_colors(g, cam)
    bins = be.bin_tiles(p, cam)
    tiles_x, tiles_y = stages.tile_grid(cam)
    radii = p.radii
    n = len(g)
    # gsplat's pair count: the whole radius rectangle
    mx, my = p.geo[:, 0], p.geo[:, 1]
    r = radii.astype(cp.float32) / 16
    x0 = cp.clip(cp.floor(mx / 16 - r), 0, tiles_x); x1 = cp.clip(cp.ceil(mx / 16 + r), 0, tiles_x)
    y0 = cp.clip(cp.floor(my / 16 - r), 0, tiles_y); y1 = cp.clip(cp.ceil(my / 16 + r), 0, tiles_y)
    full = int(cp.where(radii > 0, (x1 - x0) * (y1 - y0), 0).sum())
    ours = int(p.counts.sum())
    print(f"{name} {size[0]}x{size[1]} {view}: N {n}, visible {int((radii > 0).sum())}, reaching "
          f"{int((p.counts > 0).sum())}, pairs {ours} (gsplat's rectangles: {full}, {ours / max(full, 1):.2f})")
    def frame():
        pp = be.project(g, cam)
        return be.blend(pp, be.sh_colors(g, cam), g.opacities, be.bin_tiles(pp, cam), cam, (0, 0, 0))
    show("whole frame", benchmark(frame, n_repeat=30, n_warmup=3))
    show("project", benchmark(be.project, (g, cam), n_repeat=30, n_warmup=3))
    show("bin_tiles", benchmark(be.bin_tiles, (p, cam), n_repeat=30, n_warmup=3))
    show("blend", benchmark(be.blend, (p, colors, g.opacities, bins, cam, (0, 0, 0)), n_repeat=30, n_warmup=3))
    order = cp.argsort(p.depth_keys)
    show("  depth argsort", benchmark(cp.argsort, (p.depth_keys,), n_repeat=30, n_warmup=3))
    sc = cp.empty(n, np.int64)
    show("  gather counts", benchmark(lambda: be._kernel("gather_counts_kernel")(
        be._grid(n), (256,), (np.int32(n), order, p.counts, sc)), n_repeat=30, n_warmup=3))
    show("  cumsum", benchmark(cp.cumsum, (sc,), n_repeat=30, n_warmup=3))
    ends = cp.cumsum(sc)
    show("  read total", benchmark(lambda: int(ends[-1]), n_repeat=30, n_warmup=3))
    total = int(ends[-1])
    show("  bins_for (dup+sort+ranges)", benchmark(be._bins_for, (p, order, ends, 0, n, 0, total, tiles_x, tiles_y,
                                                                   cam.height), n_repeat=30, n_warmup=3))
    keys = cp.empty(total, np.uint16)
    gids = cp.empty(total, np.int32)
    show("  duplicate", benchmark(lambda: be._kernel("duplicate16_kernel")(be._grid(n), (256,), (
        np.int32(0), np.int32(n), order, ends, np.int64(0), p.counts, p.geo, p.con, p.rch, p.radii,
        np.int32(tiles_x), np.int32(tiles_y), np.int32(cam.height), keys, gids)), n_repeat=30, n_warmup=3))
    show("  tile argsort", benchmark(cp.argsort, (keys,), n_repeat=30, n_warmup=3))
    sorted16 = cp.sort(keys)
    show("  tile sort keys only", benchmark(cp.sort, (keys,), n_repeat=30, n_warmup=3))
    del sorted16


def main():
    if find_scene(BIG_SCENE) is None or find_scene(SH3_SCENE) is None:
        raise SystemExit("the real scenes are needed: set SPLATTER_SCENES")
    base = load_scene(find_scene(BIG_SCENE))
    train = load_scene(find_scene(SH3_SCENE))
    profile("train-1000", train, "y")
    profile("tiled-1M playbot", tile_scene(base, 1_000_000), "-y")
    s3 = tile_scene(base, 3_000_000)
    profile("tiled-3M playbot", s3, "-y")
    profile("tiled-3M playbot", s3, "-y", view="top")
    profile("tiled-1M train SH3", tile_scene(train, 1_000_000), "y")


if __name__ == "__main__":
    main()
