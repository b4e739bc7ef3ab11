"""Previews that show what was captured: a floor plan from above and a "dollhouse" ¾ view.

One plan per scene, shared by both stills and the orbit video::

    plan = plan_previews(scene, up="y", cut="auto", size=(1280, 720))
    plan.layout, plan.cut_height, plan.scene, plan.cameras["top"], plan.cameras["angle"]
    write_previews(plan, out_dir, prepared=Prepared(plan.scene, "cpu"))   # preview_top.jpg, preview_angle.jpg
    plan.orbit_cameras(n_frames=150, size=(1280, 720))                      # same cut and framing as "angle"

1. **Layout** (:mod:`rasterizer.layout`): floor, ceiling and class along ``up``, and which
   Gaussians are content rather than floaters.
2. **Cut**: ``auto`` leaves out every Gaussian whose centre lies above :attr:`Layout.auto_cut` — just
   below the ceiling's underside — in indoor scenes, and nothing elsewhere; ``none`` never cuts; a
   number cuts that many metres above the floor (above the lowest content when there is no floor).
   ``plan.scene`` is the scene after the cut: both views and the video render it.
3. **Top view**: orthographic, straight down along −up; +X right and −Z up for +Y up (the first
   horizontal world axis to the right) unless turning the map by 90° lets the footprint fill the
   image :data:`TURN_GAIN` times larger. Framed on the content left after the cut, each Gaussian
   reaching :data:`EXTENT_SIGMAS` σ along each image axis (but for the :data:`TRIM` share that
   reaches farthest), so that it spans ``1 - 2 MARGIN`` of the limiting image dimension, centred.
4. **¾ view**: perspective (:data:`DEFAULT_FOV`° vertical), :data:`ELEVATION_DEG`° above the
   horizontal, from the upper corner (of the four diagonals between the horizontal axes) that
   shows the most: a small z-buffer render of each scores the share of pixels showing the floor,
   plus a quarter of the share showing anything (deterministic, the same on every backend). The
   camera keeps its direction and moves along and across it until the content spans
   ``1 - 2 MARGIN`` of the limiting dimension, centred.
5. **Images**: rendered at ``aa`` times the size and box-filtered down (anti-aliasing), the top view
   with a scale bar and an axis marker (:mod:`rasterizer.overlay`), written atomically.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .camera import MAX_PIXELS, Camera
from .errors import SceneError, one_line
from .imageio import save_image
from .layout import MIN_OPACITY, Layout, analyse_layout, sigma_along
from .layout import SAMPLE as LAYOUT_SAMPLE
from .overlay import MIN_SIZE as OVERLAY_MIN
from .overlay import draw_overlay
from .overlay import fits as overlay_fits
from .render import Prepared
from .scene import Scene
from .stages import ALPHA_MIN, FAR

log = logging.getLogger(__name__)

DEFAULT_BACKGROUND = (0.1490, 0.1647, 0.2157)
DEFAULT_SIZE = (1280, 720)
DEFAULT_FOV = 50.0
AA_GPU, AA_CPU = 2, 1           # default supersampling of the stills per backend (measured: bench/preview.py)
VIEWS = ("top", "angle")
CUTS = ("auto", "none")
MARGIN = 0.03                   # share of the limiting image dimension left free on each side
ELEVATION_DEG = 45.0
TURN_GAIN = 1.2
EXTENT_SIGMAS = 1.5             # a Gaussian reaches this many σ along a direction, for framing
TRIM = 0.0001                   # ... and the framing ignores this share of the farthest reaches (a few huge blobs)
CORNER_SAMPLE = 50_000          # at most this many Gaussians in the corner-choice renders
CORNER_DENSITY = 8              # Gaussians per pixel there (sets their size)
FLOOR_BAND = 0.05               # Gaussians this close to the floor (share of the room height) are floor
_AXES = {"x": 0, "y": 1, "z": 2}


class PreviewError(RuntimeError):
    """Some preview views failed; ``written`` holds the ones that did not."""

    def __init__(self, failures: dict[str, str], written: dict[str, Path]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in failures.items()))
        self.failures, self.written = failures, written


# --------------------------------------------------------------------------- options

def parse_up(up: str) -> np.ndarray:
    """``x|y|z`` with an optional sign, or three numbers ``a,b,c`` → a unit vector."""
    s = str(up).strip().lower()
    axis = _AXES.get(s.lstrip("+-"))
    if axis is not None:
        v = np.zeros(3)
        v[axis] = -1.0 if s.startswith("-") else 1.0
        return v
    try:
        v = np.array([float(t) for t in s.split(",")])
    except ValueError:
        v = np.zeros(0)
    if v.shape != (3,):
        raise ValueError(f"up must be x, y, z (with an optional sign) or three numbers like 0,1,0; got {up!r}")
    n = float(np.linalg.norm(v))
    if not (np.isfinite(v).all() and n > 0 and math.isfinite(n)):
        raise ValueError(f"up vector {up!r} must be finite and not zero")
    return v / n


def parse_cut(cut) -> str | float:
    """``auto``, ``none`` or a positive number of metres above the floor."""
    if isinstance(cut, str) and cut.strip().lower() in CUTS:
        return cut.strip().lower()
    try:
        v = float(cut)
    except (TypeError, ValueError):
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"cut must be auto, none or a positive height in metres above the floor; got {cut!r}")
    return v


# --------------------------------------------------------------------------- robust bounds (info, tests)

@dataclass
class Bounds:
    lo: np.ndarray       # (3,) robust minimum per axis
    hi: np.ndarray       # (3,) robust maximum per axis
    count: int           # Gaussians the percentiles were taken over

    @property
    def center(self) -> np.ndarray:
        return (self.lo + self.hi) / 2.0

    @property
    def extent(self) -> np.ndarray:
        return self.hi - self.lo


def robust_bounds(scene: Scene, min_opacity: float = 0.1, percentiles=(2.0, 98.0), sample: int | None = None) -> Bounds:
    """Per-axis percentile box of the opaque Gaussians (floaters and outliers ignored). With ``sample``,
    of at most about that many Gaussians, evenly spaced in file order (a quick look, as the layout
    analysis takes: the percentiles of 200k of them are the box of the whole within a hair)."""
    step = max(1, -(-len(scene) // sample)) if sample else 1
    means = scene.means[::step]
    with np.errstate(over="ignore"):  # a logit below about -709: exp is inf, the opacity 0
        opaque = 1.0 / (1.0 + np.exp(-scene.opacities[::step].astype(np.float64))) >= min_opacity
    enough = max(16, int(0.005 * len(means)))
    pts = means[opaque] if opaque.sum() >= min(enough, len(means)) else means
    lo, hi = np.percentile(pts.astype(np.float64), percentiles, axis=0)
    # a flat or point-like scene still needs a box with some size on every axis
    size = max(float(np.max(hi - lo)), 1e-6)
    pad = np.maximum(size * 0.01 - (hi - lo), 0.0) / 2.0
    return Bounds(lo - pad, hi + pad, int(len(pts)))


# --------------------------------------------------------------------------- the plan

@dataclass
class Content:
    """The Gaussians the framing keeps in view: the layout's content left after the cut."""

    points: np.ndarray             # (M, 3) float64 centres
    quats: np.ndarray              # (M, 4) their rotations
    log_scales: np.ndarray         # (M, 3)

    def reach(self, direction) -> np.ndarray:
        """How far each Gaussian reaches along ``direction`` (unit): EXTENT_SIGMAS of its σ there; 0 for a
        Gaussian whose scale overflows (the renderer culls it: its covariance is not finite)."""
        r = EXTENT_SIGMAS * sigma_along(self.quats, self.log_scales, direction).astype(np.float64)
        return np.where(np.isfinite(r), r, 0.0)

    def span(self, direction) -> tuple[float, float]:
        """The content's extent along ``direction``, reaches included, but for the TRIM farthest."""
        v, r = self.points @ direction, self.reach(direction)
        return -_reach(r - v), _reach(v + r)

    def every(self, step: int) -> Content:
        return Content(self.points[::step], self.quats[::step], self.log_scales[::step])


