"""PLY → antimatter15 ``.splat``, byte for byte what ``ply2splat`` 0.6.0 writes, in vectorised NumPy.

The ``.splat`` layout (rendering.md): 32 bytes a Gaussian, little-endian, no header — position
float32×3, ``exp(scale)`` float32×3, RGBA uint8×4, rotation uint8×4 (w, x, y, z).

ply2splat computes everything in float32 and truncates to bytes (Rust ``as u8``: saturating,
NaN → 0); we do the same operations in the same order so that the bytes agree:

- ``R,G,B = trunc(clamp(0.5 + C0·f_dc, 0, 1)·255)`` with C0 = 0.2820948 as a float32;
- ``a = clamp(1 / (1 + exp(−opacity)), 0, 1)``, ``A = trunc(a·255)``;
- ``q = rot / |rot|`` (``|rot|`` summed left to right; a zero or NaN length gives 1, 0, 0, 0),
  bytes ``trunc(clamp(q·128 + 128, 0, 255))``;
- order: ascending ``(−a)·exp(s0 + s1 + s2)`` (i.e. most important first), ties broken by x, y, z,
  every comparison IEEE ``totalOrder`` (Rust ``f32::total_cmp``); a stable sort, so rows that
  tie on all four keep file order.

ply2splat's ``f32::exp`` is the C library's ``expf``; glibc's (≥ 2.27) is not correctly rounded
(errors up to 0.502 ulp), and a 1-ulp difference in the sort key reorders near-ties, so
:func:`expf` reproduces glibc's algorithm (a 32-entry table of 2^(i/32) and a cubic in
float64, then one rounding to float32) bit for bit, vectorised.

Only the 14 needed properties are read, in chunks straight from the file, so the peak memory
is a small multiple of 14 float32 columns however many other properties (``f_rest_*``,
normals) the PLY carries.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from decimal import Decimal, localcontext
from pathlib import Path

import numpy as np

from .errors import SceneError
from .scene import REQUIRED, SPLAT_RECORD, atomic_write, open_vertices, usable_rows

log = logging.getLogger(__name__)

NEEDED = REQUIRED                   # ply2splat reads exactly the properties every scene must have
SH_C0_F32 = np.float32(0.2820948)   # ply2splat's float32 literal

_F = np.float32


@dataclass
class ConvertStats:
    count: int
    seconds: float
    read_seconds: float


def read_columns(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The 14 properties ply2splat uses, as float32 columns, read by name a chunk of records at a time
    (:func:`rasterizer.scene.open_vertices`: plyfile parses the header, counts are checked first)."""
    vertices = open_vertices(Path(path), NEEDED)
    cols = {p: np.empty(vertices.count, np.float32) for p in NEEDED}

    def decode(start: int, chunk: np.ndarray) -> None:   # doubles beyond float32 become inf, as in ply2splat
        for p in NEEDED:
            cols[p][start:start + len(chunk)] = chunk[p]

    vertices.decode_chunks(decode)
    return cols


# glibc expf (sysdeps/ieee754/flt-32/e_expf.c, from ARM's optimized-routines): with
# N = 32, x·N/ln2 = k + r, exp(x) = 2^(k/N)·2^(r/N), 2^(k/N) from a table, 2^(r/N) a cubic.
_EXP_N = 32


def _exp2_table() -> np.ndarray:
    """Bits of 2^(i/N), correctly rounded to float64, minus ``i << (52 - 5)`` (glibc's ``tab``)."""
    with localcontext() as ctx:
        ctx.prec = 60
        vals = np.array([float(Decimal(2) ** (Decimal(i) / _EXP_N)) for i in range(_EXP_N)])
    return vals.view(np.uint64) - (np.arange(_EXP_N, dtype=np.uint64) << np.uint64(47))


_EXP_TAB = _exp2_table()
_EXP_SHIFT = float.fromhex("0x1.8p+52")
_EXP_INVLN2N = float.fromhex("0x1.71547652b82fep+0") * _EXP_N
_EXP_C = (float.fromhex("0x1.c6af84b912394p-5") / _EXP_N ** 3,
          float.fromhex("0x1.ebfce50fac4f3p-3") / _EXP_N ** 2,
          float.fromhex("0x1.62e42ff0c52d6p-1") / _EXP_N)


