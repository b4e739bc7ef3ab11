"""``python -m bench.preview``: where the time of a preview goes, step by step, against its targets.

For the built-in demo room and a 1M-Gaussian SH-3 PLY (the real SH-3 scene tiled on a grid,
written to a temporary file), in one process after a warm-up run (numba's JIT cache loaded):
load, layout analysis, section cut, top framing, corner choice (the small label renders), backend
setup, and per view the render (at the anti-aliasing factor, downscaled on the backend), the overlay and the
JPEG encode. Then ``python -m rasterizer preview`` end to end in a fresh process, as a user runs it.
Each anti-aliasing factor of ``--aa`` is measured. Targets (issue 8): layout on 1M Gaussians
<= 0.2 s on 2 cores; the preview command on the 1M SH-3 PLY <= 3 s on 2 CPU cores, <= 2 s on the GPU
machine.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rasterizer import backends
from rasterizer.demo import demo_scene
from rasterizer.preview import plan_previews, write_previews
from rasterizer.render import Prepared
from rasterizer.scene import load_scene, save_ply

from .scenes import SH3_SCENE, find_scene, tile_scene

STEPS = ("load", "layout", "cut", "top framing", "corner choice", "setup", "render top", "render angle",
         "overlay", "encode", "total")


def measure(load, up: str, backend: str, aa: int, out: Path) -> dict[str, float]:
    """One preview run in this process: seconds per step."""
    t0 = time.perf_counter()
    scene = load()
    t = {"load": time.perf_counter() - t0}
    plan = plan_previews(scene, up=up)
    t.update({"layout": plan.seconds["layout"], "cut": plan.seconds["cut"], "top framing": plan.seconds["top"],
              "corner choice": plan.seconds["corner"]})
    t1 = time.perf_counter()
    prepared = Prepared(plan.scene, backend)
    t["setup"] = time.perf_counter() - t1
    views: dict = {}
    write_previews(plan, out, prepared=prepared, aa=aa, timings=views)
    for v in ("top", "angle"):
        t[f"render {v}"] = views[v]["render"]
    for step in ("overlay", "encode"):
        t[step] = sum(views[v][step] for v in views)
    t["total"] = time.perf_counter() - t0
    return t


def end_to_end(path: Path, backend: str, aa: int, out: Path) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "rasterizer", "preview", str(path), "--out", str(out),
                        "--backend", backend, "--aa", str(aa)], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip().splitlines()[-1])
    return wall


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.preview", description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="auto", choices=["numpy", "cpu", "gpu", "auto"])
    ap.add_argument("--aa", type=int, nargs="+", default=[1, 2], help="anti-aliasing factors to measure")
    ap.add_argument("--gaussians", type=int, default=1_000_000, help="size of the tiled SH-3 scene (0: skip)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case (the median is printed)")
    args = ap.parse_args(argv)
    backend = backends.resolve(args.backend)
    tmp = Path(tempfile.mkdtemp(prefix="splatter-bench-preview-"))
    cases = {"demo room": (demo_scene, "y", None)}
    src = find_scene(SH3_SCENE)
    if args.gaussians and src is not None:
        big = save_ply(tile_scene(load_scene(src), args.gaussians), tmp / f"tiled-{args.gaussians}-sh3.ply")
        cases[f"{args.gaussians // 1000}k SH-3 PLY"] = (lambda: load_scene(big), "y", big)
    elif args.gaussians:
        print(f"# {SH3_SCENE} not found (set SPLATTER_SCENES): the demo room only")

    print(f"# backend {backend}; median of {args.repeat} runs after a warm-up, seconds")
    results = {}
    for name, (load, up, _path) in cases.items():
        for aa in args.aa:
            measure(load, up, backend, aa, tmp / "warm")
            runs = [measure(load, up, backend, aa, tmp / "out") for _ in range(args.repeat)]
            results[(name, aa)] = {k: statistics.median(r[k] for r in runs) for k in STEPS}
    cols = list(results)
    print(f"{'step':16s}" + "".join(f"{f'{n} aa={aa}':>22s}" for n, aa in cols))
    for step in STEPS:
        print(f"{step:16s}" + "".join(f"{results[c][step]:22.3f}" for c in cols))
    big = [(n, up, path) for n, (_, up, path) in cases.items() if path is not None]
    if big:
        name, up, path = big[0]
        print(f"\n# layout analysis on {name}: {min(results[(name, aa)]['layout'] for aa in args.aa):.3f} s "
              "(target <= 0.2 s on 2 cores)")
        target = 2.0 if backend == "gpu" else 3.0
        for aa in args.aa:
            walls = [end_to_end(path, backend, aa, tmp / "e2e") for _ in range(args.repeat)]
            print(f"# python -m rasterizer preview {name} --aa {aa}, end to end (new process): "
                  f"{statistics.median(walls):.2f} s (min {min(walls):.2f}; target <= {target:.0f} s on "
                  f"{'the GPU machine' if backend == 'gpu' else '2 CPU cores'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
