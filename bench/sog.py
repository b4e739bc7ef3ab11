"""Benchmark of Scene → SOG against PlayCanvas's splat-transform (the reference tool).

    python -m bench.sog [--gaussians 1000000] [--device auto|cpu|gpu] [--repeat 1]
                        [--reference] [--reference-iterations 10] [--reference-timeout 3600]

Builds an SH-3 PLY of the requested size in a temp dir: the real SH-3 scene tiled on a grid
(the demo scene when the real scenes are absent), each Gaussian's SH bands 1-3 blended with
those of another random Gaussian, so that the k-means faces as many distinct coefficient sets
as Gaussians, as in a real capture (a plain tiling would repeat 1,000 of them). Then, in a
fresh process each, ``--repeat`` times after one warm-up (the page cache, CuPy's kernel cache): our PLY → .sog
(load + write) — wall time, the k-means share, peak RSS of the process and its peak above what it
held before loading — and the fidelity of the result: SH error against the source and the PSNR of
renders of the decoded file against renders of the source at the two preview cameras. With
``--reference``: splat-transform on the same PLY (CPU k-means
unless ``--reference-gpu``; ``--reference-iterations`` lowers its k-means iterations, whose CPU
path takes hours on a million Gaussians). Prints sizes (against the PLY and each other), times,
memory and the SH error of each file against the source, with the targets beside them.

This module also holds the one definition of the pinned reference (version, npm cache, CLI) that
the oracle tests use.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .child import run_child
from .scenes import SH3_SCENE, add_tiled_scene_arguments, find_scene, tile_scene

SPLAT_TRANSFORM_VERSION = "3.7.0"
SPLAT_TRANSFORM = "@playcanvas/splat-transform"


class ReferenceUnavailable(Exception):
    """splat-transform cannot run here (no node/npm, or the install failed); the message says why."""


def npm_cache() -> Path:
    """Where the pinned reference is installed, outside the repository."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "splatter" / "npm"