@dataclass
class PreviewPlan:
    """Everything both stills and the orbit video share: layout, cut, scene after the cut, cameras."""

    layout: Layout
    cut: str | float               # what was asked: "auto", "none" or metres above the floor
    cut_height: float | None       # Gaussians whose centre lies above this height (along up) are left out
    source: Scene                  # the scene analysed, before the cut
    cameras: dict                  # "top" (orthographic) and "angle" (perspective), at `size`
    size: tuple[int, int]
    fov_y_deg: float
    azimuth: np.ndarray            # horizontal unit vector from the centre towards the angle camera
    content: Content               # what the framing keeps in view
    seconds: dict                  # time per planning step
    kept: np.ndarray | None = None  # mask of the source's Gaussians below the cut (None: all of them)
    _scene: Scene | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def scene(self) -> Scene:
        """The scene after the cut: render (and upload) this one. Copied out of the source on first use
        (0.28 s for 1M SH-3 Gaussians); the GPU preview takes the cut on the device and never asks."""
        if self._scene is None:
            self._scene = self.source if self.kept is None else self.source.subset(self.kept)
        return self._scene

    @property
    def count(self) -> int:
        """The number of Gaussians after the cut."""
        return len(self.source) if self.kept is None else int(np.count_nonzero(self.kept))

    @property
    def up(self) -> np.ndarray:
        return self.layout.up

    def orbit_cameras(self, n_frames: int = 150, size=None, elevation_deg: float = ELEVATION_DEG,
                      sweep_deg: float = 360.0, max_points: int = 20_000) -> list[Camera]:
        """Cameras circling the content's centre at ``elevation_deg``, starting at the ¾ view's corner,
        one distance for the whole orbit (the largest any frame needs to keep the content in frame)."""
        w, h = size or self.size
        e1, e2 = self.layout.axes
        a0 = math.atan2(self.azimuth @ e2, self.azimuth @ e1)
        pts = self.content.points
        centre = (pts.min(0) + pts.max(0)) / 2.0
        sample = self.content.every(max(1, -(-len(pts) // max_points)))
        el = math.radians(elevation_deg)
        dirs = [math.cos(el) * (math.cos(t) * e1 + math.sin(t) * e2) + math.sin(el) * self.up
                for t in a0 + np.radians(sweep_deg) * np.arange(n_frames) / max(n_frames, 1)]
        dist = max(_centred_distance(sample, centre, d, self.up, self.fov_y_deg, w, h) for d in dirs)
        return [Camera.look_at(centre + dist * d, centre, self.up, self.fov_y_deg, w, h) for d in dirs]


def check_frameable(scene: Scene, bounds: Bounds) -> None:
    """Refuse a scene no camera can frame: robust bounds not finite, wider than the far plane
    allows, or narrower than float32 resolves at their distance from the origin."""
    extent = float(np.max(bounds.extent))
    far_from_origin = float(np.max(np.abs(bounds.center)))
    if not (math.isfinite(extent) and math.isfinite(far_from_origin)):
        problem = "its robust bounds are not finite"
    elif extent > FAR / 10:
        problem = f"it spans {extent:.3g} units, too far for the renderer's far plane ({FAR:g}) once framed"
    elif extent < far_from_origin * 2.0 ** -20:
        problem = (f"its Gaussians lie within {extent:.3g} units at {far_from_origin:.3g} from the origin, "
                   "closer together than float32 can tell apart there")
    else:
        return
    raise SceneError(f"{one_line(scene.source)}: cannot frame a view of this scene: {problem}")


def plan_previews(scene: Scene, up="y", cut="auto", size=DEFAULT_SIZE, fov_y_deg: float = DEFAULT_FOV) -> PreviewPlan:
    """Analyse ``scene``, apply the section cut and frame both views (see the module docstring).

    ``up`` is a unit vector or anything :func:`parse_up` reads; ``cut`` anything :func:`parse_cut`
    reads.
    """
    seconds = {}
    t0 = time.perf_counter()
    check_frameable(scene, robust_bounds(scene, sample=LAYOUT_SAMPLE))
    upv = parse_up(up) if isinstance(up, str) else np.asarray(up, float) / np.linalg.norm(up)
    cut = parse_cut(cut)
    layout = analyse_layout(scene, upv)
    seconds["layout"] = time.perf_counter() - t0
    log.info("preview: layout: %s (%.2f s)", layout.describe(), seconds["layout"])

    t0 = time.perf_counter()
    if cut == "auto":
        cut_height = layout.auto_cut
        rule = ("none (only indoor scenes are cut)" if cut_height is None else
                f"auto: {cut_height:.2f}, just below the ceiling's underside at {layout.ceiling_underside:.2f}")
    elif cut == "none":
        cut_height, rule = None, "none"
    else:
        cut_height = layout.base + cut
        rule = (f"{cut:g} above the {'floor' if layout.floor is not None else 'lowest content'} "
                f"({layout.base:.2f}): {cut_height:.2f}")
    idx = layout.content
    if cut_height is not None:
        keep = scene.means @ upv.astype(np.float32) <= cut_height
        idx = idx[keep[idx]]
        log.info("preview: cut %s; %d of %d Gaussians above it left out", rule,
                 len(scene) - int(np.count_nonzero(keep)), len(scene))
    else:
        keep = None
        log.info("preview: cut %s", rule)
    if len(idx) == 0:  # nothing dense below the cut: frame on everything that is left
        idx = np.flatnonzero(keep) if keep is not None else np.arange(len(scene))
    content = Content(scene.means[idx].astype(np.float64), scene.quats[idx], scene.scales[idx])
    seconds["cut"] = time.perf_counter() - t0

    w, h = size
    t0 = time.perf_counter()
    top = _top_camera(layout, content, w, h)
    seconds["top"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    corners = [_corner_camera(layout, content, a, fov_y_deg, w, h) for a in _corners(layout)]
    means, logits = (scene.means, scene.opacities) if keep is None else (scene.means[keep], scene.opacities[keep])
    choice, scores = _choose_corner(means, logits, layout, cut_height, corners)
    seconds["corner"] = time.perf_counter() - t0
    log.info("preview: ¾ view from corner %d of 4 (scores %s; %.2f s)", choice + 1,
             ", ".join(f"{s:.3f}" for s in scores), seconds["corner"])
    return PreviewPlan(layout, cut, cut_height, scene, {"top": top, "angle": corners[choice]}, (w, h), fov_y_deg,
                       _corners(layout)[choice], content, seconds, keep)


def preview_cameras(scene: Scene, up="y", size=DEFAULT_SIZE, cut="auto") -> dict[str, Camera]:
    """The ``top`` and ``angle`` cameras of :func:`plan_previews` (for the scene after its cut)."""
    return plan_previews(scene, up=up, cut=cut, size=size).cameras


# --------------------------------------------------------------------------- framing

def _top_camera(layout: Layout, content: Content, w, h) -> Camera:
    """Orthographic, straight down, the content spanning 1 - 2 MARGIN of the limiting image side."""
    up = layout.up
    e1, e2 = layout.axes
    lo1, hi1 = content.span(e1)
    lo2, hi2 = content.span(e2)
    s1, s2 = max(hi1 - lo1, 1e-9), max(hi2 - lo2, 1e-9)
    turn = min(w / s2, h / s1) > TURN_GAIN * min(w / s1, h / s2)   # much longer along e2: turn the map
    right, (lo_r, hi_r), (span_r, span_u) = (e2, (lo2, hi2), (s2, s1)) if turn else (e1, (lo1, hi1), (s1, s2))
    img_up = np.cross(up, right)
    lo_u, hi_u = content.span(img_up)
    view_h = max(span_u, span_r * h / w) / (1.0 - 2.0 * MARGIN)
    target = right * (lo_r + hi_r) / 2 + img_up * (lo_u + hi_u) / 2 + up * content.span(up)[1]
    eye = target + up * max(span_r, span_u)   # above everything kept; an orthographic view ignores the distance
    return Camera.ortho_look_at(eye, target, img_up, view_h, w, h)


def _reach(values) -> float:
    """The largest of ``values`` but for the TRIM share of outliers."""
    return float(np.quantile(values, 1.0 - TRIM))


def _corners(layout: Layout) -> list[np.ndarray]:
    """The four horizontal diagonals, starting between +e1 and +e2, counter-clockwise seen from above."""
    e1, e2 = layout.axes
    return [(s1 * e1 + s2 * e2) / math.sqrt(2.0) for s1, s2 in ((1, 1), (-1, 1), (-1, -1), (1, -1))]


def _view_basis(direction, up):
    fwd = -direction / np.linalg.norm(direction)
    right = np.cross(fwd, up)
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    return fwd, right, down


def _corner_camera(layout: Layout, content: Content, azimuth, fov_y_deg, w, h) -> Camera:
    """The ¾ camera from ``azimuth``: 45° above the horizontal, framed tightly on the content."""
    el = math.radians(ELEVATION_DEG)
    fwd, right, down = _view_basis(math.cos(el) * azimuth + math.sin(el) * layout.up, layout.up)
    ky = math.tan(math.radians(fov_y_deg) / 2.0) * (1.0 - 2.0 * MARGIN)
    kx = ky * w / h
    # For a camera at c = x·right + y·down + z·fwd (its axes fixed), a point p reaching e is in the
    # shrunk frame when |p·right - x| + e <= kx (p·fwd - z), and the same along down with ky. The
    # least z - and the x, y that centre the content - follow from the extreme points on each side.
    p = content.points
    pr, pd, pf = p @ right, p @ down, p @ fwd
    er, ed = content.reach(right), content.reach(down)
    a_pos, a_neg = _reach(pr + er - kx * pf), _reach(-pr + er - kx * pf)
    b_pos, b_neg = _reach(pd + ed - ky * pf), _reach(-pd + ed - ky * pf)
    x, y = (a_pos - a_neg) / 2.0, (b_pos - b_neg) / 2.0
    z = -max((a_pos + a_neg) / (2.0 * kx), (b_pos + b_neg) / (2.0 * ky))
    eye = x * right + y * down + z * fwd
    return Camera.look_at(eye, eye + fwd, layout.up, fov_y_deg, w, h)


def _centred_distance(content: Content, centre, direction, up, fov_y_deg, w, h) -> float:
    """How far from ``centre`` along ``direction`` a camera looking at ``centre`` keeps the content in frame."""
    fwd, right, down = _view_basis(direction, up)
    ky = math.tan(math.radians(fov_y_deg) / 2.0) * (1.0 - 2.0 * MARGIN)
    kx = ky * w / h
    rel = content.points - centre
    need = np.maximum((np.abs(rel @ right) + content.reach(right)) / kx,
                      (np.abs(rel @ down) + content.reach(down)) / ky) - rel @ fwd
    return _reach(need)


def _choose_corner(means: np.ndarray, logits: np.ndarray, layout: Layout, cut_height, cams) -> tuple[int, list[float]]:
    """Score each corner's view by a small z-buffer render of the opaque Gaussians' centres (at most
    CORNER_SAMPLE of them, about CORNER_DENSITY per pixel): the share of pixels whose nearest
    Gaussian is on the floor, plus a quarter of the share covered at all. The highest wins, the
    first on ties."""
    idx = np.flatnonzero(logits >= np.float32(math.log(MIN_OPACITY / (1.0 - MIN_OPACITY))))
    if len(idx) == 0:
        return 0, [0.0] * len(cams)
    idx = idx[:: max(1, -(-len(idx) // CORNER_SAMPLE))]
    pts = means[idx].astype(np.float64)
    floor = np.zeros(len(idx), bool)
    if layout.floor_plane is not None and layout.floor is not None:
        base = layout.floor
        top = cut_height if cut_height is not None else layout.ceiling or (base + 1.0)
        floor = np.abs(pts @ layout.up - layout.floor_height_at(pts)) <= FLOOR_BAND * (top - base)
    scores = []
    for cam in cams:
        small = _scaled(cam, math.sqrt(len(idx) / CORNER_DENSITY / (cam.width * cam.height)))
        t = pts @ small.world_to_camera[:3, :3].T + small.world_to_camera[:3, 3]
        z = t[:, 2]
        ok = z > 1e-6
        u = np.floor(small.fx * t[ok, 0] / z[ok] + small.cx).astype(np.int64)
        v = np.floor(small.fy * t[ok, 1] / z[ok] + small.cy).astype(np.int64)
        inside = (u >= 0) & (u < small.width) & (v >= 0) & (v < small.height)
        pix = (v * small.width + u)[inside]
        order = np.lexsort((z[ok][inside], pix))
        first = np.flatnonzero(np.diff(pix[order], prepend=-1) != 0)   # the nearest point of each pixel
        nearest = order[first]
        area = small.width * small.height
        scores.append(float(floor[ok][inside][nearest].sum() / area + 0.25 * len(nearest) / area))
    best = max(scores)
    return next(i for i, s in enumerate(scores) if s >= best - 1e-9), scores


def _scaled(cam: Camera, k: float) -> Camera:
    """The same view at ``k`` times the size (intrinsics scaled; pixel centres stay aligned for integer k)."""
    w, h = max(1, round(cam.width * k)), max(1, round(cam.height * k))
    kx, ky = w / cam.width, h / cam.height
    return dataclasses.replace(cam, width=w, height=h, fx=cam.fx * kx, fy=cam.fy * ky, cx=cam.cx * kx, cy=cam.cy * ky)


# --------------------------------------------------------------------------- images

def max_aa(width: int, height: int) -> int:
    """The largest anti-aliasing factor (1..4) whose render, ``aa`` times the size, stays within the
    renderer's pixel budget (:data:`rasterizer.camera.MAX_PIXELS`); 1 when none does."""
    return max([a for a in range(1, 5) if width * height * a * a <= MAX_PIXELS] or [1])


def aa_problem(width: int, height: int, aa: int) -> str | None:
    """Why ``aa`` cannot be used at ``width`` x ``height`` (None when it can)."""
    if aa <= max_aa(width, height):
        return None
    return (f"--aa {aa} at {width}x{height} renders {width * aa}x{height * aa}, more than the renderer's "
            f"{MAX_PIXELS} pixels; use --aa {max_aa(width, height)} or a smaller --size")


def write_previews(plan: PreviewPlan, out_dir, prepared: Prepared | None = None, backend: str = "auto",
                   background=DEFAULT_BACKGROUND, fmt: str = "jpg", quality: int = 90, views=VIEWS,
                   overlay: bool = True, aa: int | None = None, timings: dict | None = None) -> dict[str, Path]:
    """Render and write ``preview_<view>.<fmt>`` for each view; each view independent of the others.

    ``prepared`` (a :class:`Prepared`, or anything with its ``render``) must hold ``plan.scene``, the
    scene after the cut (it is uploaded once and shared with the orbit video). ``timings``, when given,
    receives the seconds of each step per view (``{"top": {"render": …, "overlay": …,
    "encode": …}, …}``). Raises :class:`PreviewError` after trying every view if any failed.
    """
    if prepared is None:
        prepared = Prepared(plan.scene, backend)
    elif getattr(prepared, "n", plan.count) != plan.count:
        raise ValueError(f"prepared holds {prepared.n} Gaussians, the plan's scene after the cut {plan.count}")
    largest = max((plan.cameras[name] for name in views), key=lambda c: c.width * c.height, default=None)
    fits = 4 if largest is None else max_aa(largest.width, largest.height)
    if aa is None:
        on_gpu = getattr(prepared, "backend", None) is not None and prepared.backend.__name__.endswith("gpu_cupy")
        aa = min(AA_GPU if on_gpu else AA_CPU, fits)
    if not (isinstance(aa, int) and 1 <= aa <= 4):
        raise ValueError(f"aa must be an integer 1..4, got {aa!r}")
    if aa > fits and largest is not None:
        raise ValueError(aa_problem(largest.width, largest.height, aa))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, failures = {}, {}
    for name in views:
        path = out_dir / f"preview_{name}.{fmt.lstrip('.')}"
        cam = plan.cameras[name]
        try:
            t0 = time.perf_counter()
            img = prepared.render(_scaled(cam, aa), background, downscale=aa)   # resolved where it was rendered
            t1 = time.perf_counter()
            rgb = img.rgb
            # a pixel with alpha > 1/255 lifts its block's mean above 1/255 / aa^2
            if not (img.alpha > ALPHA_MIN / (aa * aa)).any():
                log.warning("preview %s: nothing of the scene is visible in this view", name)
            extra = ""
            if overlay and cam.is_ortho and overlay_fits(cam.width, cam.height):
                rgb, bar = draw_overlay(rgb, cam)
                extra = f"; scale bar {bar.label} = {bar.pixels:.1f} px"
            elif overlay and cam.is_ortho:
                extra = f"; no overlay: {cam.width}x{cam.height} is smaller than {OVERLAY_MIN[0]}x{OVERLAY_MIN[1]}"
            t2 = time.perf_counter()
            written[name] = save_image(path, rgb, quality=quality)
            t3 = time.perf_counter()
            if timings is not None:
                timings[name] = {"render": t1 - t0, "overlay": t2 - t1, "encode": t3 - t2}
            log.info("preview %s: wrote %s (%dx%d; render %.2f s at %dx and downscaled, overlay %.2f s, "
                     "encode %.2f s%s)", name, path, cam.width, cam.height, t1 - t0, aa, t2 - t1, t3 - t2, extra)
        except Exception as e:  # noqa: BLE001 - one view failing must not cost the others
            failures[name] = f"{type(e).__name__}: {e}"
            log.warning("preview %s failed: %s", name, failures[name])
    if failures:
        raise PreviewError(failures, written)
    return written

