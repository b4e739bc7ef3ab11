"""``python -m rasterizer.bench_gpu``: the CuPy backend against gsplat 1.4.0 in the same process.

For each scene (the real ones, and 1M / 3M Gaussians tiled from a real scene), resolution
(1920x1080, 1280x720) and camera (oblique ¾, top-down): the median frame time of ours and of
gsplat's ``rasterization(..., packed=False, rasterize_mode="classic")`` over ``--repeat`` runs
after warm-up, timed with CUDA events with the scene already on the GPU; the ratio; the PSNR
between the two 8-bit images on a black background and the largest alpha difference; our
peak GPU memory (CuPy's pool). Also: the first-call kernel compile cost, and a whole preview
step on the GPU (load PLY → upload → 2 views → JPEGs).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .imageio import psnr
from .preview import preview_cameras, write_previews
from .render import Prepared
from .scene import load_scene, save_ply
from .tiling import tile_scene


def _gsplat():
    try:
        import gsplat
        import torch
        return gsplat, torch
    except Exception as e:  # not installed, or its CUDA build failed
        print(f"# gsplat not importable ({type(e).__name__}: {e}); timing ours only")
        return None, None


def time_ours(prepared: Prepared, cam, repeat: int):
    import cupy as cp
    be, g = prepared.backend, prepared.gaussians

    def frame():
        proj = be.project(g, cam)
        colors = be.sh_colors(g, cam)
        bins = be.bin_tiles(proj, cam)
        return be.blend(proj, colors, g.opacities, bins, cam, (0.0, 0.0, 0.0))

    for _ in range(3):
        frame()
    cp.cuda.Device().synchronize()
    times = []
    for _ in range(repeat):
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        rgb, alpha = frame()
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end))
    return statistics.median(times), cp.asnumpy(rgb), cp.asnumpy(alpha)


def time_gsplat(gsplat, torch, scene_t, cam, repeat: int):
    means, quats, scales, opac, sh, degree = scene_t
    view = torch.tensor(cam.world_to_camera, dtype=torch.float32, device="cuda")[None]
    K = torch.tensor([[cam.fx, 0, cam.cx], [0, cam.fy, cam.cy], [0, 0, 1]], dtype=torch.float32, device="cuda")[None]

    def frame():
        return gsplat.rasterization(means, quats, scales, opac, sh, view, K, cam.width, cam.height,
                                    near_plane=0.01, far_plane=1e10, eps2d=0.3, sh_degree=degree, packed=False,
                                    rasterize_mode="classic", radius_clip=0.0)

    with torch.no_grad():
        for _ in range(3):
            frame()
        torch.cuda.synchronize()
        times = []
        for _ in range(repeat):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            colors, alphas, _ = frame()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    rgb = colors[0].clamp(0, 1).cpu().numpy()
    return statistics.median(times), rgb, alphas[0, ..., 0].cpu().numpy()


def run_gpu_bench(scenes: dict, repeat: int = 20, sizes=((1920, 1080), (1280, 720)), out=print) -> None:
    import cupy as cp
    gsplat, torch = _gsplat()
    pool = cp.get_default_memory_pool()
    out(f"{'scene':30s} {'N':>9s} {'size':>9s} {'view':6s} {'ours ms':>8s} {'gsplat ms':>9s} {'ratio':>6s} "
        f"{'PSNR dB':>8s} {'d-alpha':>8s} {'peak MiB':>8s}")
    for name, (scene, up) in scenes.items():
        pool.free_all_blocks()
        prepared = Prepared(scene, "gpu")
        scene_t = None
        if gsplat is not None:
            g = prepared.gaussians
            scene_t = tuple(torch.as_tensor(a, device="cuda") for a in (g.means, g.quats, g.scales, g.opacities, g.sh)) \
                + (g.sh_degree,)
        for (w, h) in sizes:
            cams = preview_cameras(scene, up=up, size=(w, h))
            for view in ("angle", "top"):
                pool.free_all_blocks()
                ours, rgb, alpha = time_ours(prepared, cams[view], repeat)
                peak = pool.total_bytes() / 2**20
                if scene_t is not None:
                    ref, grgb, galpha = time_gsplat(gsplat, torch, scene_t, cams[view], repeat)
                    quality = f"{ref:9.3f} {ours / ref:6.2f} {psnr(rgb, grgb):8.2f} {np.abs(alpha - galpha).max():8.5f}"
                else:
                    quality = f"{'-':>9s} {'-':>6s} {'-':>8s} {'-':>8s}"
                out(f"{name:30s} {len(scene):9d} {w:4d}x{h:<4d} {view:6s} {ours:8.3f} {quality} {peak:8.0f}")
        del prepared, scene_t
        if torch is not None:
            torch.cuda.empty_cache()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rasterizer.bench_gpu", description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", default=os.environ.get("SPLATTER_SCENES",
                                                       str(Path(__file__).resolve().parents[1].parent / "shared" / "scenes")))
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args(argv)
    d = Path(args.scenes)

    t0 = time.perf_counter()
    import cupy as cp
    from .backends import gpu_cupy
    gpu_cupy._kernel("blend_kernel")
    cp.cuda.Device().synchronize()
    print(f"# kernel module load (compile on first use, CuPy's disk cache after): {time.perf_counter() - t0:.2f} s")

    scenes = {}
    for f, up in (("loadersgl-train-1000.ply", "y"), ("v3dg-donut-fused.ply", "y"),
                  ("aframe-gs-luma-seal.splat", "y"), ("playcanvas-playbot-lod0-500k.ply", "-y")):
        if (d / f).is_file():
            scenes[f] = (load_scene(d / f), up)
    if "playcanvas-playbot-lod0-500k.ply" in scenes:
        base = scenes["playcanvas-playbot-lod0-500k.ply"][0]
        scenes["tiled-1M (playbot, SH0)"] = (tile_scene(base, 1_000_000), "-y")
        scenes["tiled-3M (playbot, SH0)"] = (tile_scene(base, 3_000_000), "-y")
    if "loadersgl-train-1000.ply" in scenes:
        scenes["tiled-1M (train, SH3)"] = (tile_scene(scenes["loadersgl-train-1000.ply"][0], 1_000_000), "y")
    run_gpu_bench(scenes, repeat=args.repeat)

    if "loadersgl-train-1000.ply" in scenes:
        with tempfile.TemporaryDirectory() as tmp:
            big = save_ply(scenes["tiled-1M (train, SH3)"][0], Path(tmp) / "big.ply")
            t0 = time.perf_counter()
            s = load_scene(big)
            t1 = time.perf_counter()
            write_previews(s, Path(tmp) / "pv", backend="gpu")
            t2 = time.perf_counter()
            print(f"# preview step on the GPU, 1M SH-3 PLY: load {t1 - t0:.2f} s + upload, 2 views, JPEGs "
                  f"{t2 - t1:.2f} s = {t2 - t0:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