def splat_transform_cli(install: bool = True) -> tuple[str, Path]:
    """``(node, cli.mjs)`` of the pinned splat-transform, installed with npm into :func:`npm_cache` once."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise ReferenceUnavailable("splat-transform needs node and npm on PATH")
    pkg = npm_cache() / "node_modules" / "@playcanvas" / "splat-transform"
    try:
        installed = json.loads((pkg / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        installed = None
    if installed != SPLAT_TRANSFORM_VERSION:
        if not install:
            raise ReferenceUnavailable(f"splat-transform {SPLAT_TRANSFORM_VERSION} is not installed in {npm_cache()}")
        npm_cache().mkdir(parents=True, exist_ok=True)
        try:
            # few, short retries: an offline machine fails in about a minute instead of hanging
            r = subprocess.run([npm, "install", "--prefix", str(npm_cache()), "--no-audit", "--no-fund",
                                "--no-save", "--fetch-retries", "1", "--fetch-timeout", "30000",
                                f"{SPLAT_TRANSFORM}@{SPLAT_TRANSFORM_VERSION}"],
                               capture_output=True, text=True, timeout=600, check=False)
        except subprocess.TimeoutExpired:
            raise ReferenceUnavailable("npm install of splat-transform timed out (offline?)") from None
        if r.returncode != 0:
            tail = " ".join(r.stderr.split())[-300:]
            raise ReferenceUnavailable(f"npm install of splat-transform failed (offline?): {tail}")
    return node, pkg / "bin" / "cli.mjs"


def run_splat_transform(args, gpu: bool = False, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the reference CLI (overwriting outputs, quiet); its k-means on the CPU unless ``gpu``."""
    node, cli = splat_transform_cli()
    cmd = [node, str(cli), "-q", "-w", *([] if gpu else ["-g", "cpu"]), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


# --------------------------------------------------------------------------- the input

def make_sh3_ply(path: Path, n: int, source: Path | None = None, seed: int = 1) -> Path:
    """An ``n``-Gaussian SH-3 PLY: ``source`` tiled, SH bands 1-3 blended with a random partner's."""
    from rasterizer.scene import Scene, load_scene, save_ply

    source = source or find_scene(SH3_SCENE)
    if source is not None:
        base = load_scene(source)
    else:
        from rasterizer.demo import demo_scene
        base = demo_scene()
    s = tile_scene(base, n)
    rng = np.random.default_rng(seed)
    partner = rng.integers(0, n, n)
    t = rng.random((n, 1, 1), dtype=np.float32)
    sh = s.sh.copy()
    sh[:, 1:] = (1 - t) * s.sh[:, 1:] + t * s.sh[partner, 1:]
    return save_ply(Scene(s.means, s.scales, s.quats, s.opacities, sh, s.normals), path)


# --------------------------------------------------------------------------- runs

_CHILD = r"""
src, dst, device = sys.argv[1:4]
from rasterizer.scene import load_scene
from rasterizer.sog import write_sog
base = status('VmRSS')
t0 = time.perf_counter()
from rasterizer.sog import warm_up   # as `python -m rasterizer convert` does: CUDA comes up while the PLY loads
warm_up(device)
scene = load_scene(src)
t1 = time.perf_counter()
stats = write_sog(scene, dst, device=device)
t2 = time.perf_counter()
report(wall_s=t2 - t0, load_s=t1 - t0, write_s=t2 - t1, kmeans_s=stats.kmeans_seconds,
       kmeans_device=stats.kmeans_device, peak_rss=status('VmHWM'), peak_above_start=status('VmHWM') - base)
"""


def run_ours(src: Path, dst: Path, device: str) -> dict:
    t0 = time.perf_counter()
    res = run_child(_CHILD, src, dst, device)
    res["process_s"] = time.perf_counter() - t0
    return res


def run_reference(src: Path, dst: Path, iterations: int, gpu: bool, timeout: float) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    try:
        r = run_splat_transform(["-i", str(iterations), src, dst], gpu=gpu, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        return {"error": " ".join(r.stderr.split())[-300:]}
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the largest so far: exact when the reference is the biggest child yet
    return {"process_s": wall, "peak_rss": after * 1024 if after > before else None}


def fidelity(sog_path: Path, source, cams, ref_images, backend: str) -> dict:
    """A SOG against its source: SH bands 1-3 error (plain, and weighted as the k-means weighs
    Gaussians) and the render PSNR over ``cams`` (pooled squared error)."""
    from rasterizer.imageio import psnr
    from rasterizer.render import Prepared
    from rasterizer.sog import morton_order, read_sog, sh_weights
    dec = read_sog(sog_path)
    order = morton_order(source.means)
    err = ((dec.sh[:, 1:] - source.sh[order, 1:]) ** 2).mean(axis=(1, 2))
    w = sh_weights(source)[order].astype(np.float64)
    prepared = Prepared(dec, backend)
    mse = np.mean([10 ** (-psnr(prepared.render(cam).rgb, ref_images[k]) / 10) for k, cam in cams.items()])
    return {"sh_mse": float(err.mean()), "sh_wmse": float((err * w).sum() / w.sum()),
            "psnr": float(-10 * np.log10(mse))}


RENDER_SIZE = (480, 270)


def bench_sog(n: int = 1_000_000, device: str = "auto", repeat: int = 1, reference: bool = False,
              reference_iterations: int = 10, reference_gpu: bool = False, reference_timeout: float = 3600,
              source: Path | None = None, render_backend: str = "auto") -> dict:
    from rasterizer.preview import preview_cameras
    from rasterizer.render import Prepared
    from rasterizer.scene import load_scene
    with tempfile.TemporaryDirectory(prefix="bench-sog-") as tmp:
        tmp = Path(tmp)
        ply = make_sh3_ply(tmp / "sh3.ply", n, source)
        res = {"gaussians": n, "ply_bytes": ply.stat().st_size, "cpus": os.cpu_count()}
        if reference:   # first: the peak RSS of children is the largest child's so far
            try:
                splat_transform_cli()
                ref = run_reference(ply, tmp / "theirs.sog", reference_iterations, reference_gpu, reference_timeout)
            except ReferenceUnavailable as e:
                ref = {"error": str(e)}
            ref["iterations"] = reference_iterations
            res["reference"] = ref
        run_ours(ply, tmp / "warm.sog", device)          # warms the page cache and CuPy's kernel cache
        runs = [run_ours(ply, tmp / "ours.sog", device) for _ in range(repeat)]
        res["ours"] = {k: statistics.median(r[k] for r in runs) if isinstance(runs[0][k], float) else runs[0][k]
                       for k in runs[0]}
        res["ours"]["peak_rss"] = max(r["peak_rss"] for r in runs)
        res["ours"]["peak_above_start"] = max(r["peak_above_start"] for r in runs)
        res["ours"]["bytes"] = (tmp / "ours.sog").stat().st_size
        source = load_scene(ply)
        cams = preview_cameras(source, size=RENDER_SIZE)
        prepared = Prepared(source, render_backend)
        ref_images = {k: prepared.render(cam).rgb for k, cam in cams.items()}
        del prepared
        res["ours"].update(fidelity(tmp / "ours.sog", source, cams, ref_images, render_backend))
        if reference and "error" not in res["reference"]:
            res["reference"]["bytes"] = (tmp / "theirs.sog").stat().st_size
            res["reference"].update(fidelity(tmp / "theirs.sog", source, cams, ref_images, render_backend))
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.sog", description=__doc__.splitlines()[0])
    add_tiled_scene_arguments(ap, repeat=1)
    ap.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto", help="where our k-means runs")
    ap.add_argument("--reference", action="store_true", help="also run splat-transform (needs node and npm)")
    ap.add_argument("--reference-iterations", type=int, default=10)
    ap.add_argument("--reference-gpu", action="store_true", help="let splat-transform use a WebGPU device")
    ap.add_argument("--reference-timeout", type=float, default=3600)
    ap.add_argument("--render-backend", choices=["numpy", "cpu", "gpu", "auto"], default="auto",
                    help="renderer for the PSNR figures (default auto)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = ap.parse_args(argv)
    r = bench_sog(args.gaussians, args.device, args.repeat, args.reference, args.reference_iterations,
                  args.reference_gpu, args.reference_timeout, args.source, args.render_backend)
    mib = 1 << 20
    o = r["ours"]
    print(f"PLY → .sog, {r['gaussians']:,} Gaussians SH-3, PLY {r['ply_bytes'] / mib:.1f} MiB, {r['cpus']} CPUs, "
          f"median of {args.repeat}")
    print(f"  ours       {o['bytes'] / mib:7.2f} MiB  PLY/ours {r['ply_bytes'] / o['bytes']:5.1f}x (target 15-20x)   "
          f"render PSNR {o['psnr']:.2f} dB, SH MSE {o['sh_mse']:.3g} (weighted {o['sh_wmse']:.3g})")
    print(f"             load + write {o['wall_s']:.2f} s (load {o['load_s']:.2f}, write {o['write_s']:.2f}, "
          f"k-means {o['kmeans_s']:.2f} on the {o['kmeans_device']}), process {o['process_s']:.2f} s")
    print(f"             peak RSS {o['peak_rss'] / mib:.0f} MiB, {o['peak_above_start'] / mib:.0f} MiB above the "
          f"start = {o['peak_above_start'] / r['ply_bytes']:.2f}x the PLY (target ≤ 2)")
    ref = r.get("reference")
    if ref is not None:
        if "error" in ref:
            print(f"  splat-transform {SPLAT_TRANSFORM_VERSION}: not run ({ref['error']})")
        else:
            peak = f"{ref['peak_rss'] / mib:.0f} MiB" if ref["peak_rss"] else "n/a"
            print(f"  splat-transform {SPLAT_TRANSFORM_VERSION} ({ref['iterations']} k-means iterations): "
                  f"{ref['bytes'] / mib:.2f} MiB, render PSNR {ref['psnr']:.2f} dB, SH MSE {ref['sh_mse']:.3g} "
                  f"(weighted {ref['sh_wmse']:.3g}), process {ref['process_s']:.1f} s, peak RSS {peak}")
            print(f"  ours/theirs: size {o['bytes'] / ref['bytes']:.3f} (target ≤ 1.05), time "
                  f"{o['process_s'] / ref['process_s']:.3f} (target < 1), PSNR {o['psnr'] - ref['psnr']:+.2f} dB "
                  f"(target ≥ 0)")
    if args.json:
        print(json.dumps(r, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
