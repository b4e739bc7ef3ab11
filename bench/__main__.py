"""``python -m bench``: load and render timings, peak memory and ratios per backend.

Scenes: the built-in demo, every real scene found in ../shared/scenes (or $SPLATTER_SCENES),
and a 1M-Gaussian SH-3 scene made by tiling the real SH-3 scene on a grid (written to a
temporary PLY so that its load time is measured too). Each case renders the ¾ preview camera
(and the top camera with ``--views top angle``). Render time is the median of ``--repeat`` runs
after one warm-up (the NumPy reference, which has no warm-up cost, runs once on big scenes).
Also timed: ``python -m rasterizer preview`` end to end on the 1M PLY in a fresh process.
Speed targets live here, not in tests: the table prints them next to the figures.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rasterizer.backends import available
from rasterizer.demo import demo_scene
from rasterizer.preview import preview_cameras
from rasterizer.render import Prepared
from rasterizer.scene import load_scene, save_ply

from .scenes import REAL_SCENES, SH3_SCENE, scenes_dir, tile_scene

# --------------------------------------------------------------------------- memory

def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux ``clear_refs``); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------- cases

def time_render(scene, cam, backend: str, repeat: int) -> tuple[float, float, float]:
    """(setup seconds, median render seconds, peak RSS MiB during the renders)."""
    reset_peak_rss()
    t0 = time.perf_counter()
    prepared = Prepared(scene, backend)
    setup = time.perf_counter() - t0
    runs = []
    n = repeat if backend != "numpy" or len(scene) < 200_000 else 1
    if backend != "numpy":
        prepared.render(cam)                      # warm-up: JIT / kernel load, caches
    for _ in range(n):
        t0 = time.perf_counter()
        prepared.render(cam)
        runs.append(time.perf_counter() - t0)
    return setup, statistics.median(runs), peak_rss_mib()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--backends", nargs="+", default=None, help="default: every available backend")
    ap.add_argument("--sizes", nargs="+", default=["1280x720", "1920x1080"])
    ap.add_argument("--views", nargs="+", default=["angle"], choices=["angle", "top"])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--million", type=int, default=1_000_000, help="size of the tiled scene (0: skip)")
    ap.add_argument("--no-numpy-big", action="store_true", help="skip the NumPy reference on scenes > 200k")
    args = ap.parse_args(argv)
    backends = args.backends or available()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]

    tmp = Path(tempfile.mkdtemp(prefix="splatter-bench-"))
    scenes = {"demo": (demo_scene(), "y", None)}
    d = scenes_dir()
    if d is None:
        print(f"# real scenes not found ({d}); set SPLATTER_SCENES. Benchmarking the demo scene only.")
    else:
        for name, up in REAL_SCENES.items():
            if (d / name).is_file():
                t0 = time.perf_counter()
                s = load_scene(d / name)
                scenes[name] = (s, up, time.perf_counter() - t0)
    big_path = None
    if args.million and d is not None and (d / SH3_SCENE).is_file():
        big_path = save_ply(tile_scene(load_scene(d / SH3_SCENE), args.million), tmp / "tiled-1M-sh3.ply")
        reset_peak_rss()
        base = peak_rss_mib()
        t0 = time.perf_counter()
        big = load_scene(big_path)
        load_s = time.perf_counter() - t0
        print(f"# 1M SH-3 PLY ({big_path.stat().st_size / 2**20:.0f} MiB): load {load_s:.2f} s, "
              f"peak RSS {peak_rss_mib() - base:.0f} MiB above baseline")
        scenes[f"tiled-{len(big) // 1000}k-sh3"] = (big, "y", load_s)

    print(f"\n{'scene':34s} {'N':>9s} {'sh':>2s} {'size':>9s} {'view':5s} {'backend':7s} "
          f"{'load s':>7s} {'setup s':>7s} {'render s':>9s} {'peak MiB':>8s}")
    results = {}
    for sname, (scene, up, load_s) in scenes.items():
        for (w, h) in sizes:
            cams = preview_cameras(scene, up=up, size=(w, h))
            for view in args.views:
                for be in backends:
                    if be == "numpy" and args.no_numpy_big and len(scene) > 200_000:
                        continue
                    setup, t, peak = time_render(scene, cams[view], be, args.repeat)
                    results[(sname, w, h, view, be)] = t
                    print(f"{sname:34s} {len(scene):9d} {scene.sh_degree:2d} {w:4d}x{h:<4d} {view:5s} {be:7s} "
                          f"{(load_s or 0):7.2f} {setup:7.2f} {t:9.4f} {peak:8.0f}", flush=True)

    print("\n# ratios (numpy reference time / numba time, same scene and camera; target >= 30x)")
    for (sname, w, h, view, be), t in results.items():
        if be == "cpu" and (sname, w, h, view, "numpy") in results:
            print(f"{sname:34s} {w}x{h} {view}: {results[(sname, w, h, view, 'numpy')] / t:6.1f}x")
    big_name = next((k for k in scenes if k.startswith("tiled-")), None)
    if big_name and "cpu" in backends:
        print("\n# targets for numba on the 1M scene (2-core CPU): <= 1.5 s at 1280x720, <= 3 s at 1920x1080")
        for (sname, w, h, view, be), t in results.items():
            if sname == big_name and be == "cpu":
                print(f"{w}x{h} {view}: {t:.3f} s")
    if big_path is not None:
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "rasterizer", "preview", str(big_path), "--out", str(tmp / "pv"),
                            "--backend", "cpu" if "gpu" not in backends else "auto"], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        print(f"\n# python -m rasterizer preview on the 1M SH-3 PLY, end to end (new process, load + 2 views + "
              f"JPEG): {wall:.2f} s (target <= 5 s){'' if r.returncode == 0 else ' FAILED: ' + r.stderr[-300:]}")
    print("\n# convert step (splat_rot.ply -> .splat) against ply2splat: python -m bench.convert")
    try:
        from .convert import main as convert_main
        convert_main(["--gaussians", str(args.million or 1_000_000), "--repeat", "3"])
    except Exception as e:  # noqa: BLE001 - ply2splat missing, or no real scene to tile
        print(f"# convert benchmark skipped: {type(e).__name__}: {e}")
    if "gpu" in backends:
        try:
            from . import gpu as bench_gpu
        except ImportError:
            bench_gpu = None
        if bench_gpu is not None:
            print("\n# GPU backend against gsplat (bench.gpu)")
            bench_gpu.run_gpu_bench({k: (v[0], v[1]) for k, v in scenes.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
