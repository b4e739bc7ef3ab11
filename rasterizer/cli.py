"""``python -m rasterizer``: render camera paths, write previews, describe scenes.

Bad input (missing or malformed files, bad options, an unavailable backend) prints one line on
stderr and exits with code 2 before any output is created (:mod:`rasterizer.cliargs`). Outputs
are written into a hidden folder beside ``--out`` and moved into place when complete, so an
error or Ctrl-C leaves ``--out`` as it was.

A subcommand is a function ``add_<name>(subparsers)`` in :data:`COMMANDS` that adds its parser
(with ``parents=[common]``) and sets ``func``; the plumbing below (``load``, ``prepare``,
``StagedFolder``, ``check_out_folder``) is shared by all of them.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from .backends import warming
from .camera import load_camera_path
from .cliargs import (
    ArgumentParser,
    int_range,
    nonempty,
    parse_color,
    parse_size,
    print_error,
    raise_if_signalled,
    run_command,
)
from .errors import SceneError, one_line
from .imageio import save_image
from .layout import KINDS, analyse_layout
from .preview import (
    AA_CPU,
    AA_GPU,
    DEFAULT_BACKGROUND,
    VIEWS,
    PreviewError,
    aa_problem,
    parse_cut,
    parse_up,
    plan_previews,
    robust_bounds,
    write_previews,
)
from .render import Prepared
from .scene import PLY_MAGIC, Scene, atomic_write, current_umask, load_scene, save_ply
from .sog import KMEANS_ITERATIONS, write_sog
from .sog import warm_up as warm_up_sog
from .splatfile import convert as convert_ply_to_splat
from .splatfile import ply_to_splat_bytes
from .stages import ALPHA_MIN

log = logging.getLogger("rasterizer")

BACKENDS = ("numpy", "cpu", "gpu", "auto")
FRAME_NAME = "{:05d}.png"                      # render's frames: 00000.png, 00001.png, ...
_FRAME = re.compile(r"[0-9]{5,}\.png")
PROGRESS_EVERY_S = 5.0


# --------------------------------------------------------------------------- shared plumbing

def load(path: str) -> Scene:
    t0 = time.perf_counter()
    scene = load_scene(path)
    log.info("loaded %s: %d Gaussians, SH degree %d (%.2f s)", one_line(path), len(scene), scene.sh_degree,
             time.perf_counter() - t0)
    return scene


def load_or_demo(path: str | None) -> Scene:
    """The scene at ``path``, or the built-in demo scene when no path was given at all."""
    if path is not None:
        return load(path)
    from .demo import demo_scene
    scene = demo_scene()
    log.info("no scene given: using the built-in demo scene (%d Gaussians)", len(scene))
    return scene


def prepare(scene: Scene, backend: str) -> Prepared:
    t0 = time.perf_counter()
    prepared = Prepared(scene, backend)
    log.info("backend %s ready (%.2f s)", prepared.backend.__name__.rsplit(".", 1)[-1],
             time.perf_counter() - t0)
    return prepared


def check_out_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise SceneError(f"--out {out}: is a file, not a folder")


class StagedFolder:
    """Outputs go into a hidden temp folder beside ``out``; :meth:`commit` moves them into place.

    ``replace=True``: ``out`` becomes exactly the new set (the old folder is swapped out, then
    removed); otherwise the new files are moved into ``out`` beside what it holds. Until the
    commit, an error or Ctrl-C removes the temp folder and any parent folder made for it, so
    ``out`` is left as it was.
    """

    def __init__(self, out: Path, replace: bool):
        self.out, self.replace = Path(out), replace
        self._path: Path | None = None   # the temp folder, made by __enter__
        self._made: list[Path] = []
        self._done = False

    def __enter__(self) -> StagedFolder:
        parent = self.out.absolute().parent
        missing = [p for p in (parent, *parent.parents) if not p.exists()]
        parent.mkdir(parents=True, exist_ok=True)
        self._made = missing                         # deepest first
        self._path = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".tmp", dir=parent))
        return self

    @property
    def path(self) -> Path:
        """The temp folder the outputs are written into (inside the ``with`` block only)."""
        if self._path is None:
            raise RuntimeError("StagedFolder.path used outside its with block")
        return self._path

    def commit(self) -> list[Path]:
        """Move the staged files into place (unless Ctrl-C was seen); returns their final paths."""
        raise_if_signalled()
        os.chmod(self.path, 0o777 & ~current_umask())  # mkdtemp makes 0700; a folder of outputs gets the usual mode
        names = sorted(p.name for p in self.path.iterdir())
        if self.replace:
            old = None
            if self.out.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".old", dir=self.path.parent))
                os.replace(self.out, old)
            os.replace(self.path, self.out)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            self.out.mkdir(exist_ok=True)
            # a folder where a file goes would stop the moves half way: refused before any move
            blocked = [self.out / name for name in names if (self.out / name).is_dir()]
            if blocked:
                raise SceneError(f"{blocked[0]}: is a folder; the output file cannot replace it")
            for name in names:
                os.replace(self.path / name, self.out / name)
            os.rmdir(self.path)
        self._done = True
        return [self.out / name for name in names]

    def __exit__(self, *exc) -> None:
        if self._done or self._path is None:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        for folder in self._made:
            try:
                folder.rmdir()
            except OSError:
                break


# --------------------------------------------------------------------------- render

def cmd_render(args) -> int:
    out = Path(args.out)
    check_out_folder(out)
    if out.is_dir():
        entries = sorted(out.iterdir())
        if entries and not args.overwrite:
            raise SceneError(f"--out {out}: the folder is not empty ({len(entries)} entries); "
                             "pass --overwrite to replace the frames of an earlier render")
        others = [p.name for p in entries if not (_FRAME.fullmatch(p.name) and p.is_file())]
        if others:
            raise SceneError(f"--out {out}: --overwrite replaces rendered frames only, and the folder also "
                             f"holds {one_line(repr(others[0]))}"
                             + (f" and {len(others) - 1} more" if others[1:] else ""))
    cams = load_camera_path(args.camera_path)
    scene = load(args.scene)
    prepared = prepare(scene, args.backend)
    with StagedFolder(out, replace=True) as stage:
        t0 = last = time.perf_counter()
        for i, cam in enumerate(cams):
            img = prepared.render(cam, args.background)
            if not (img.alpha > ALPHA_MIN).any():
                log.warning("frame %d: nothing of the scene is visible from this camera", i)
            save_image(stage.path / FRAME_NAME.format(i), img.rgb, img.alpha if args.alpha else None)
            now = time.perf_counter()
            if now - last >= PROGRESS_EVERY_S or i + 1 == len(cams):
                log.info("rendered %d/%d frames (%.3f s/frame)", i + 1, len(cams), (now - t0) / (i + 1))
                last = now
        stage.commit()
    log.info("wrote %d frames to %s", len(cams), one_line(out))
    return 0


def add_render(sub, common) -> None:
    r = sub.add_parser("render", parents=[common], help="render every camera of a nerfstudio camera path to PNGs")
    r.add_argument("scene", type=nonempty, help="scene file (.ply or .splat)")
    r.add_argument("--camera-path", required=True, type=nonempty,
                   help="nerfstudio camera-path JSON (perspective or orthographic)")
    r.add_argument("--out", required=True, type=nonempty,
                   help="output folder for 00000.png, 00001.png, ...; written as a whole when every frame is done")
    r.add_argument("--overwrite", action="store_true",
                   help="replace the frames of an earlier render in --out (refused without it)")
    r.add_argument("--backend", choices=BACKENDS, default="auto")
    r.add_argument("--background", type=parse_color, default=(0.0, 0.0, 0.0), metavar="R,G,B",
                   help="background in 0..1 (default black)")
    r.add_argument("--alpha", action="store_true", help="write RGBA PNGs")
    r.set_defaults(func=cmd_render)


# --------------------------------------------------------------------------- preview

def up_axis(text: str) -> str:
    """``--up``: checked by :func:`rasterizer.preview.parse_up`, kept as given."""
    try:
        parse_up(text)
    except (ValueError, TypeError, OverflowError) as e:
        raise argparse.ArgumentTypeError(one_line(e)) from None
    return text


def cmd_preview(args) -> int:
    out = Path(args.out)
    check_out_folder(out)
    width, height = args.size
    if args.aa is not None and (problem := aa_problem(width, height, args.aa)):
        raise SceneError(problem)          # before anything is loaded or allocated
    t0 = time.perf_counter()
    with warming(args.backend) as warm:   # a GPU comes up (and takes the scene) while the views are planned
        scene = load_or_demo(args.scene)
        warm.upload(scene)
        plan = plan_previews(scene, up=args.up, cut=args.cut, size=args.size)
    prepared = warm.prepared(plan.kept)
    if prepared is None:
        prepared = prepare(plan.scene, args.backend)
    else:
        log.info("backend %s ready, the scene uploaded while the views were planned (%.2f s after the start)",
                 prepared.backend.__name__.rsplit(".", 1)[-1], time.perf_counter() - t0)
    failed = None
    with StagedFolder(out, replace=False) as stage:
        try:
            write_previews(plan, stage.path, prepared=prepared, background=args.background, fmt=args.format,
                           quality=args.quality, views=args.views, overlay=not args.no_overlay, aa=args.aa)
        except PreviewError as e:
            failed = e  # the views that worked are still moved into place
        written = stage.commit()
    log.info("wrote %s to %s", ", ".join(p.name for p in written) or "nothing", one_line(out))
    for path in written:
        print(path)
    if failed is not None:
        print_error(f"preview failed: {failed}")
        return 1
    return 0


def cut_option(text: str):
    """``--cut``: checked by :func:`rasterizer.preview.parse_cut`."""
    try:
        return parse_cut(text)
    except (ValueError, TypeError, OverflowError) as e:
        raise argparse.ArgumentTypeError(one_line(e)) from None


UP_HELP = "world up: x, y, z, -x, -y, -z or a vector like 0,1,0 (default y; '--up -y' works)"


def add_preview(sub, common) -> None:
    v = sub.add_parser("preview", parents=[common], help="write preview_top and preview_angle images")
    v.add_argument("scene", nargs="?", type=nonempty,
                   help="scene file (.ply, .splat or .sog); the built-in demo scene when omitted")
    v.add_argument("--out", required=True, type=nonempty, help="output folder")
    v.add_argument("--up", default="y", type=up_axis, dash_value=True, help=UP_HELP)
    v.add_argument("--cut", default="auto", type=cut_option, metavar="auto|none|METRES",
                   help="leave out what lies above: auto (just below the ceiling of indoor scenes), none, "
                        "or metres above the floor (default auto)")
    v.add_argument("--no-overlay", action="store_true", help="no scale bar and axis marker on the top view")
    v.add_argument("--aa", type=int_range(1, 4), default=None,
                   help=f"supersampling factor 1..4 (default {AA_GPU} on the GPU, {AA_CPU} on the CPU)")
    v.add_argument("--size", type=parse_size, default="1280x720", metavar="WxH", help="image size (default 1280x720)")
    v.add_argument("--backend", choices=BACKENDS, default="auto")
    v.add_argument("--background", type=parse_color, default=DEFAULT_BACKGROUND, metavar="R,G,B",
                   help="background in 0..1 (default nerfstudio's 0.149,0.165,0.216)")
    v.add_argument("--format", choices=["jpg", "png", "webp"], default="jpg")
    v.add_argument("--quality", type=int_range(1, 100), default=90, help="JPEG/WebP quality 1..100 (default 90)")
    v.add_argument("--views", nargs="+", choices=VIEWS, default=list(VIEWS))
    v.set_defaults(func=cmd_preview)


# --------------------------------------------------------------------------- convert

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
    warming = None
    if kind == ".sog":
        warming = warm_up_sog(args.device)
    try:
        scene = load(args.scene)
    except BaseException:
        if warming is not None:   # no exit while CUDA comes up in another thread
            warming.join()
        raise
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


def add_convert(sub, common) -> None:
    c = sub.add_parser("convert", parents=[common],
                       help="convert a scene to .sog, .splat or .ply (the output's extension picks the format)")
    c.add_argument("scene", type=nonempty, help="scene file (.ply, .splat, .sog, or a SOG meta.json or its folder)")
    c.add_argument("out", type=nonempty, help="output file: OUT.sog, OUT.splat or OUT.ply")
    c.add_argument("--iterations", type=int_range(1, 1000), default=KMEANS_ITERATIONS,
                   help=f"SOG: k-means iterations for the SH palette (default {KMEANS_ITERATIONS})")
    c.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto",
                   help="SOG: where the k-means runs (default auto: the GPU when CuPy sees one)")
    c.set_defaults(func=cmd_convert)


# --------------------------------------------------------------------------- info

def cmd_info(args) -> int:
    scene = load(args.scene)
    b = robust_bounds(scene)
    opac = scene.sigmoid_opacities()
    fmt = lambda v: "(" + ", ".join(f"{x:.4g}" for x in v) + ")"  # noqa: E731
    print(f"file:          {one_line(args.scene)}")
    print(f"gaussians:     {len(scene)}")
    print(f"sh degree:     {scene.sh_degree}")
    print(f"bounds:        min {fmt(scene.means.min(0))}  max {fmt(scene.means.max(0))}")
    print(f"robust bounds: min {fmt(b.lo)}  max {fmt(b.hi)}  (opacity >= 0.1, 2nd-98th pct, "
          f"{b.count} Gaussians)")
    print(f"robust centre: {fmt(b.center)}  extent {fmt(b.extent)}")
    print(f"opacity:       median {np.median(opac):.3f}, {np.mean(opac >= 0.1) * 100:.1f}% >= 0.1")
    lay = analyse_layout(scene, parse_up(args.up))
    height = lambda v: "none" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"class:         {lay.kind} ({KINDS[lay.kind]})")
    print(f"floor:         {height(lay.floor)}" + ("" if lay.floor is None else
          f"  (tilt {lay.floor_tilt_deg:.1f} deg, {lay.floor_share:.0%} of the footprint)"))
    print(f"ceiling:       {height(lay.ceiling)}" + ("" if lay.ceiling is None else
          f"  (underside {lay.ceiling_underside:.3f}, {lay.ceiling_share:.0%} of the footprint)"))
    print(f"auto cut:      {height(lay.auto_cut)}  (heights along up = {fmt(lay.up)})")
    return 0


def add_info(sub, common) -> None:
    i = sub.add_parser("info", parents=[common],
                       help="count, SH degree, bounds, robust bounds and layout (floor, ceiling, class)")
    i.add_argument("scene", type=nonempty, help="scene file (.ply, .splat or .sog)")
    i.add_argument("--up", default="y", type=up_axis, dash_value=True, help=UP_HELP)
    i.set_defaults(func=cmd_info)


# --------------------------------------------------------------------------- the parser

COMMANDS = (add_render, add_preview, add_convert, add_info)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m rasterizer", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    # -v after the subcommand too; SUPPRESS keeps a subcommand from resetting the top-level value
    common = ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub, common)
    return p


def main(argv=None) -> int:
    return run_command(build_parser(), argv)
