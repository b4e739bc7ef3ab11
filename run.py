#!/usr/bin/env python3
"""splatter's job pipeline: capture → trained splat → domain-frame splat, ``.splat``, SOG, previews, video.

    python3 run.py --domain_id D --job_id J --job_root_path ROOT --log_level info
    python3 run.py --demo --job_root_path demo-job         # the built-in demo, from step rotate
    python3 run.py --steps                                   # the steps in order, with what they read and write

The steps are the list ``STEPS`` at the end of this file; ``--from-step`` / ``--to-step`` run a slice of it. The
job folder is ``pipeline.layout.JobLayout``. Exit status: 0 when every required step succeeded (a best-effort step
that fails is a warning), 1 when a step failed, 2 for a bad command line or bad job input (a missing or unreadable
input file); a failure is one line on stderr. Every output is written to a temporary name and renamed.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from pipeline import colmap, frames, logsafe
from pipeline.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, BadInput, StepError, one_line
from pipeline.layout import ARTIFACTS, PREVIEW_ANGLE, PREVIEW_TOP, JobLayout
from pipeline.video import write_mp4
from rasterizer import backends
from rasterizer.cliargs import ArgumentParser, int_range, nonempty_path, parse_size
from rasterizer.demo import demo_scene
from rasterizer.errors import SceneError
from rasterizer.preview import DEFAULT_BACKGROUND, ELEVATION_DEG, PreviewPlan, plan_previews, write_previews
from rasterizer.render import Prepared
from rasterizer.scene import atomic_write, load_scene, save_ply
from rasterizer.splatfile import convert
from rasterizer.transform import COLMAP_TO_NERFSTUDIO, from_matrix, transform_scene

NERFSTUDIO_HINT = "install nerfstudio, e.g. pip install nerfstudio, and put its ns-* commands on PATH"
DEMO_ID = "demo"
#: test hook: make the renderer raise for these outputs, e.g. "top", "angle", "video", "video@5"
FAULT_ENV = "SPLATTER_INJECT_RENDER_FAULT"
PREVIEW_VIEWS = {"top": PREVIEW_TOP, "angle": PREVIEW_ANGLE}

log = logging.getLogger("splatter.run")


@dataclass
class Options:
    backend: str = "auto"
    preview_size: tuple[int, int] = (1280, 720)
    video_size: tuple[int, int] = (1280, 720)
    video_frames: int = 150
    video_fps: int = 30
    video_cpu_budget_s: float = 300.0


class RotatedScene:
    """``splat_rot.ply``, loaded, planned for the previews (layout, section cut, framing) and uploaded
    to the render backend once for the steps that render it: the stills and the orbit share all three."""

    def __init__(self, path: Path, backend: str, preview_size: tuple[int, int]):
        self.path = path
        self.backend_choice = backend
        self.preview_size = preview_size

    @cached_property
    def scene(self):
        return load_scene(self.path)

    @cached_property
    def plan(self) -> PreviewPlan:
        return plan_previews(self.scene, up="y", cut="auto", size=self.preview_size)

    @cached_property
    def backend(self) -> str:
        return backends.resolve(self.backend_choice)

    @cached_property
    def prepared(self) -> Prepared:
        plan = self.plan
        prepared = Prepared(plan.scene, self.backend)
        log.info("rendering %s (%d Gaussians, %d after the section cut) with the %s backend", self.path,
                 len(self.scene), len(plan.scene), self.backend)
        return prepared


@dataclass
class Job:
    layout: JobLayout
    domain_id: str
    job_id: str
    opts: Options = field(default_factory=Options)
    rotated: RotatedScene = field(init=False)

    def __post_init__(self) -> None:
        self.rotated = RotatedScene(self.layout.splat_rot_ply, self.opts.backend, self.opts.preview_size)


# =========================================================================== extract

def step_extract(job: Job) -> None:
    layout = job.layout
    recordings = layout.recordings()
    if not recordings:
        raise BadInput(f"no recordings: expected {layout.datasets}/<name>/Frames.mp4")
    log.info("extract: %d recording(s): %s", len(recordings), ", ".join(map(repr, recordings)))
    if layout.images_bin.is_file():
        names = colmap.read_image_names(layout.images_bin)
        plan: dict[str, dict[int, list[str]] | None] = dict(colmap.match_frames(names, list(recordings)))
        log.info("extract: %s names %d images; matched all to %d recording(s), layout %s", layout.images_bin,
                 len(names), sum(1 for d in plan if plan[d]), colmap.describe_layout(names))
    else:
        log.warning("extract: %s not found; extracting every frame as <recording>_<index:06d>.jpg "
                    "(ns-process-data needs the COLMAP model to match them)", layout.images_bin)
        plan = dict.fromkeys(recordings)   # no COLMAP model: every frame of every recording
    layout.frames.mkdir(parents=True, exist_ok=True)
    for recording, mp4 in recordings.items():
        wanted = plan[recording]
        if wanted is not None and not wanted:
            log.info("extract: %r: no frame of it is in images.bin; skipped", recording)
            continue
        frames.extract(mp4, layout.frames, wanted, recording)


# =========================================================================== nerfstudio

def step_process(job: Job) -> None:
    L = job.layout
    run_tool("process", ["ns-process-data", "images", "--data", str(L.frames), "--output-dir", str(L.ns_data),
                         "--skip-colmap", "--colmap-model-path", L.colmap_from_ns_data])


def step_train(job: Job) -> None:
    L = job.layout
    run_tool("train", ["ns-train", "splatfacto",
                       "--vis", "tensorboard",
                       "--logging.local-writer.max-log-size", "0",
                       "--logging.steps-per-log", "1000",
                       "--data", str(L.ns_data),
                       "--experiment-name", L.config.parent.parent.name,
                       "--method-name", L.config.parent.name,
                       "--timestamp", "/",
                       "--output-dir", str(L.config.parent.parent.parent),
                       "nerfstudio-data",
                       "--center-method", "none",
                       "--orientation-method", "none",
                       "--auto-scale-poses", "False"])


def step_export(job: Job) -> None:
    run_tool("export", ["ns-export", "gaussian-splat", "--load-config", str(job.layout.config),
                        "--output-dir", str(job.layout.splat_ply.parent)])


def run_tool(step: str, cmd: list[str]) -> None:
    """Run a nerfstudio command, streaming its output into the log a line at a time."""
    exe = shutil.which(cmd[0])
    if exe is None:
        raise StepError(f"{cmd[0]} not found on PATH ({NERFSTUDIO_HINT})")
    log.info("%s: command: %s", step, shlex.join(cmd))
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with subprocess.Popen([exe, *cmd[1:]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace", bufsize=1, env=env) as proc:
        for line in proc.stdout or ():  # universal newlines: progress bars' \r ends a line too
            line = line.rstrip()
            if line:
                log.info("%s | %s", cmd[0], line)
        rc = proc.wait()
    if rc != 0:
        raise StepError(f"{cmd[0]} exited with status {rc} after {time.perf_counter() - t0:.1f} s")


# =========================================================================== rotate, convert, sog

def step_rotate(job: Job) -> None:
    L = job.layout
    to_domain = domain_transform(L)
    try:
        scene = load_scene(L.splat_ply)
    except SceneError as e:
        raise BadInput(str(e)) from None
    try:
        rotated = transform_scene(scene, to_domain)
    except ValueError as e:
        raise BadInput(f"{L.transforms}: {e}") from None
    save_ply(rotated, L.splat_rot_ply)
    log.info("rotate: wrote %s (%d Gaussians, SH degree %d, normals %s)", L.splat_rot_ply, len(rotated),
             rotated.sh_degree, "rotated" if rotated.normals is not None else "absent")


def domain_transform(L: JobLayout):
    """nerfstudio training frame → domain frame: the inverse of transforms.json's applied_transform
    (after undoing a non-identity dataparser transform, which the seed's options never make)."""
    tj, dp = L.transforms, L.dataparser_transforms
    applied = None
    if tj.is_file():
        try:
            doc = json.loads(tj.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise BadInput(f"{tj}: not readable JSON ({one_line(e)})") from None
        if not isinstance(doc, dict):
            raise BadInput(f"{tj}: a JSON object was expected, got {type(doc).__name__}")
        applied = doc.get("applied_transform")
    try:
        if applied is None:
            log.warning("rotate: %s %s; using nerfstudio's fixed COLMAP→nerfstudio axis swap %s",
                        tj, "has no applied_transform" if tj.is_file() else "does not exist",
                        json.dumps(COLMAP_TO_NERFSTUDIO[:, :3].astype(int).tolist()))
            forward = from_matrix(COLMAP_TO_NERFSTUDIO, "nerfstudio axis swap")
        else:
            forward = from_matrix(applied, f"{tj}: applied_transform")
            log.info("rotate: applied_transform from %s: %s", tj, json.dumps(applied))
        if dp.is_file():
            d = json.loads(dp.read_text())
            m = [[float(v) for v in row] for row in d["transform"]]
            s = float(d.get("scale", 1.0))
            dataparser = from_matrix([[s * v for v in row] for row in m], f"{dp}: transform·scale")
            if not dataparser.is_identity:
                log.info("rotate: undoing the dataparser transform of %s (scale %g)", dp, s)
                forward = dataparser.compose(forward)
    except SceneError as e:
        raise BadInput(str(e)) from None
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError, RecursionError) as e:
        raise BadInput(f"{dp}: unreadable ({one_line(e)})") from None
    inverse = forward.inverse()
    log.info("rotate: nerfstudio → domain: rotation %s, scale %.6g, translation %s",
             json.dumps(inverse.rotation.round(6).tolist()), inverse.scale,
             json.dumps((inverse.translation.round(6) + 0.0).tolist()))
    return inverse


def step_convert(job: Job) -> None:
    L = job.layout
    try:
        stats = convert(L.splat_rot_ply, L.splat_rot_splat)
    except SceneError as e:
        raise BadInput(str(e)) from None
    log.info("convert: wrote %s (%d Gaussians, %d bytes; read %.2f s, total %.2f s)", L.splat_rot_splat,
             stats.count, L.splat_rot_splat.stat().st_size, stats.read_seconds, stats.seconds)


def step_sog(job: Job) -> None:
    # imported here, not at the top: the SOG writer is optional for everything else run.py does
    from rasterizer.sog import write_sog

    stats = write_sog(job.rotated.scene, job.layout.splat_rot_sog)
    log.info("sog: wrote %s (%d bytes; %s)", job.layout.splat_rot_sog, job.layout.splat_rot_sog.stat().st_size,
             stats)


# =========================================================================== previews and video

def step_previews(job: Job) -> None:
    prepared = rendering_or_skip(job, "previews")
    if prepared is None:
        return
    for view in PREVIEW_VIEWS:
        try:
            write_previews(job.rotated.plan, job.layout.out, prepared=with_injected_faults(prepared, view),
                           background=DEFAULT_BACKGROUND, fmt="jpg", quality=90, views=(view,))
        except Exception as e:  # noqa: BLE001 - best effort: one view failing keeps the other
            log.warning("previews: %s not written: %s", PREVIEW_VIEWS[view].file, one_line(e))


class BudgetExceeded(Exception):
    def __init__(self, estimate: float):
        super().__init__(f"estimated {estimate:.0f} s")
        self.estimate = estimate


def step_video(job: Job) -> None:
    prepared = rendering_or_skip(job, "video")
    if prepared is None:
        return
    opts, path = job.opts, job.layout.preview_video
    # the same section cut and framing as the ¾ preview, starting at its corner
    cams = job.rotated.plan.orbit_cameras(n_frames=opts.video_frames, size=opts.video_size)
    renderer = with_injected_faults(prepared, "video")
    t0 = time.perf_counter()
    try:
        write_mp4(path, orbit_frames(job, renderer, cams), opts.video_size,
                  opts.video_fps, len(cams))
    except BudgetExceeded as e:
        log.info("video: skipped: rendering %d frames on the CPU would take about %.0f s, over the budget of "
                 "%.0f s (--video-cpu-budget)", len(cams), e.estimate, opts.video_cpu_budget_s)
        return
    except Exception as e:  # noqa: BLE001 - best effort
        log.warning("video: %s not written: %s", path.name, one_line(e))
        return
    w, h = opts.video_size
    log.info("video: wrote %s (%dx%d, %d frames at %d fps, H.264 yuv420p, fast start; %.1f s)", path, w, h,
             len(cams), opts.video_fps, time.perf_counter() - t0)


def orbit_frames(job: Job, renderer, cams) -> Iterator:
    """The orbit's frames, 8-bit RGB. On the CPU, the first frame(s) are timed first and the orbit is
    abandoned (BudgetExceeded) when the whole would take longer than ``--video-cpu-budget``."""
    if job.rotated.backend == "gpu":
        for cam in cams:
            yield renderer.render8(cam, DEFAULT_BACKGROUND)
        return
    budget = job.opts.video_cpu_budget_s
    timed = []
    for cam in cams[:2]:  # the first frame may include a one-time JIT compile: time a second one too
        t0 = time.perf_counter()
        timed.append(renderer.render8(cam, DEFAULT_BACKGROUND))
        estimate = (time.perf_counter() - t0) * len(cams)
        if estimate <= budget or len(cams) == 1:
            break
    if estimate > budget:
        raise BudgetExceeded(estimate)
    log.info("video: CPU rendering, about %.1f s for %d frames (budget %.0f s)", estimate, len(cams), budget)
    yield from timed
    for cam in cams[len(timed):]:
        yield renderer.render8(cam, DEFAULT_BACKGROUND)


def rendering_or_skip(job: Job, step: str) -> Prepared | None:
    """The rotated scene ready to render, or None (after a warning) when it cannot be loaded."""
    try:
        return job.rotated.prepared
    except Exception as e:  # noqa: BLE001 - best effort
        log.warning("%s: skipped: %s", step, one_line(e))
        return None


def with_injected_faults(prepared, output: str):
    """``prepared``, or a stand-in whose render raises, when ``$SPLATTER_INJECT_RENDER_FAULT``
    names this output (``top``, ``angle``, ``video``; ``video@K`` fails at frame K)."""
    at = None
    for s in (s.strip() for s in os.environ.get(FAULT_ENV, "").split(",")):
        name, _, k = s.partition("@")
        if s and name == output:
            at = int(k) if k else 0
    if at is None:
        return prepared

    class Faulty:
        calls = 0

        @staticmethod
        def count_frame() -> None:
            Faulty.calls += 1
            if at is not None and Faulty.calls > at:
                raise RuntimeError(f"injected render fault ({FAULT_ENV}={output}{f'@{at}' if at else ''})")

        def render(self, camera, background=(0.0, 0.0, 0.0), downscale: int = 1):
            self.count_frame()
            return prepared.render(camera, background, downscale)

        def render8(self, camera, background=(0.0, 0.0, 0.0)):
            self.count_frame()
            return prepared.render8(camera, background)

    log.warning("%s: %s is set: the renderer will fail for %s", output, FAULT_ENV, output)
    return Faulty()


# =========================================================================== the steps

@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[Job], None]
    about: str
    inputs: tuple[str, ...] = ()   # JobLayout paths it reads: missing ones are bad input (exit 2)
    outputs: tuple[str, ...] = ()  # JobLayout paths it writes: stale files removed first; all required at the end
    tool: str | None = None        # the external command it runs, checked before the job starts
    best_effort: bool = False      # its failure is a warning; the job goes on


