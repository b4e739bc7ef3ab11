"""Scene layout along the up axis: where the floor and the ceiling are, and what kind of scene it is.

Posemesh domains are mostly indoor spaces scanned from the inside. The previews need the floor and
the ceiling (to cut the ceiling away), the class of the scene (only indoor scenes are cut) and which
Gaussians are content rather than floaters (to frame tightly). All of it comes from one pass over the
opaque Gaussians (opacity ≥ :data:`MIN_OPACITY`; at most :data:`SAMPLE` of them, evenly
spaced in file order, their weights scaled up to match), binned into a grid of vertical columns ("cells")
over the horizontal plane and height bins along up. The grid covers the 1st-99th percentile box of
those Gaussians, widened by a quarter on every side; it has :data:`CELLS` cells along the longer side
of that box and :data:`HEIGHT_BINS` bins over its height, so the analysis does not depend on units.

1. **Coverage seen from above.** Each Gaussian adds ``opacity · 2π σ₁σ₂`` of its ellipse seen
   from above (the integral of its alpha over the horizontal plane, at most one cell) to its voxel,
   divided by the cell's area. A horizontal surface reaches about 1 or more in the height bins it
   lies in; a wall seen edge-on, a floater or the air does not. Per cell, the *levels* are the runs
   of height bins whose coverage, summed over :data:`BAND` bins, is at least :data:`DENSE`. Cells
   are at least :data:`CELL_SIGMAS` typical Gaussians wide, so that a surface covers all of its cells.
   A cell is *occupied* when it has a level and holds at least :data:`CELL_MIN_GAUSSIANS` analysed
   Gaussians: one big Gaussian alone covering a cell (the world outside seen through a window, a
   shell of sky) is not a surface, and thousands of those would make the floor a minority.
2. **Content.** A Gaussian is content (not a floater) when it is not alone in its voxel and at
   least :data:`CONTENT_MIN_COUNT` opaque Gaussians, and at least :data:`CONTENT_MIN_SHARE` of the
   median such count, lie in its voxel and the 26 around it (voxels grouped 2 or 4 to a side where
   the Gaussians are too sparse for single ones). When fewer than half the analysed Gaussians are
   content (a sparse sample of a scene), the 1st-99th percentile box decides instead.
3. **Floor.** The plane through the cells' lowest levels: hypotheses are horizontal planes at every
   height bin and planes through random (seeded) triples of cells tilted at most
   :data:`MAX_TILT_DEG`; the lowest one that at least half as many cells support as the best one
   wins and is refined by least squares. It is the floor when it is supported by at least
   :data:`FLOOR_MIN_SHARE` of the occupied cells (and :data:`MIN_LAYER_CELLS`) and at most
   :data:`FLOOR_MAX_BELOW` of the content lies below it: in a scan without a floor the lowest level
   of most cells is the ceiling, with everything below it.
4. **Ceiling.** Candidates are the floor's cells (every occupied cell when there is no floor: a
   roof over an inside that was not captured is not a ceiling) whose highest level is a thin layer
   (at most :data:`CEILING_MAX_THICKNESS` of its clearance), smooth (at least two of its four
   neighbours at the same height: a surface, not the top of a cloud of blobs) and at least
   :data:`CEILING_MIN_CLEARANCE` metres above the floor plane (above the lowest content when there
   is no floor). Candidates below the first height shared by :data:`CEILING_LAYER_SHARE` of those
   cells are dropped (a cabinet top where the ceiling was not captured); the rest, when they cover
   at least :data:`CEILING_MIN_SHARE` of them (and :data:`MIN_LAYER_CELLS`), are the ceiling: its
   height is their median, its underside the 5th percentile of their layers' lower edges, so
   several rooms with different ceiling heights all lose theirs, and a tilted ceiling all of it.
5. **Class.** ``indoor`` with a ceiling (with or without a floor), ``ground`` with a floor and no
   ceiling, ``object`` with neither. The automatic section cut (:attr:`Layout.auto_cut`) lies
   :data:`CUT_MARGIN` of the room height below the ceiling's underside, for indoor scenes only.

The only metric constant is :data:`CEILING_MIN_CLEARANCE` (the domain frame is in metres); a scene
in other units is still analysed, but a room smaller than that in its units reads as an object.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from .scene import Scene

log = logging.getLogger(__name__)
f32 = np.float32

INDOOR, GROUND, OBJECT = "indoor", "ground", "object"
KINDS = {INDOOR: "floor and ceiling", GROUND: "a floor, no ceiling", OBJECT: "no floor, no ceiling"}

MIN_OPACITY = 0.2            # fainter Gaussians are ignored (floaters, haze)
SAMPLE = 200_000             # at most this many of them are analysed (evenly spaced in file order)
CELLS = 64                   # grid cells along the longer horizontal side of the core box
CELL_SIGMAS = 2.0            # ... but at least this many typical Gaussians (largest σ) wide
HEIGHT_BINS = 128            # height bins over the core box's height
PAD = 0.25                   # the grid reaches this share of the core box beyond it on every side
DENSE = 0.5                  # coverage seen from above (summed over BAND bins) of a surface
BAND = 3                     # height bins summed to find a level (a layer a few cm thick)
LEVEL_BINS = 4               # a level's height: the densest bin among the first/last of its run
TOL_BINS = 2.5               # a cell supports a plane when its level is this close to it
RANSAC_TRIPLES = 256
MAX_TILT_DEG = 30.0
MIN_LAYER_CELLS = 16         # a floor or a ceiling covers at least this many cells
FLOOR_MIN_SHARE = 0.25
FLOOR_MAX_BELOW = 0.2
CEILING_MIN_CLEARANCE = 1.8  # metres above the floor
CEILING_MIN_SHARE = 0.2
CEILING_LAYER_SHARE = 0.05
CEILING_MAX_THICKNESS = 0.25
CUT_MARGIN = 0.02            # the automatic cut lies this share of the room height below the ceiling's underside
CELL_MIN_GAUSSIANS = 3      # analysed Gaussians an occupied cell holds at least
CONTENT_TYPICAL = 27
CONTENT_MIN_COUNT = 4
CONTENT_MIN_SHARE = 0.02


@dataclass(frozen=True)
class Layout:
    """What :func:`analyse_layout` found. Heights are along ``up`` (``means @ up``), in scene units."""

    up: np.ndarray                 # (3,) unit up vector
    axes: tuple                    # two unit horizontal vectors (the world axes other than up, made orthogonal to it)
    kind: str                      # INDOOR, GROUND or OBJECT
    floor: float | None            # height of the floor plane at the centre of its cells
    floor_tilt_deg: float | None   # angle between the floor plane and the horizontal
    floor_share: float             # share of the occupied cells that support the floor plane
    floor_plane: tuple | None      # (a, b, c): the floor's height is a (x·e1) + b (x·e2) + c
    ceiling: float | None          # median height of the ceiling layer
    ceiling_underside: float | None  # 5th percentile of the lower edges of the ceiling layer
    ceiling_share: float           # share of the occupied cells under the ceiling
    base: float                    # the floor, else the lowest content (1st percentile): what cut heights count from
    content: np.ndarray            # indices of analysed Gaussians in dense neighbourhoods (not floaters)
    cell: float                    # grid cell size (scene units)
    seconds: float                 # time the analysis took

    @property
    def auto_cut(self) -> float | None:
        """The default section cut: just below the ceiling's underside (indoor scenes only)."""
        if self.kind != INDOOR or self.ceiling is None or self.ceiling_underside is None:
            return None
        return self.ceiling_underside - CUT_MARGIN * (self.ceiling - self.base)

    def floor_height_at(self, points: np.ndarray) -> np.ndarray:
        """Height of the floor plane under each of ``points`` (N, 3)."""
        if self.floor_plane is None:
            raise ValueError("the scene has no floor plane")
        a, b, c = self.floor_plane
        return a * (points @ self.axes[0]) + b * (points @ self.axes[1]) + c

    def describe(self) -> str:
        """One line: class, floor and ceiling."""
        floor = ("no floor" if self.floor is None else
                 f"floor {self.floor:.2f} (tilt {self.floor_tilt_deg:.1f}°, {self.floor_share:.0%} of the footprint)")
        ceiling = ("no ceiling" if self.ceiling is None else
                   f"ceiling {self.ceiling:.2f} ({self.ceiling_share:.0%} of the footprint, underside "
                   f"{self.ceiling_underside:.2f})")
        kind = "a ceiling, no floor found" if self.kind == INDOOR and self.floor is None else KINDS[self.kind]
        return f"{self.kind} ({kind}): {floor}, {ceiling}"