def expf(x: np.ndarray) -> np.ndarray:
    """float32 ``exp`` bit-identical to glibc's ``expf`` (what ply2splat's ``f32::exp`` calls)."""
    x = np.asarray(x, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        z = _EXP_INVLN2N * x.astype(np.float64)
        kd = z + _EXP_SHIFT                  # round to an integer in the low mantissa bits
        ki = kd.view(np.uint64)
        r = z - (kd - _EXP_SHIFT)
        s = (_EXP_TAB[ki % np.uint64(_EXP_N)] + (ki << np.uint64(52 - 5))).view(np.float64)
        c0, c1, c2 = _EXP_C
        y = ((c0 * r + c1) * (r * r) + (c2 * r + 1.0)) * s
        out = y.astype(np.float32)
    # glibc's special cases: |x| >= 88 or NaN
    big = ~(np.abs(x) < np.float32(88.0))
    if big.any():
        xb = x[big]
        ob = out[big]
        ob = np.where(xb > np.float32(float.fromhex("0x1.62e42ep6")), np.float32(np.inf), ob)
        ob = np.where(xb < np.float32(float.fromhex("-0x1.9fe368p6")), np.float32(0.0), ob)
        ob = np.where(np.isnan(xb), xb, ob)
        out[big] = ob
    return out


_exp_f32 = expf


def _trunc_u8(v: np.ndarray) -> np.ndarray:
    """Rust ``v as u8`` for values already clamped to [0, 255]: truncate, NaN → 0."""
    v = np.where(np.isnan(v), _F(0), v)
    return v.astype(np.uint8)


def _total_order(v: np.ndarray) -> np.ndarray:
    """int32 keys that sort like IEEE totalOrder (Rust ``f32::total_cmp``)."""
    i = v.view(np.int32)
    return i ^ ((i >> 31) & np.int32(0x7FFFFFFF))


def splat_order(key: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Stable ascending order by (key, x, y, z) under totalOrder.

    One fast sort on the 64-bit (key, x) pair; only runs that tie on both are re-sorted by
    (y, z, original index), which is what a stable sort by all four keys gives.
    """
    k = _total_order(key).astype(np.int64) << 32
    k |= _total_order(x).astype(np.int64) + (1 << 31)  # to [0, 2^32): unsigned low word
    order = np.argsort(k)
    ks = k[order]
    tie = np.zeros(len(ks), bool)
    same = ks[1:] == ks[:-1]
    tie[1:] |= same
    tie[:-1] |= same
    if tie.any():
        pos = np.flatnonzero(tie)
        idx = order[pos]
        sub = np.lexsort((idx, _total_order(z[idx]), _total_order(y[idx]), k[idx]))
        order[pos] = idx[sub]
    return order


def ply_to_splat_bytes(cols: dict[str, np.ndarray], sort: bool = True) -> np.ndarray:
    """The ``.splat`` records (structured, 32 bytes each) for the columns of :func:`read_columns`."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # inf/NaN inputs: as ply2splat
        return _records(cols, sort)


def _records(cols: dict[str, np.ndarray], sort: bool) -> np.ndarray:
    n = len(cols["x"])
    half, one, c255 = _F(0.5), _F(1.0), _F(255.0)

    opacity = one / (one + _exp_f32(-cols["opacity"]))
    opacity = np.clip(opacity, _F(0.0), one)

    out = np.empty(n, SPLAT_RECORD)
    if sort:
        s_sum = (cols["scale_0"] + cols["scale_1"]) + cols["scale_2"]
        # ply2splat's -(volume·opacity) as its compiler emits it: (−opacity)·volume. Equal for
        # numbers; for NaN keys the sign, and so the order under total_cmp, follows this form
        # (x86 returns the first NaN operand).
        key = -opacity * _exp_f32(s_sum)
        del s_sum
        order: np.ndarray | slice = splat_order(key, cols["x"], cols["y"], cols["z"])
        del key
    else:
        order = slice(None)   # every row, in file order (a view, no copy)

    for i, p in enumerate(("x", "y", "z")):
        out["pos"][:, i] = cols[p][order]
    for i in range(3):
        out["scale"][:, i] = _exp_f32(cols[f"scale_{i}"][order])
    for i in range(3):
        c = half + SH_C0_F32 * cols[f"f_dc_{i}"][order]
        out["rgba"][:, i] = _trunc_u8(np.clip(c, _F(0.0), one) * c255)
    out["rgba"][:, 3] = _trunc_u8(opacity[order] * c255)
    del opacity

    r = [cols[f"rot_{i}"][order] for i in range(4)]
    q_len = np.sqrt(((r[0] * r[0] + r[1] * r[1]) + r[2] * r[2]) + r[3] * r[3])
    ok = q_len > 0  # False for 0 and NaN: ply2splat then writes the identity
    for i in range(4):
        q = np.where(ok, r[i] / q_len, _F(1.0 if i == 0 else 0.0))
        out["rot"][:, i] = _trunc_u8(np.clip(q * _F(128.0) + _F(128.0), _F(0.0), c255))
    return out


def convert(ply_path: str | os.PathLike, splat_path: str | os.PathLike, sort: bool = True) -> ConvertStats:
    """Convert a Gaussian PLY to ``.splat`` (atomically: temp name, then rename)."""
    t0 = time.perf_counter()
    cols = read_columns(ply_path)
    t_read = time.perf_counter() - t0
    if len(cols["x"]) == 0:
        raise SceneError(f"{ply_path}: the PLY holds zero Gaussians")
    # the rows load_scene would drop (scene.usable_rows, the one rule)
    ok = usable_rows(list(cols.values()), np.stack([cols[f"rot_{i}"] for i in range(4)], 1))
    bad = 0 if ok is None else int(len(ok) - ok.sum())
    if bad == len(cols["x"]):
        raise SceneError(f"{ply_path}: every Gaussian has non-finite values or a zero quaternion")
    if bad:   # kept, as ply2splat keeps them (its bytes); load_scene drops them when the .splat is read
        log.warning("%s: %d of %d Gaussians have non-finite values or a zero quaternion", ply_path, bad,
                    len(cols["x"]))
    records = ply_to_splat_bytes(cols, sort)
    del cols
    atomic_write(Path(splat_path), lambda f: f.write(records.view(np.uint8).data))
    return ConvertStats(len(records), time.perf_counter() - t0, t_read)
