"""Benchmark of the PLY → ``.splat`` conversion against ``ply2splat`` 0.6.0.

    python -m bench.convert [--gaussians 1000000] [--repeat 3] [--source PLY]

Builds an SH-3 PLY of the requested size in a temp dir (the real SH-3 scene tiled on a grid,
the demo scene when the real scenes are absent), then runs each converter in a fresh process,
``--repeat`` times: wall time of the conversion (file to file, median) and the process's own
peak memory above what it held before converting (VmHWM − VmRSS). Checks the outputs are
byte-identical and prints the ratios. ``bench_convert()`` returns the figures as a dict, for
the main benchmark.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from .child import run_child
from .scenes import SH3_SCENE, add_tiled_scene_arguments, find_scene

_CHILD = r"""
which, src, dst = sys.argv[1:4]
if which == 'ply2splat':
    import ply2splat
    run = lambda: ply2splat.convert(src, dst)
else:
    from rasterizer.splatfile import convert
    run = lambda: convert(src, dst)
base = status('VmRSS')
t0 = time.perf_counter()
run()
wall = time.perf_counter() - t0
report(wall_s=wall, peak_bytes=status('VmHWM') - base)
"""


def make_sh3_ply(path: Path, n: int, source: Path | None = None) -> Path:
    """An ``n``-Gaussian SH-3 PLY: ``source`` (default: the real SH-3 scene, else the demo) tiled."""
    from rasterizer.scene import load_scene, save_ply

    from .scenes import tile_scene
    if source is None:
        source = find_scene(SH3_SCENE)
    if source is not None:
        base = load_scene(source)
    else:
        from rasterizer.demo import demo_scene
        base = demo_scene()
    return save_ply(tile_scene(base, n), path)


def _run_child(which: str, src: Path, dst: Path) -> dict:
    return run_child(_CHILD, which, src, dst)


def bench_convert(n: int = 1_000_000, repeat: int = 3, source: Path | None = None) -> dict:
    """Time and peak memory of ours and ply2splat on an ``n``-Gaussian SH-3 PLY."""
    import ply2splat  # noqa: F401  (test-only dependency: fail early with a clear ImportError)
    with tempfile.TemporaryDirectory(prefix="bench-convert-") as tmp:
        tmp = Path(tmp)
        ply = make_sh3_ply(tmp / "sh3.ply", n, source)
        ply.read_bytes()  # warm the page cache so both read from memory
        res = {"gaussians": n, "ply_bytes": ply.stat().st_size}
        outs = {}
        for which in ("ply2splat", "ours"):
            outs[which] = tmp / f"{which}.splat"
            runs = [_run_child(which, ply, outs[which]) for _ in range(repeat)]
            res[which] = {"wall_s": statistics.median(r["wall_s"] for r in runs),
                          "peak_bytes": max(r["peak_bytes"] for r in runs)}
        res["identical"] = outs["ours"].read_bytes() == outs["ply2splat"].read_bytes()
    res["time_ratio"] = res["ours"]["wall_s"] / res["ply2splat"]["wall_s"]
    res["memory_ratio_vs_ply2splat"] = res["ours"]["peak_bytes"] / max(res["ply2splat"]["peak_bytes"], 1)
    res["memory_ratio_vs_ply_size"] = res["ours"]["peak_bytes"] / res["ply_bytes"]
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.convert", description=__doc__.splitlines()[0])
    add_tiled_scene_arguments(ap, repeat=3)
    args = ap.parse_args(argv)
    r = bench_convert(args.gaussians, args.repeat, args.source)
    mib = 1 << 20
    print(f"PLY → .splat, {r['gaussians']:,} Gaussians SH-3, PLY {r['ply_bytes'] / mib:.1f} MiB, "
          f"{os.cpu_count()} CPUs, median of {args.repeat}")
    for k in ("ply2splat", "ours"):
        print(f"  {k:10s} {r[k]['wall_s']:7.3f} s   peak {r[k]['peak_bytes'] / mib:7.1f} MiB")
    print(f"  time ours/ply2splat {r['time_ratio']:.2f}  (target ≤ 1)")
    print(f"  peak ours/PLY size {r['memory_ratio_vs_ply_size']:.2f}  (target ≤ 2);  "
          f"ours/ply2splat {r['memory_ratio_vs_ply2splat']:.2f}")
    print(f"  outputs byte-identical: {r['identical']}")
    return 0 if r["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