def horizontal_axes(up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two world axes other than the one closest to ``up``, in x, y, z order, made orthogonal to
    ``up`` and to each other (x and z for +Y up)."""
    up = np.asarray(up, np.float64)
    k = int(np.argmax(np.abs(up)))
    out: list[np.ndarray] = []
    for i in (i for i in range(3) if i != k):
        v = np.eye(3)[i] - (np.eye(3)[i] @ up) * up
        for w in out:
            v -= (v @ w) * w
        out.append(v / np.linalg.norm(v))
    return out[0], out[1]


def in_own_axes(quats: np.ndarray, v) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``Rᵀv`` for each Gaussian's rotation ``R`` (quaternions w, x, y, z, any length): the world
    direction ``v`` in the Gaussian's own axes, one array per axis."""
    inv = f32(1) / np.sqrt(np.einsum("ij,ij->i", quats, quats))
    w, qx, qy, qz = quats[:, 0] * inv, -quats[:, 1] * inv, -quats[:, 2] * inv, -quats[:, 3] * inv   # conjugate
    ux, uy, uz = (f32(c) for c in v)
    tx, ty, tz = 2 * (qy * uz - qz * uy), 2 * (qz * ux - qx * uz), 2 * (qx * uy - qy * ux)
    return (ux + w * tx + qy * tz - qz * ty,                 # v + w t + q × t, t = 2 q × v
            uy + w * ty + qz * tx - qx * tz,
            uz + w * tz + qx * ty - qy * tx)


def sigma_along(quats: np.ndarray, log_scales: np.ndarray, v) -> np.ndarray:
    """Each Gaussian's standard deviation along the unit direction ``v``: ``√(vᵀΣv)``."""
    r = in_own_axes(quats, v)
    with np.errstate(over="ignore", invalid="ignore"):   # huge log-scales give inf: the renderer culls those
        return np.sqrt(sum(r[k] * r[k] * np.exp(2 * log_scales[:, k]) for k in range(3)))


def footprint_area(scene: Scene, up: np.ndarray, index=slice(None)) -> np.ndarray:
    """``2π σ₁σ₂`` of each Gaussian's ellipse seen along ``up`` (projected on the plane normal to it):
    the integral of its (unit-opacity) alpha over that plane. ``det Σ⊥ = det Σ · uᵀΣ⁻¹u``, and with
    ``Σ = R S² Rᵀ``: ``uᵀΣ⁻¹u = Σₖ (Rᵀu)ₖ² / sₖ²``."""
    r = in_own_axes(scene.quats[index], up)
    ls = scene.scales[index]
    quad = sum(r[k] * r[k] * np.exp(-2 * ls[:, k]) for k in range(3))
    return f32(2.0 * math.pi) * np.exp(ls.sum(1)) * np.sqrt(quad)


def analyse_layout(scene: Scene, up) -> Layout:
    """Floor, ceiling, class and content of ``scene`` with ``up`` (a unit vector) pointing up.

    Finite but absurd values (positions near float32's limit, log-scales of +-80) overflow to inf on
    the way; those Gaussians fall out of the grid, and a scene whose robust extent itself is not
    finite is an object with no floor or ceiling (no framing check here: the renderer refuses it)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _analyse_layout(scene, up)


def _analyse_layout(scene: Scene, up) -> Layout:
    t0 = time.perf_counter()
    up = np.asarray(up, np.float64)
    e1, e2 = horizontal_axes(up)
    basis = np.stack([e1, e2, up]).astype(f32)              # local (p, q, h)

    opac = (1.0 / (1.0 + np.exp(-scene.opacities.astype(f32)))).astype(f32)
    opaque = np.flatnonzero(opac >= MIN_OPACITY)
    stride = max(1, -(-len(opaque) // SAMPLE))
    opaque = opaque[::stride]
    local = np.einsum("ij,kj->ik", scene.means[opaque], basis)   # (M, 3); einsum: BLAS is slow on (M, 3)
    if len(opaque) < 16:
        return _empty(scene, up, (e1, e2), local, t0)
    lo, hi = np.percentile(local, [1.0, 99.0], axis=0)
    ext = hi - lo
    horiz = float(max(ext[0], ext[1]))
    if not (horiz > 0 and np.isfinite((lo - PAD * ext).astype(f32)).all() and np.isfinite(ext.astype(f32)).all()):
        return _empty(scene, up, (e1, e2), local, t0)
    area = footprint_area(scene, up, opaque)
    # cells at least CELL_SIGMAS typical Gaussians wide, so that a surface covers each of its cells
    sigma = float(np.median(np.exp(scene.scales[opaque].max(1))))
    cell = max(horiz / CELLS, CELL_SIGMAS * sigma)
    if not math.isfinite(cell * cell):
        return _empty(scene, up, (e1, e2), local, t0)
    ext[2] = max(ext[2], 0.01 * horiz)
    hbin = float(ext[2]) / HEIGHT_BINS
    origin = lo - PAD * ext
    step = np.array([cell, cell, hbin])
    shape = np.ceil(ext * (1 + 2 * PAD) / step).astype(np.int64) + 2
    ijk = np.floor((local - origin.astype(f32)) / step.astype(f32)).astype(np.int64)
    inside = ((ijk >= 0) & (ijk < shape)).all(1)
    if not inside.any():
        return _empty(scene, up, (e1, e2), local, t0)
    ijk, sel, local, area = ijk[inside], opaque[inside], local[inside], area[inside]
    nx, nz, nh = (int(v) for v in shape)
    o = opac[sel] * f32(stride)
    dense_content = _content(ijk, shape)
    content = sel[dense_content]
    if len(content) < 0.5 * len(sel):  # no dense structure (a sparse sample of a scene): the robust box
        inner = ((local >= lo) & (local <= hi)).all(1)
        content, dense_content = sel[inner], inner

    # coverage seen from above, per voxel (the cells that hold any Gaussian x height bins)
    cell_of = ijk[:, 0] * nz + ijk[:, 1]
    per_cell = np.bincount(cell_of, minlength=nx * nz)
    used = np.flatnonzero(per_cell)
    row = np.empty(nx * nz, np.int64)
    row[used] = np.arange(len(used))
    weight = o * np.fmin(area, f32(cell * cell)) / f32(cell * cell)   # fmin: an inf * 0 area covers the cell
    cover = np.bincount(row[cell_of] * nh + ijk[:, 2], weights=weight,
                        minlength=len(used) * nh).reshape(len(used), nh).astype(f32)
    band = cover.copy()
    band[:, 1:] += cover[:, :-1]
    band[:, :-1] += cover[:, 1:]
    dense = band >= DENSE
    # a cell one or two big Gaussians cover alone (background blobs seen through a window, a shell of
    # sky) is not a surface: it would dilute the floor's share of the occupied cells
    occupied = dense.any(1) & (per_cell[used] >= CELL_MIN_GAUSSIANS)
    occ, dense, cover = used[occupied], dense[occupied], cover[occupied]
    n_occ = len(occ)
    heights = origin[2] + (np.arange(nh) + 0.5) * hbin
    cells_p = origin[0] + (occ // nz + 0.5) * cell
    cells_q = origin[1] + (occ % nz + 0.5) * cell
    tol = TOL_BINS * hbin

    # floor: the lowest well-supported plane through the cells' lowest levels, with little content below it
    floor = floor_tilt = plane = None
    floor_share = 0.0
    footprint = np.ones(n_occ, bool)          # the cells a ceiling must cover: the floor's, when there is one
    if n_occ >= 3:
        low_level, _, _ = _levels(dense, cover, heights, hbin, lowest=True)
        pts = np.stack([cells_p, cells_q, low_level], 1)
        plane, support = _floor_plane(pts, tol, hbin)
        floor_share = support / n_occ
        below = dense_content & (local[:, 2] < _plane_at(plane, local[:, 0], local[:, 1]) - 2 * tol)
        below_share = float(o[below].sum() / max(float(o[dense_content].sum()), 1e-12))
        log.debug("layout: lowest-level plane %s supported by %.0f%% of %d cells, %.0f%% of the content below it",
                  np.round(plane, 4), 100 * floor_share, n_occ, 100 * below_share)
        if support >= max(MIN_LAYER_CELLS, FLOOR_MIN_SHARE * n_occ) and below_share <= FLOOR_MAX_BELOW:
            footprint = np.abs(low_level - _plane_at(plane, cells_p, cells_q)) <= tol
            centre = pts[footprint, :2].mean(0)
            floor = float(_plane_at(plane, centre[0], centre[1]))
            floor_tilt = math.degrees(math.atan(math.hypot(plane[0], plane[1])))
        else:
            plane = None
    base = floor if floor is not None else float(np.percentile(local[dense_content, 2], 1.0))

    # ceiling: over the floor's footprint, highest levels that are thin, smooth (like their neighbours:
    # a surface, not the top of a cloud) and well above the floor, in layers holding a fair share
    ceiling = underside = None
    ceiling_share = 0.0
    if n_occ:
        top_level, top_lower, top_upper = _levels(dense, cover, heights, hbin, lowest=False)
        ref = _plane_at(plane, cells_p, cells_q) if plane is not None else np.full(n_occ, base)
        clearance = top_level - ref
        cand = np.flatnonzero(footprint & (clearance >= CEILING_MIN_CLEARANCE)
                              & (top_upper - top_lower <= CEILING_MAX_THICKNESS * clearance)
                              & _smooth(occ, top_level, (nx, nz), 2 * tol))
        footprint_cells = int(footprint.sum())
        if len(cand):
            # drop the candidates below the first height shared by a layer covering CEILING_LAYER_SHARE
            # of the footprint (a cabinet top where the ceiling was not captured is smaller); several
            # rooms with different ceiling heights all stay
            c = np.sort(clearance[cand])
            w = 2 * tol
            around = np.searchsorted(c, c + w, "right") - np.searchsorted(c, c - w, "left")
            layer = around >= CEILING_LAYER_SHARE * footprint_cells
            under = cand[clearance[cand] >= c[np.argmax(layer)] - w] if layer.any() else cand[:0]
            ceiling_share = len(under) / footprint_cells
            if ceiling_share >= CEILING_MIN_SHARE and len(under) >= MIN_LAYER_CELLS:
                ceiling = float(np.median(top_level[under]))
                underside = float(np.percentile(top_lower[under], 5.0))

    kind = INDOOR if ceiling is not None else GROUND if floor is not None else OBJECT
    layout = Layout(up, (e1, e2), kind, floor, floor_tilt, floor_share, None if plane is None else tuple(plane),
                    ceiling, underside, ceiling_share, base, content, cell, time.perf_counter() - t0)
    log.debug("layout: grid %dx%dx%d (cell %.3g, bin %.3g), %d opaque Gaussians analysed, %d content, "
              "%d occupied cells", nx, nz, nh, cell, hbin, len(sel), len(content), n_occ)
    return layout


def _content(ijk: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """Per Gaussian: not alone in its block, and enough opaque Gaussians in the 3x3x3 blocks around
    it, at the finest block size (1, 2 or 4 voxels) where a typical Gaussian has CONTENT_TYPICAL such
    neighbours."""
    for level in range(3):
        b = ijk >> level
        sh = (shape + (1 << level) - 1) >> level
        flat = (b[:, 0] * sh[1] + b[:, 1]) * sh[2] + b[:, 2]
        count = np.bincount(flat, minlength=int(np.prod(sh))).astype(f32).reshape(*(int(v) for v in sh))
        around = _box3(count).reshape(-1)[flat]
        typical = float(np.median(around))
        if typical >= CONTENT_TYPICAL:
            break
    # a Gaussian alone in its block is a floater even beside a wall
    return (around >= max(CONTENT_MIN_COUNT, CONTENT_MIN_SHARE * typical)) & (count.reshape(-1)[flat] >= 2)


def _empty(scene, up, axes, local, t0) -> Layout:
    base = float(np.percentile(local[:, 2], 1.0)) if len(local) else float(np.median(scene.means @ up))
    return Layout(up, axes, OBJECT, None, None, 0.0, None, None, None, 0.0, base, np.arange(len(scene)), 0.0,
                  time.perf_counter() - t0)


def _smooth(cells: np.ndarray, level: np.ndarray, shape, tol: float) -> np.ndarray:
    """Per cell: at least two of its four neighbours have a level within ``tol`` of its own."""
    grid = np.full(shape[0] * shape[1], np.nan)
    grid[cells] = level
    grid = np.pad(grid.reshape(shape), 1, constant_values=np.nan)
    i, j = cells // shape[1] + 1, cells % shape[1] + 1
    close = sum(np.abs(grid[i + di, j + dj] - level) <= tol for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)))
    return close >= 2


def _box3(a: np.ndarray) -> np.ndarray:
    """Sum over each element's 3x3x3 neighbourhood (zero outside)."""
    out = a.copy()
    for axis in range(3):
        src = out.copy()
        n = src.shape[axis]
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, n - 1), slice(1, n)
        out[tuple(hi)] += src[tuple(lo)]
        out[tuple(lo)] += src[tuple(hi)]
    return out