STEPS = (
    Step("extract", step_extract, "Frames.mp4 of every dataset → JPEG frames named as in the COLMAP images.bin",
         inputs=("datasets",), outputs=("frames",)),
    Step("process", step_process, "ns-process-data images: COLMAP model + frames → nerfstudio dataset",
         inputs=("frames", "images_bin"), outputs=("transforms",), tool="ns-process-data"),
    Step("train", step_train, "ns-train splatfacto on the nerfstudio dataset",
         inputs=("transforms",), outputs=("config",), tool="ns-train"),
    Step("export", step_export, "ns-export gaussian-splat → refined/splatter/splat.ply",
         inputs=("config",), outputs=("splat_ply",), tool="ns-export"),
    Step("rotate", step_rotate, "splat.ply → splat_rot.ply in the domain frame (inverse applied_transform, SH rotated)",
         inputs=("splat_ply",), outputs=("splat_rot_ply",)),
    Step("convert", step_convert, "splat_rot.ply → splat_rot.splat (ply2splat's bytes and order)",
         inputs=("splat_rot_ply",), outputs=("splat_rot_splat",)),
    Step("sog", step_sog, "splat_rot.ply → splat_rot.sog, SOG compression (best effort)",
         inputs=("splat_rot_ply",), outputs=("splat_rot_sog",), best_effort=True),
    Step("previews", step_previews, "preview_top.jpg and preview_angle.jpg (best effort)",
         inputs=("splat_rot_ply",), outputs=("preview_top", "preview_angle"), best_effort=True),
    Step("video", step_video,
         f"preview.mp4, an orbit at {ELEVATION_DEG:g}° elevation from the ¾ view's corner (best effort)",
         inputs=("splat_rot_ply",), outputs=("preview_video",), best_effort=True),
)
STEP_NAMES = tuple(s.name for s in STEPS)


