"""Benchmark of scene loading against reading the file once (issue 12: load ≤ 2x a read, peak ≤ 1.5x the file).

    python -m bench.load [--gaussians 1000000] [--repeat 3] [--source PLY]

Builds an SH-3 PLY of the requested size in a temp dir (the real SH-3 scene tiled on a grid, the
demo scene when the real scenes are absent) and the ``.splat`` converted from it, reads each once
to warm the page cache, then in fresh processes, ``--repeat`` times each: the wall time of
``f.read()`` of the whole file, and the wall time and peak RSS (VmHWM, the process's own peak,
interpreter and imports included) of ``load_scene``. Prints medians, the ratios and the targets.
``bench_load()`` returns the figures as a dict.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from .child import run_child
from .convert import make_sh3_ply
from .scenes import add_tiled_scene_arguments

_CHILD = r"""
what, path = sys.argv[1:3]
if what == 'read':
    t0 = time.perf_counter()
    with open(path, 'rb') as f:
        data = f.read()
    wall = time.perf_counter() - t0
    n = len(data)
else:
    from rasterizer.scene import load_scene
    before = status('VmRSS')
    t0 = time.perf_counter()
    scene = load_scene(path)
    wall = time.perf_counter() - t0
    n = len(scene)
report(wall_s=wall, n=n, peak_bytes=status('VmHWM'), before_bytes=before if what == 'load' else 0)
"""

#: issue 12's targets for a 1M-Gaussian SH-3 PLY
TIME_TARGET, MEMORY_TARGET = 2.0, 1.5


def _child(what: str, path: Path) -> dict:
    return run_child(_CHILD, what, path)


def _measure(path: Path, repeat: int) -> dict:
    path.read_bytes()  # into the page cache: both the read and the load come from memory
    reads = [_child("read", path) for _ in range(repeat)]
    loads = [_child("load", path) for _ in range(repeat)]
    size = path.stat().st_size
    res = {"bytes": size, "gaussians": loads[0]["n"],
           "read_s": statistics.median(r["wall_s"] for r in reads),
           "load_s": statistics.median(r["wall_s"] for r in loads),
           "peak_bytes": max(r["peak_bytes"] for r in loads),
           "peak_above_start_bytes": max(r["peak_bytes"] - r["before_bytes"] for r in loads)}
    res["time_ratio"] = res["load_s"] / res["read_s"]
    res["memory_ratio"] = res["peak_bytes"] / size
    return res


def bench_load(n: int = 1_000_000, repeat: int = 3, source: Path | None = None) -> dict:
    """Read and load figures of an ``n``-Gaussian SH-3 PLY and of the ``.splat`` made from it."""
    from rasterizer.splatfile import convert
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        ply = make_sh3_ply(Path(tmp) / "sh3.ply", n, source)
        splat = Path(tmp) / "sh3.splat"
        convert(ply, splat)
        return {"ply": _measure(ply, repeat), "splat": _measure(splat, repeat)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    add_tiled_scene_arguments(ap, repeat=3)
    args = ap.parse_args(argv)
    r = bench_load(args.gaussians, args.repeat, args.source)
    mib = 1 << 20
    print(f"scene loading, {args.gaussians:,} Gaussians, {os.cpu_count()} CPUs, fresh processes, "
          f"median of {args.repeat} (page cache warm)")
    for kind, label in (("ply", "SH-3 PLY"), ("splat", ".splat (SH 0)")):
        m = r[kind]
        print(f"  {label:14s} {m['bytes'] / mib:7.1f} MiB   read {m['read_s']:6.3f} s   load {m['load_s']:6.3f} s"
              f"   peak RSS {m['peak_bytes'] / mib:7.1f} MiB ({m['peak_above_start_bytes'] / mib:.1f} MiB above "
              f"the start of the load)")
        target = kind == "ply"
        print(f"  {'':14s} load/read {m['time_ratio']:.2f}" + (f"  (target ≤ {TIME_TARGET:g})" if target else "")
              + f"   peak/file {m['memory_ratio']:.2f}" + (f"  (target ≤ {MEMORY_TARGET:g})" if target else
                                                         "  (the scene's arrays alone are 1.75x a .splat)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