def _levels(dense, cover, heights, hbin, lowest: bool):
    """Per cell, the lowest (or highest) level: its height (the densest of its first/last
    LEVEL_BINS bins) and the lower and upper edges of its run of dense bins."""
    nh = dense.shape[1]
    idx = np.arange(nh)
    if not lowest:  # the same search from the top
        dense, cover = dense[:, ::-1], cover[:, ::-1]
    first = np.argmax(dense, 1)
    gap = ~dense & (idx[None, :] > first[:, None])
    end = np.where(gap.any(1), np.argmax(gap, 1), nh)       # exclusive
    near = (idx[None, :] >= first[:, None]) & (idx[None, :] < np.minimum(end, first + LEVEL_BINS)[:, None])
    peak = np.argmax(np.where(near, cover, -1.0), 1)
    if not lowest:
        peak, first, end = nh - 1 - peak, nh - end, nh - first
    return heights[peak], heights[first] - hbin / 2, heights[end - 1] + hbin / 2


def _plane_at(plane, p, q):
    return plane[0] * p + plane[1] * q + plane[2]


def _floor_plane(pts: np.ndarray, tol: float, hbin: float):
    """The lowest well-supported plane ``h = a p + b q + c`` through the cells' lowest levels, and
    how many cells support it (deterministic)."""
    p, q, h = pts[:, 0], pts[:, 1], pts[:, 2]
    # horizontal hypotheses: one per height bin
    centres = np.arange(h.min(), h.max() + hbin, hbin)
    hyps = [np.stack([np.zeros_like(centres), np.zeros_like(centres), centres], 1)]
    # tilted ones through random triples of cells
    rng = np.random.default_rng(0)
    tri = rng.integers(0, len(pts), (RANSAC_TRIPLES, 3))
    a = np.stack([p[tri], q[tri], np.ones(tri.shape)], 2)
    det = np.linalg.det(a)
    ok = np.abs(det) > 1e-12 * max(1.0, float(np.ptp(p) * np.ptp(q)))
    if ok.any():
        sol = np.linalg.solve(a[ok], h[tri[ok]][..., None])[..., 0]
        sol = sol[np.hypot(sol[:, 0], sol[:, 1]) <= math.tan(math.radians(MAX_TILT_DEG))]
        hyps.append(sol)
    hyp = np.concatenate(hyps)
    resid = np.abs(h[None, :] - (hyp[:, :1] * p[None, :] + hyp[:, 1:2] * q[None, :] + hyp[:, 2:]))
    score = (resid <= tol).sum(1)
    pc, qc = p.mean(), q.mean()
    strong = np.flatnonzero(score >= 0.5 * score.max())
    best = hyp[strong[np.argmin(_plane_at(hyp[strong].T, pc, qc))]]
    for _ in range(3):  # least squares on the supporting cells
        inl = np.abs(h - _plane_at(best, p, q)) <= tol
        if inl.sum() < 3:
            break
        fit, *_ = np.linalg.lstsq(np.stack([p[inl], q[inl], np.ones(inl.sum())], 1), h[inl], rcond=None)
        if math.hypot(fit[0], fit[1]) > math.tan(math.radians(MAX_TILT_DEG)):
            break
        best = fit
    return best, int((np.abs(h - _plane_at(best, p, q)) <= tol).sum())