class MissingInput(BadInput):
    """A step's input file does not exist."""


def check_inputs(job: Job, step: Step) -> None:
    for attr in step.inputs:
        path = getattr(job.layout, attr)
        if not path.exists():
            producer = next((s.name for s in STEPS if attr in s.outputs), None)
            raise MissingInput(f"{path} not found" + (f" (run the {producer} step first)" if producer else ""))


def remove_stale(job: Job, step: Step) -> None:
    """Delete the step's outputs from an earlier attempt (and temp files a killed attempt left behind)."""
    for attr in step.outputs:
        path = getattr(job.layout, attr)
        for p in [path, *path.parent.glob(f".{path.name}.*.tmp")]:
            if p.is_dir():
                continue
            try:
                p.unlink()
                log.info("removed stale %s", p)
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("cannot remove stale %s: %s", p, one_line(e))


def check_outputs(job: Job, step: Step) -> None:
    for attr in step.outputs:
        path = getattr(job.layout, attr)
        if not path.exists():
            raise StepError(f"the step finished but did not write {path}")


def run_pipeline(job: Job, steps: list[Step]) -> int:
    """Run ``steps`` in order; returns the exit status."""
    log.info("job %r (domain %r): root %s, steps %s", job.job_id, job.domain_id, job.layout.root,
             " → ".join(s.name for s in steps))
    missing = [s for s in steps if s.tool and shutil.which(s.tool) is None]
    if missing:  # before hours of work, not after
        log.error("step %s failed: %s not found on PATH (%s)", missing[0].name, missing[0].tool, NERFSTUDIO_HINT)
        return EXIT_FAILED
    t_job = time.perf_counter()
    for i, step in enumerate(steps, 1):
        log.info("step %d/%d %s: start (%s)", i, len(steps), step.name, step.about)
        t0 = time.perf_counter()
        try:
            check_inputs(job, step)
            remove_stale(job, step)
            step.run(job)
            if not step.best_effort:
                check_outputs(job, step)
        except Exception as e:
            # a missing input of the first step is the caller's bad input, best effort or not
            if step.best_effort and not (i == 1 and isinstance(e, MissingInput)):
                log.warning("step %s failed (best effort, the job goes on): %s", step.name, one_line(e))
                continue
            log.debug("traceback", exc_info=True)
            log.error("step %s failed after %.1f s: %s", step.name, time.perf_counter() - t0,
                      one_line(e) if isinstance(e, StepError) else f"{type(e).__name__}: {one_line(e)}")
            return EXIT_BAD_INPUT if isinstance(e, BadInput) else EXIT_FAILED
        log.info("step %s: done in %.2f s", step.name, time.perf_counter() - t0)
    L = job.layout
    outputs = [p for p in (L.splat_ply, L.splat_rot_ply, *(L.artifact(a) for a in ARTIFACTS)) if p.is_file()]
    log.info("job done in %.1f s; outputs: %s", time.perf_counter() - t_job,
             ", ".join(f"{p.name} ({p.stat().st_size} B)" for p in outputs) or "none")
    return 0


