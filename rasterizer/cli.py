"""``python -m rasterizer``: render camera paths, write previews, describe scenes.

Bad input (missing or malformed files, bad options, an unavailable backend) prints one
line on stderr and exits with code 2, before any output file is created.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

from .camera import load_camera_path
from .errors import SceneError
from .imageio import save_image
from .layout import KINDS, analyse_layout
from .preview import (AA_CPU, AA_GPU, DEFAULT_BACKGROUND, VIEWS, PreviewError, parse_cut, parse_up, plan_previews,
                      robust_bounds, write_previews)
from .render import Prepared
from .scene import load_scene

log = logging.getLogger("rasterizer")


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SceneError(f"--size must look like 1280x720, got {text!r}") from None
    if not (0 < w <= 16384 and 0 < h <= 16384):
        raise SceneError(f"--size {text}: width and height must be 1..16384")
    return w, h


def parse_color(text: str) -> tuple[float, float, float]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3 or not all(0.0 <= v <= 1.0 for v in vals):
        raise SceneError(f"--background must be three numbers in 0..1 like 0.1,0.2,0.3; got {text!r}")
    return vals


def _load(path: str):
    t0 = time.perf_counter()
    scene = load_scene(path)
    log.info("loaded %s: %d Gaussians, SH degree %d (%.2f s)", path, len(scene), scene.sh_degree,
             time.perf_counter() - t0)
    return scene


def _prepare(scene, backend: str) -> Prepared:
    t0 = time.perf_counter()
    prepared = Prepared(scene, backend)
    log.info("backend %s ready (%.2f s)", prepared.backend.__name__.rsplit(".", 1)[-1],
             time.perf_counter() - t0)
    return prepared


def cmd_render(args) -> int:
    background = parse_color(args.background) if args.background else (0.0, 0.0, 0.0)
    cams = load_camera_path(args.camera_path)
    scene = _load(args.scene)
    prepared = _prepare(scene, args.backend)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = last = time.perf_counter()
    for i, cam in enumerate(cams):
        img = prepared.render(cam, background)
        save_image(out / f"{i:05d}.png", img.rgb, img.alpha if args.alpha else None)
        now = time.perf_counter()
        if now - last > 1.0 or i + 1 == len(cams):
            log.info("rendered %d/%d frames (%.3f s/frame)", i + 1, len(cams), (now - t0) / (i + 1))
            last = now
    return 0


def cmd_preview(args) -> int:
    size = parse_size(args.size)
    background = parse_color(args.background) if args.background else DEFAULT_BACKGROUND
    up, cut = _option(parse_up, "--up", args.up), _option(parse_cut, "--cut", args.cut)
    if args.aa is not None and not 1 <= args.aa <= 4:
        raise SceneError(f"--aa must be 1..4, got {args.aa}")
    if args.scene:
        scene = _load(args.scene)
    else:
        from .demo import demo_scene
        scene = demo_scene()
        log.info("no scene given: rendering the built-in demo scene (%d Gaussians)", len(scene))
    plan = plan_previews(scene, up=up, cut=cut, size=size)
    prepared = _prepare(plan.scene, args.backend)
    try:
        written = write_previews(plan, args.out, prepared=prepared, background=background, fmt=args.format,
                                 quality=args.quality, views=args.views, overlay=not args.no_overlay, aa=args.aa)
    except PreviewError as e:
        print(f"error: preview failed: {e}", file=sys.stderr)
        return 1
    for path in written.values():
        print(path)
    return 0


def _option(parse, name, text):
    try:
        return parse(text)
    except ValueError as e:
        raise SceneError(f"{name}: {e}") from None


def cmd_info(args) -> int:
    scene = _load(args.scene)
    b = robust_bounds(scene)
    opac = scene.sigmoid_opacities()
    fmt = lambda v: "(" + ", ".join(f"{x:.4g}" for x in v) + ")"  # noqa: E731
    print(f"file:          {args.scene}")
    print(f"gaussians:     {len(scene)}")
    print(f"sh degree:     {scene.sh_degree}")
    print(f"bounds:        min {fmt(scene.means.min(0))}  max {fmt(scene.means.max(0))}")
    print(f"robust bounds: min {fmt(b.lo)}  max {fmt(b.hi)}  (opacity >= 0.1, 2nd-98th pct, "
          f"{b.count} Gaussians)")
    print(f"robust centre: {fmt(b.center)}  extent {fmt(b.extent)}")
    print(f"opacity:       median {np.median(opac):.3f}, {np.mean(opac >= 0.1) * 100:.1f}% >= 0.1")
    lay = analyse_layout(scene, _option(parse_up, "--up", args.up))
    height = lambda v: "none" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"class:         {lay.kind} ({KINDS[lay.kind]})")
    print(f"floor:         {height(lay.floor)}" + ("" if lay.floor is None else
          f"  (tilt {lay.floor_tilt_deg:.1f} deg, {lay.floor_share:.0%} of the footprint)"))
    print(f"ceiling:       {height(lay.ceiling)}" + ("" if lay.ceiling is None else
          f"  (underside {lay.ceiling_underside:.3f}, {lay.ceiling_share:.0%} of the footprint)"))
    print(f"auto cut:      {height(lay.auto_cut)}  (heights along up = {fmt(lay.up)})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rasterizer", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True)
    backends = ["numpy", "cpu", "gpu", "auto"]

    r = sub.add_parser("render", help="render every camera of a nerfstudio camera path to PNGs")
    r.add_argument("scene", help="scene file (.ply or .splat)")
    r.add_argument("--camera-path", required=True, help="nerfstudio camera-path JSON")
    r.add_argument("--out", required=True, help="output folder (00000.png, 00001.png, ...)")
    r.add_argument("--backend", choices=backends, default="auto")
    r.add_argument("--background", help="R,G,B in 0..1 (default black)")
    r.add_argument("--alpha", action="store_true", help="write RGBA PNGs")
    r.set_defaults(func=cmd_render)

    v = sub.add_parser("preview", help="write preview_top and preview_angle images")
    v.add_argument("scene", nargs="?", help="scene file (.ply or .splat); the demo scene when omitted")
    v.add_argument("--out", required=True, help="output folder")
    up_help = "world up: x, y, z, -x, -y, -z or a vector like 0,1,0 (default y; write --up=-y)"
    v.add_argument("--up", default="y", help=up_help)
    v.add_argument("--cut", default="auto", help="leave out what lies above: auto (just below the ceiling of "
                   "indoor scenes), none, or metres above the floor (default auto)")
    v.add_argument("--no-overlay", action="store_true", help="no scale bar and axis marker on the top view")
    v.add_argument("--aa", type=int,
                   help=f"supersampling factor 1..4 (default {AA_GPU} on the GPU, {AA_CPU} on the CPU)")
    v.add_argument("--size", default="1280x720", help="WxH (default 1280x720)")
    v.add_argument("--backend", choices=backends, default="auto")
    v.add_argument("--background", help="R,G,B in 0..1 (default nerfstudio's 0.149,0.165,0.216)")
    v.add_argument("--format", choices=["jpg", "png", "webp"], default="jpg")
    v.add_argument("--quality", type=int, default=90, help="JPEG/WebP quality (default 90)")
    v.add_argument("--views", nargs="+", choices=VIEWS, default=list(VIEWS))
    v.set_defaults(func=cmd_preview)

    i = sub.add_parser("info", help="count, SH degree, bounds, robust bounds and layout (floor, ceiling, class)")
    i.add_argument("scene")
    i.add_argument("--up", default="y", help=up_help)
    i.set_defaults(func=cmd_info)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except SceneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
