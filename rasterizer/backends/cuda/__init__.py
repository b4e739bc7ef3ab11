"""The CUDA sources of the GPU backend and the compile-time defines they are built with.

One ``.cu`` file per stage, as in gsplat: ``project.cu`` (stages 2 + 3, fused), ``bin.cu``
and ``sort.cu`` (stage 4: the pairs, and the radix sorts and running sums that order them),
``blend.cu`` (stage 5); ``reach.cuh`` (which tiles a Gaussian reaches, shared by project and bin),
``sh.cuh`` (the one SH evaluation in CUDA) and ``scan.cuh`` (block-wide scans) are included by them. The
constants of the rendering contract are defined once, in :mod:`rasterizer.stages` and
:mod:`rasterizer.sh`, and reach the kernels as ``-D`` options (:func:`defines`). Nothing here
imports CuPy: :mod:`rasterizer.backends.gpu_cupy` compiles and launches.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ... import sh, stages

DIR = Path(__file__).resolve().parent
# Safety margins of the GPU's exact work skipping: the tile reach keeps every pixel centre with
# sigma <= ln(opacity / ALPHA_MIN) + SIGMA_MARGIN, widened by PIX_MARGIN pixels (alpha >= 0.95/255).
SIGMA_MARGIN = 0.05
PIX_MARGIN = 0.05
#: float4s in a Gaussian's projection record (project.cu writes it; bin.cu and blend.cu gather it):
#: geo, con, rch, rgb + radius bits
REC = 4
#: small views (bin.cu): the depth sort of at most SMALL_DEPTH_N Gaussians and the tile sort of at most
#: SMALL_PAIRS = 2^PAIR_BITS pairs (views of fewer than 2^(32 - PAIR_BITS) tiles) each run in one block of
#: SMALL_THREADS threads, in shared memory, with no host sync
SMALL_THREADS, SMALL_DEPTH_N, PAIR_BITS = 1024, 4096, 13
SMALL_PAIRS, SMALL_TILES = 1 << PAIR_BITS, 1 << (32 - PAIR_BITS)
#: the radix sort (sort.cu): RADIX_BITS a pass, one block of SORT_THREADS (= 2^RADIX_BITS, a thread per
#: digit) ranking SORT_ITEMS keys a thread (a tile of SORT_TILE keys), one look-back word per tile and digit
SORT_THREADS, SORT_ITEMS, RADIX_BITS = 256, 16, 8
SORT_TILE, RADIX = SORT_THREADS * SORT_ITEMS, 1 << RADIX_BITS
#: the kernels of each .cu file (templates by their instantiation's name)
KERNELS = {
    "project": ("project_kernel", "sh_kernel"),
    "bin": ("duplicate_kernel<unsigned short>", "duplicate_kernel<unsigned int>",
            "duplicate_big_kernel<unsigned short>", "duplicate_big_kernel<unsigned int>",
            "ranges_kernel<unsigned short>", "ranges_kernel<unsigned int>",
            "small_depth_order_kernel", "small_tile_sort_kernel<unsigned short>",
            "small_tile_sort_kernel<unsigned int>"),
    "sort": ("radix_histogram_kernel<unsigned short>", "radix_histogram_kernel<unsigned int>",
             "radix_pass_kernel<unsigned int, true, true>", "radix_pass_kernel<unsigned int, false, true>",
             "radix_pass_kernel<unsigned int, false, false>", "radix_pass_kernel<unsigned short, false, true>",
             "running_sums_kernel"),
    "blend": ("blend_kernel", "downscale_kernel", "to_uint8_kernel"),
}
_INCLUDE = re.compile(r'\s*#include\s+"([^"]+)"')


def float_literal(v: float) -> str:
    """A C float literal holding exactly ``float32(v)`` (hexadecimal: no decimal rounding)."""
    return f"({float(np.float32(v)).hex()}f)"


def define_values() -> dict[str, float | int]:
    """Name → value of every compile-time constant of the kernels."""
    values: dict[str, float | int] = {
        "TILE": stages.TILE, "NEAR": stages.NEAR, "FAR": stages.FAR, "FRUSTUM_CLAMP": stages.FRUSTUM_CLAMP,
        "EPS2D": stages.EPS2D, "LAMBDA_MIN": stages.LAMBDA_MIN, "RADIUS_SIGMAS": stages.RADIUS_SIGMAS,
        "ALPHA_MIN": stages.ALPHA_MIN, "INV_ALPHA_MIN": 1.0 / stages.ALPHA_MIN, "ALPHA_MAX": stages.ALPHA_MAX,
        "T_MIN": stages.T_MIN, "SIGMA_MARGIN": SIGMA_MARGIN, "PIX_MARGIN": PIX_MARGIN, "REC": REC,
        "SMALL_THREADS": SMALL_THREADS, "SMALL_DEPTH_N": SMALL_DEPTH_N, "PAIR_BITS": PAIR_BITS,
        "SORT_THREADS": SORT_THREADS, "SORT_ITEMS": SORT_ITEMS, "RADIX_BITS": RADIX_BITS,
        "SH_C0": sh.C0, "SH_C1": sh.C1}
    values.update({f"SH_C2_{i}": v for i, v in enumerate(sh.C2)})
    values.update({f"SH_C3_{i}": v for i, v in enumerate(sh.C3)})
    return values


def defines() -> tuple[str, ...]:
    """The NVRTC ``-D`` options: integers as they are, floats as exact float32 literals."""
    return tuple(f"-D{k}={v}" if isinstance(v, int) else f"-D{k}={float_literal(v)}"
                 for k, v in define_values().items())


def source(stem: str) -> str:
    """The text of ``<stem>.cu`` with its local ``#include "x.cuh"`` inlined, so that CuPy's cache
    key (the source text and the options) covers the headers; ``#line`` marks keep the file names
    and line numbers of compiler messages."""
    return _inline(DIR / f"{stem}.cu", set())


def _inline(path: Path, seen: set) -> str:
    out = [f'#line 1 "{path.name}"']
    for n, line in enumerate(path.read_text().splitlines(), 1):
        m = _INCLUDE.match(line)
        if m:
            if m.group(1) not in seen:
                seen.add(m.group(1))
                out += [_inline(path.with_name(m.group(1)), seen), f'#line {n + 1} "{path.name}"']
            continue
        out.append("" if line.strip() == "#pragma once" else line)
    return "\n".join(out) + "\n"