# =========================================================================== demo job

def build_demo_job(layout: JobLayout) -> None:
    """A job as if training had produced ``splat.ply``: the demo room moved into nerfstudio's
    frame by the applied_transform that ns-process-data records in transforms.json."""
    applied = COLMAP_TO_NERFSTUDIO.tolist()
    doc = {"camera_model": "OPENCV", "frames": [], "applied_transform": applied}
    atomic_write(layout.transforms, lambda f: f.write(json.dumps(doc, indent=2).encode()))
    scene = transform_scene(demo_scene(), from_matrix(applied))
    save_ply(scene, layout.splat_ply)
    log.info("demo: wrote %s (%d Gaussians, SH degree %d, in nerfstudio's frame) and %s", layout.splat_ply,
             len(scene), scene.sh_degree, layout.transforms)


# =========================================================================== command line

def parse_video_size(text: str) -> tuple[int, int]:
    w, h = parse_size(text)
    if w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"H.264 yuv420p needs an even width and height, got {text!r}")
    return w, h


def build_parser() -> ArgumentParser:
    d = Options()
    ap = ArgumentParser(prog="run.py", description="splatter job pipeline: " + " → ".join(STEP_NAMES),
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--domain_id", help="domain the job belongs to (logged); required unless --demo")
    ap.add_argument("--job_id", help="job id (logged); required unless --demo")
    ap.add_argument("--job_root_path", type=nonempty_path, help="the job folder (inputs and outputs)")
    ap.add_argument("--log_level", default="info", type=str.upper,
                    choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging level")
    ap.add_argument("--from-step", choices=STEP_NAMES, help="start here (resume an earlier job)")
    ap.add_argument("--to-step", choices=STEP_NAMES, help="stop after this step")
    ap.add_argument("--steps", action="store_true", help="list the steps in order and exit")
    ap.add_argument("--demo", action="store_true",
                    help="build a demo job from the built-in demo scene under --job_root_path (default "
                         "demo-job) and run it from step rotate")
    ap.add_argument("--backend", default=d.backend, choices=["auto", "gpu", "cpu", "numpy"],
                    help="renderer for previews and video (auto: gpu when CuPy sees a device, else cpu)")
    ap.add_argument("--preview-size", type=parse_size, default="{}x{}".format(*d.preview_size), metavar="WxH",
                    help="preview image size")
    ap.add_argument("--video-size", type=parse_video_size, default="{}x{}".format(*d.video_size),
                    metavar="WxH", help="orbit video size (even numbers)")
    ap.add_argument("--video-frames", type=int_range(1, 100_000), default=d.video_frames, help="orbit frames")
    ap.add_argument("--video-fps", type=int_range(1, 240), default=d.video_fps)
    ap.add_argument("--video-cpu-budget", type=float, default=d.video_cpu_budget_s, metavar="SECONDS",
                    help="without a GPU, render the video only if it should take at most this long")
    return ap


def step_slice(ap: ArgumentParser, from_step: str | None, to_step: str | None) -> list[Step]:
    """The steps from ``from_step`` to ``to_step`` (both included); a reversed pair is a command-line error."""
    first = STEP_NAMES.index(from_step) if from_step else 0
    last = STEP_NAMES.index(to_step) if to_step else len(STEPS) - 1
    if first > last:
        ap.error(f"--from-step {from_step} comes after --to-step {to_step}")
    return list(STEPS[first:last + 1])


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.steps:
        for i, s in enumerate(STEPS, 1):
            print(f"{i}. {s.name:9s} {s.about}")
        return 0
    if args.demo:
        args.job_root_path = args.job_root_path or Path("demo-job")
        args.domain_id, args.job_id = args.domain_id or DEMO_ID, args.job_id or DEMO_ID
        if args.from_step and STEP_NAMES.index(args.from_step) < STEP_NAMES.index("rotate"):
            ap.error("--demo starts from a trained splat: --from-step must be rotate or later")
        args.from_step = args.from_step or "rotate"
    else:
        missing = [f"--{n}" for n in ("domain_id", "job_id", "job_root_path") if getattr(args, n) is None]
        if missing:
            ap.error(f"the following arguments are required: {', '.join(missing)} (or use --demo)")
    steps = step_slice(ap, args.from_step, args.to_step)
    logsafe.configure(args.log_level, split_errors=True)

    opts = Options(backend=args.backend, preview_size=args.preview_size, video_size=args.video_size,
                   video_frames=args.video_frames, video_fps=args.video_fps,
                   video_cpu_budget_s=args.video_cpu_budget)
    job = Job(JobLayout(args.job_root_path.resolve()), args.domain_id, args.job_id, opts)
    if args.demo:
        try:
            build_demo_job(job.layout)
        except Exception as e:  # noqa: BLE001 - e.g. an unwritable folder
            log.error("demo: cannot build the demo job under %s: %s", job.layout.root, one_line(e))
            return EXIT_FAILED
    elif not job.layout.root.is_dir():
        log.error("job root %s is not a folder", job.layout.root)
        return EXIT_BAD_INPUT
    try:
        return run_pipeline(job, steps)
    except KeyboardInterrupt:
        log.error("interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
