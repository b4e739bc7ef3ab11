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
from .preview import DEFAULT_BACKGROUND, VIEWS, PreviewError, parse_up, robust_bounds, write_previews
from .render import Prepared
from .scene import PLY_MAGIC, atomic_write, load_scene, save_ply
from .sog import KMEANS_ITERATIONS, write_sog
from .splatfile import convert as convert_ply_to_splat
from .splatfile import ply_to_splat_bytes

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
    parse_up(args.up)
    if args.scene:
        scene = _load(args.scene)
    else:
        from .demo import demo_scene
        scene = demo_scene()
        log.info("no scene given: rendering the built-in demo scene (%d Gaussians)", len(scene))
    prepared = _prepare(scene, args.backend)
    try:
        written = write_previews(scene, args.out, up=args.up, size=size, background=background,
                                 fmt=args.format, quality=args.quality, views=args.views, prepared=prepared)
    except PreviewError as e:
        print(f"error: preview failed: {e}", file=sys.stderr)
        return 1
    for path in written.values():
        print(path)
    return 0


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
    return 0


CONVERT_FORMATS = (".sog", ".splat", ".ply")


def _is_ply(path: str) -> bool:
    p = Path(path)
    if not p.is_file():
        return False
    with open(p, "rb") as f:
        return f.read(4) in PLY_MAGIC


def cmd_convert(args) -> int:
    out = Path(args.out)
    kind = out.suffix.lower()
    if kind not in CONVERT_FORMATS:
        raise SceneError(f"{out}: the output's extension must be one of {', '.join(CONVERT_FORMATS)} "
                         "(it picks the format)")
    if kind == ".splat" and _is_ply(args.scene):
        # straight from the file, byte for byte what the job pipeline (and ply2splat) writes
        stats = convert_ply_to_splat(args.scene, out)
        log.info("wrote %s: %d Gaussians (%.2f s)", out, stats.count, stats.seconds)
        return 0
    scene = _load(args.scene)
    t0 = time.perf_counter()
    if kind == ".sog":
        write_sog(scene, out, iterations=args.iterations, device=args.device)
    elif kind == ".splat":
        cols = {"x": scene.means[:, 0], "y": scene.means[:, 1], "z": scene.means[:, 2],
                "opacity": scene.opacities}
        for i in range(3):
            cols[f"scale_{i}"], cols[f"f_dc_{i}"] = scene.scales[:, i], scene.sh[:, 0, i]
        for i in range(4):
            cols[f"rot_{i}"] = scene.quats[:, i]
        records = ply_to_splat_bytes(cols)
        atomic_write(out, lambda f: f.write(records.view(np.uint8).data))
    else:
        save_ply(scene, out)
    log.info("wrote %s: %d Gaussians, SH degree %d (%.2f s)", out, len(scene), scene.sh_degree,
             time.perf_counter() - t0)
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
    v.add_argument("--up", default="y", help="world up axis: x, y, z, -x, -y or -z (default y)")
    v.add_argument("--size", default="1280x720", help="WxH (default 1280x720)")
    v.add_argument("--backend", choices=backends, default="auto")
    v.add_argument("--background", help="R,G,B in 0..1 (default nerfstudio's 0.149,0.165,0.216)")
    v.add_argument("--format", choices=["jpg", "png", "webp"], default="jpg")
    v.add_argument("--quality", type=int, default=90, help="JPEG/WebP quality (default 90)")
    v.add_argument("--views", nargs="+", choices=VIEWS, default=list(VIEWS))
    v.set_defaults(func=cmd_preview)

    c = sub.add_parser("convert", help="convert a scene to .sog, .splat or .ply (the output's extension "
                                       "picks the format)")
    c.add_argument("scene", help="scene file (.ply, .splat, .sog, or a SOG meta.json or its folder)")
    c.add_argument("out", help="output file: OUT.sog, OUT.splat or OUT.ply")
    c.add_argument("--iterations", type=int, default=KMEANS_ITERATIONS,
                   help=f"SOG: k-means iterations for the SH palette (default {KMEANS_ITERATIONS})")
    c.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto",
                   help="SOG: where the k-means runs (default auto: the GPU when CuPy sees one)")
    c.set_defaults(func=cmd_convert)

    i = sub.add_parser("info", help="count, SH degree, bounds and robust bounds of a scene")
    i.add_argument("scene")
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
