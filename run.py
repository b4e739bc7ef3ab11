#!/usr/bin/env python3
"""splatter's job pipeline: capture → trained splat → domain-frame splat, ``.splat``, previews.

    python3 run.py --domain_id D --job_id J --job_root_path ROOT --log_level info
    python3 run.py --demo --job_root_path demo-job         # the built-in demo, from step rotate
    python3 run.py --steps                                   # the step names, in order

Steps (``--from-step`` / ``--to-step`` run a slice of them):

 1. extract   ROOT/datasets/<name>/Frames.mp4 → JPEG frames in ROOT/Frames, named as the COLMAP
              model's images.bin names them (what ns-process-data matches them by)
 2. process   ns-process-data images … → ROOT/refined/nerfstudio-data (transforms.json)
 3. train     ns-train splatfacto … → ROOT/refined/splatter/splatfacto/config.yml
 4. export    ns-export gaussian-splat … → ROOT/refined/splatter/splat.ply
 5. rotate    splat.ply (nerfstudio's frame) → splat_rot.ply (the domain frame, +Y up)
 6. convert   splat_rot.ply → splat_rot.splat (antimatter15 layout, as ply2splat writes it)
 7. previews  preview_top.jpg, preview_angle.jpg (best effort)
 8. video     preview.mp4, an orbit of the scene (best effort)

A failing step 1-6 stops the job: one error line naming the step, exit status 1. Steps 7-8
log a warning on failure and the job still succeeds. Every output is written to a temporary
name and renamed, so an interrupted job never leaves a partial file under its final name.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

STEPS = ("extract", "process", "train", "export", "rotate", "convert", "previews", "video")
BEST_EFFORT = ("previews", "video")
DESCRIPTIONS = {
    "extract": "Frames.mp4 of every dataset → JPEG frames named as in the COLMAP images.bin",
    "process": "ns-process-data images: COLMAP model + frames → nerfstudio dataset",
    "train": "ns-train splatfacto on the nerfstudio dataset",
    "export": "ns-export gaussian-splat → refined/splatter/splat.ply",
    "rotate": "splat.ply → splat_rot.ply in the domain frame (inverse applied_transform, SH rotated)",
    "convert": "splat_rot.ply → splat_rot.splat (ply2splat's bytes and order)",
    "previews": "preview_top.jpg and preview_angle.jpg (best effort)",
    "video": "preview.mp4, an orbit at 35° elevation (best effort)",
}
NERFSTUDIO_HINT = "install nerfstudio, e.g. pip install nerfstudio, and put its ns-* commands on PATH"
DEMO_ID = "demo"
#: test hook: make the renderer raise for these outputs, e.g. "top", "angle", "video", "video@5"
FAULT_ENV = "SPLATTER_INJECT_RENDER_FAULT"

log = logging.getLogger("splatter.run")


class StepError(Exception):
    """A step cannot go on; the message is the one line the user sees."""


@dataclass
class Options:
    backend: str = "auto"
    preview_size: tuple[int, int] = (1280, 720)
    video_size: tuple[int, int] = (1280, 720)
    video_frames: int = 150
    video_fps: int = 30
    video_cpu_budget_s: float = 300.0


@dataclass
class Job:
    root: Path
    domain_id: str
    job_id: str
    opts: Options = field(default_factory=Options)
    _scene: object = None     # splat_rot.ply, loaded once for the previews and the video
    _prepared: object = None  # ... and uploaded once to the render backend

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def frames(self) -> Path:
        return self.root / "Frames"

    @property
    def colmap(self) -> Path:
        return self.root / "refined" / "global" / "refined_sfm_combined"

    @property
    def ns_data(self) -> Path:
        return self.root / "refined" / "nerfstudio-data"

    @property
    def out(self) -> Path:
        return self.root / "refined" / "splatter"

    @property
    def config(self) -> Path:
        return self.out / "splatfacto" / "config.yml"

    @property
    def splat_ply(self) -> Path:
        return self.out / "splat.ply"

    @property
    def splat_rot_ply(self) -> Path:
        return self.out / "splat_rot.ply"

    @property
    def splat_rot_splat(self) -> Path:
        return self.out / "splat_rot.splat"


# =========================================================================== 1. extract

def step_extract(job: Job) -> None:
    import av

    recordings = sorted(p.parent for p in job.datasets.glob("*/Frames.mp4"))
    if not recordings:
        raise StepError(f"no recordings: expected {job.datasets}/<name>/Frames.mp4")
    names = {p.name: p / "Frames.mp4" for p in recordings}
    log.info("extract: %d recording(s): %s", len(names), ", ".join(names))

    images_bin = job.colmap / "images.bin"
    if images_bin.is_file():
        image_names = read_colmap_image_names(images_bin)
        plan = match_frames(image_names, list(names))
        log.info("extract: %s names %d images; matched all to %d recording(s), layout %s",
                 images_bin, len(image_names), sum(1 for d in plan if plan[d]), describe_layout(image_names))
    else:
        log.warning("extract: %s not found; extracting every frame as <recording>_<index:06d>.jpg "
                    "(ns-process-data needs the COLMAP model to match them)", images_bin)
        plan = {d: None for d in names}

    job.frames.mkdir(parents=True, exist_ok=True)
    for dataset, mp4 in names.items():
        wanted = plan.get(dataset)
        if wanted is not None and not wanted:
            log.info("extract: %s: no frame of it is in images.bin; skipped", dataset)
            continue
        t0 = time.perf_counter()
        written, count = 0, 0
        try:
            with av.open(str(mp4)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                last = max(wanted) if wanted is not None else math.inf
                for index, frame in enumerate(container.decode(stream)):
                    count = index + 1
                    if wanted is None:
                        targets = [f"{dataset}_{index:06d}.jpg"]
                    else:
                        targets = wanted.get(index, [])
                    if targets:
                        img = frame.to_image()
                        for rel in targets:
                            save_jpeg(img, job.frames / rel)
                            written += 1
                    if index >= last:
                        break
        except (av.error.FFmpegError, IndexError, OSError) as e:
            raise StepError(f"{mp4}: cannot decode the video ({_one_line(e)})") from None
        if wanted is not None:
            beyond = sorted(i for i in wanted if i >= count)
            if beyond:
                raise StepError(f"{mp4} has {count} frames but images.bin names frame index {beyond[0]} "
                                f"({wanted[beyond[0]][0]}) and {len(beyond) - 1} more beyond its end")
        log.info("extract: %s: wrote %d frame(s) of %s%d decoded in %.2f s", dataset, written,
                 "" if wanted is None else "the first ", count, time.perf_counter() - t0)


def read_colmap_image_names(path: Path) -> list[str]:
    """Image names from a COLMAP ``images.bin`` (documented binary model format).

    uint64 count; per image: uint32 id, 7 float64 (qvec, tvec), uint32 camera id, the name
    NUL-terminated, uint64 number of 2D points, then 24 bytes per point (x, y, point3D id).
    """
    data = Path(path).read_bytes()
    try:
        (n,) = struct.unpack_from("<Q", data, 0)
        pos, names = 8, []
        for _ in range(n):
            pos += 4 + 7 * 8 + 4
            end = data.index(b"\0", pos)
            names.append(data[pos:end].decode("utf-8"))
            pos = end + 1
            (npts,) = struct.unpack_from("<Q", data, pos)
            pos += 8 + 24 * npts
            if pos > len(data):
                raise ValueError("2D points run past the end of the file")
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        raise StepError(f"{path}: not a readable COLMAP images.bin ({_one_line(e)})") from None
    if pos != len(data):
        raise StepError(f"{path}: {len(data) - pos} unexpected bytes after the {n} images")
    if not names:
        raise StepError(f"{path}: the COLMAP model has no images")
    return names


_INDEX = re.compile(r"(\d+)$")


def match_frames(image_names: list[str], datasets: list[str]) -> dict[str, dict[int, list[str]]]:
    """Which frame of which recording each COLMAP image is: ``{dataset: {index: [names]}}``.

    A name's recording is the directory it sits in (``<scan>/<frame>.jpg``), else the
    recording its file name starts with (``<scan>_<index>.jpg``, the reconstruction server's
    naming), else the only recording. The frame index (0-based, in decoding order) is the
    number the file name ends with.
    """
    plan: dict[str, dict[int, list[str]]] = {d: {} for d in datasets}
    by_length = sorted(datasets, key=len, reverse=True)
    unmatched = []
    for name in image_names:
        p = PurePosixPath(name)
        if p.is_absolute() or ".." in p.parts or "\\" in name:
            raise StepError(f"images.bin names {name!r}, which is not a path inside Frames/")
        m = _INDEX.search(p.stem)
        dataset = next((d for d in p.parts[:-1] if d in plan), None)
        if dataset is None:
            dataset = next((d for d in by_length if p.name.startswith(d + "_")), None)
        if dataset is None and len(datasets) == 1:
            dataset = datasets[0]
        if m is None or dataset is None:
            unmatched.append(name)
            continue
        plan[dataset].setdefault(int(m.group(1)), []).append(name)
    if unmatched:
        raise StepError(f"{len(unmatched)} of {len(image_names)} images in images.bin match no frame of "
                        f"the recordings {', '.join(datasets)} (e.g. {unmatched[0]!r}); expected "
                        "<recording>/<name><index>.jpg or <recording>_<index>.jpg")
    return plan


def describe_layout(image_names: list[str]) -> str:
    nested = sum(1 for n in image_names if "/" in n)
    example = image_names[0]
    if nested:
        return f"<recording>/<frame> (e.g. {example}), mirrored under Frames/"
    return f"flat (e.g. {example})"


def save_jpeg(img, path: Path, quality: int = 95) -> None:
    import io
    from rasterizer.scene import atomic_write
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


# =========================================================================== 2-4. nerfstudio

def step_process(job: Job) -> None:
    if not job.frames.is_dir():
        raise StepError(f"{job.frames} does not exist (run the extract step first)")
    run_tool("process", ["ns-process-data", "images",
                         "--data", str(job.frames),
                         "--output-dir", str(job.ns_data),
                         "--skip-colmap", "--colmap-model-path", "../global/refined_sfm_combined/"])
    expect_output("process", job.ns_data / "transforms.json")


def step_train(job: Job) -> None:
    run_tool("train", ["ns-train", "splatfacto",
                       "--vis", "tensorboard",
                       "--logging.local-writer.max-log-size", "0",
                       "--logging.steps-per-log", "1000",
                       "--data", str(job.ns_data),
                       "--experiment-name", "splatter",
                       "--method-name", "splatfacto",
                       "--timestamp", "/",
                       "--output-dir", str(job.root / "refined"),
                       "nerfstudio-data",
                       "--center-method", "none",
                       "--orientation-method", "none",
                       "--auto-scale-poses", "False"])
    expect_output("train", job.config)


def step_export(job: Job) -> None:
    run_tool("export", ["ns-export", "gaussian-splat",
                        "--load-config", str(job.config),
                        "--output-dir", str(job.out)])
    expect_output("export", job.splat_ply)


TOOLS = {"process": "ns-process-data", "train": "ns-train", "export": "ns-export"}


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
        for line in proc.stdout:  # universal newlines: progress bars' \r ends a line too
            line = line.rstrip()
            if line:
                log.info("%s | %s", cmd[0], line)
        rc = proc.wait()
    if rc != 0:
        raise StepError(f"{cmd[0]} exited with status {rc} after {time.perf_counter() - t0:.1f} s")


def expect_output(step: str, path: Path) -> None:
    if not path.is_file():
        raise StepError(f"the command succeeded but did not write {path}")


# =========================================================================== 5. rotate

def step_rotate(job: Job) -> None:
    from rasterizer.errors import SceneError
    from rasterizer.scene import load_scene, save_ply
    from rasterizer.transform import transform_scene

    if not job.splat_ply.is_file():
        raise StepError(f"{job.splat_ply} not found (run the export step first)")
    to_domain = domain_transform(job)
    try:
        scene = load_scene(job.splat_ply)
    except SceneError as e:
        raise StepError(str(e)) from None
    rotated = transform_scene(scene, to_domain)
    save_ply(rotated, job.splat_rot_ply)
    log.info("rotate: wrote %s (%d Gaussians, SH degree %d, normals %s)", job.splat_rot_ply, len(rotated),
             rotated.sh_degree, "rotated" if rotated.normals is not None else "absent")


def domain_transform(job: Job):
    """nerfstudio training frame → domain frame: the inverse of transforms.json's applied_transform
    (after undoing a non-identity dataparser transform, which the seed's options never make)."""
    from rasterizer.errors import SceneError
    from rasterizer.transform import COLMAP_TO_NERFSTUDIO, from_matrix

    tj = job.ns_data / "transforms.json"
    applied = None
    if tj.is_file():
        try:
            doc = json.loads(tj.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise StepError(f"{tj}: not readable JSON ({_one_line(e)})") from None
        applied = doc.get("applied_transform") if isinstance(doc, dict) else None
    try:
        if applied is None:
            log.warning("rotate: %s %s; using nerfstudio's fixed COLMAP→nerfstudio axis swap %s",
                        tj, "has no applied_transform" if tj.is_file() else "does not exist",
                        json.dumps(COLMAP_TO_NERFSTUDIO[:, :3].astype(int).tolist()))
            forward = from_matrix(COLMAP_TO_NERFSTUDIO, "nerfstudio axis swap")
        else:
            forward = from_matrix(applied, f"{tj}: applied_transform")
            log.info("rotate: applied_transform from %s: %s", tj, json.dumps(applied))
        dp = job.config.parent / "dataparser_transforms.json"
        if dp.is_file():
            d = json.loads(dp.read_text())
            m = [[float(v) for v in row] for row in d["transform"]]
            s = float(d.get("scale", 1.0))
            dataparser = from_matrix([[s * v for v in row] for row in m], f"{dp}: transform·scale")
            if not dataparser.is_identity:
                log.info("rotate: undoing the dataparser transform of %s (scale %g)", dp, s)
                forward = dataparser.compose(forward)
    except SceneError as e:
        raise StepError(str(e)) from None
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise StepError(f"{job.config.parent / 'dataparser_transforms.json'}: unreadable ({_one_line(e)})") from None
    inverse = forward.inverse()
    log.info("rotate: nerfstudio → domain: rotation %s, scale %.6g, translation %s",
             json.dumps(inverse.rotation.round(6).tolist()), inverse.scale,
             json.dumps((inverse.translation.round(6) + 0.0).tolist()))
    return inverse


# =========================================================================== 6. convert

def step_convert(job: Job) -> None:
    from rasterizer.errors import SceneError
    from rasterizer.splatfile import convert

    if not job.splat_rot_ply.is_file():
        raise StepError(f"{job.splat_rot_ply} not found (run the rotate step first)")
    try:
        stats = convert(job.splat_rot_ply, job.splat_rot_splat)
    except SceneError as e:
        raise StepError(str(e)) from None
    log.info("convert: wrote %s (%d Gaussians, %d bytes; read %.2f s, total %.2f s)", job.splat_rot_splat,
             stats.count, job.splat_rot_splat.stat().st_size, stats.read_seconds, stats.seconds)


# =========================================================================== 7. previews

PREVIEW_VIEWS = ("top", "angle")


def step_previews(job: Job) -> None:
    from rasterizer.preview import DEFAULT_BACKGROUND, write_previews

    remove_stale(job.out, [f"preview_{v}.jpg" for v in PREVIEW_VIEWS])
    prepared = prepare(job, "previews")
    if prepared is None:
        return
    for view in PREVIEW_VIEWS:
        try:
            renderer = with_injected_faults(prepared, view)
            write_previews(job._scene, job.out, up="y", size=job.opts.preview_size, background=DEFAULT_BACKGROUND,
                           fmt="jpg", quality=90, views=(view,), prepared=renderer)
        except Exception as e:  # noqa: BLE001 - best effort: one view failing keeps the other
            log.warning("previews: preview_%s.jpg not written: %s", view, _one_line(e))


# =========================================================================== 8. video

def step_video(job: Job) -> None:
    import av
    from rasterizer import backends
    from rasterizer.imageio import to_uint8
    from rasterizer.preview import DEFAULT_BACKGROUND, orbit_cameras

    final = job.out / "preview.mp4"
    remove_stale(job.out, ["preview.mp4"])
    prepared = prepare(job, "video")
    if prepared is None:
        return
    opts = job.opts
    w, h = opts.video_size
    cams = orbit_cameras(job._scene, n_frames=opts.video_frames, up="y", size=(w, h), elevation_deg=35.0,
                         sweep_deg=360.0)
    renderer = with_injected_faults(prepared, "video")
    on_gpu = backends.resolve(opts.backend) == "gpu"

    def frames():
        if on_gpu:  # the scene is on the device already (Prepared): the orbit as one batch
            for cam in cams:
                yield renderer.render(cam, DEFAULT_BACKGROUND)
            return
        # CPU: render the first frame(s), estimate the whole orbit, skip it if over budget
        t0 = time.perf_counter()
        first = renderer.render(cams[0], DEFAULT_BACKGROUND)
        per_frame = time.perf_counter() - t0
        estimate = per_frame * len(cams)
        if estimate > opts.video_cpu_budget_s and len(cams) > 1:  # the first frame may include JIT warm-up
            t0 = time.perf_counter()
            second = renderer.render(cams[1], DEFAULT_BACKGROUND)
            per_frame = time.perf_counter() - t0
            estimate = per_frame * len(cams)
            if estimate > opts.video_cpu_budget_s:
                raise BudgetExceeded(estimate)
            yield first
            yield second
            rest = cams[2:]
        else:
            yield first
            rest = cams[1:]
        log.info("video: CPU rendering, about %.1f s for %d frames (budget %.0f s)", estimate, len(cams),
                 opts.video_cpu_budget_s)
        for cam in rest:
            yield renderer.render(cam, DEFAULT_BACKGROUND)

    t0 = time.perf_counter()
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".preview.mp4.", suffix=".tmp", dir=job.out)
        os.close(fd)
        with av.open(tmp, mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=opts.video_fps)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.options = {"crf": "23", "preset": "medium"}
            for img in frames():
                frame = av.VideoFrame.from_ndarray(to_uint8(img.rgb), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except BudgetExceeded as e:
        _unlink(tmp)
        log.info("video: skipped: rendering %d frames on the CPU would take about %.0f s, over the budget of "
                 "%.0f s (--video-cpu-budget)", len(cams), e.estimate, opts.video_cpu_budget_s)
        return
    except BaseException as e:
        _unlink(tmp)
        if not isinstance(e, Exception):
            raise
        log.warning("video: preview.mp4 not written: %s", _one_line(e))
        return
    log.info("video: wrote %s (%dx%d, %d frames at %d fps, H.264 yuv420p, fast start; %.1f s)", final, w, h,
             len(cams), opts.video_fps, time.perf_counter() - t0)


class BudgetExceeded(Exception):
    def __init__(self, estimate: float):
        super().__init__(f"estimated {estimate:.0f} s")
        self.estimate = estimate


# --------------------------------------------------------------------------- preview helpers

def prepare(job: Job, step: str):
    """The rotated scene, loaded and uploaded once for both best-effort steps (None on failure)."""
    from rasterizer import backends
    from rasterizer.render import Prepared
    from rasterizer.scene import load_scene

    if job._prepared is not None:
        return job._prepared
    try:
        job._scene = load_scene(job.splat_rot_ply)
        backend = backends.resolve(job.opts.backend)
        job._prepared = Prepared(job._scene, backend)
        log.info("%s: rendering %s (%d Gaussians) with the %s backend", step, job.splat_rot_ply,
                 len(job._scene), backend)
        return job._prepared
    except Exception as e:  # noqa: BLE001 - best effort
        log.warning("%s: skipped: %s", step, _one_line(e))
        job._scene = None
        return None


def with_injected_faults(prepared, output: str):
    """``prepared``, or a stand-in whose render raises, when ``$SPLATTER_INJECT_RENDER_FAULT``
    names this output (``top``, ``angle``, ``video``; ``video@K`` fails at frame K)."""
    spec = [s.strip() for s in os.environ.get(FAULT_ENV, "").split(",") if s.strip()]
    at = None
    for s in spec:
        name, _, k = s.partition("@")
        if name == output:
            at = int(k) if k else 0
    if at is None:
        return prepared

    class Faulty:
        calls = 0

        def render(self, camera, background=(0.0, 0.0, 0.0)):
            Faulty.calls += 1
            if Faulty.calls > at:
                raise RuntimeError(f"injected render fault ({FAULT_ENV}={output}{'@%d' % at if at else ''})")
            return prepared.render(camera, background)

    log.warning("%s: %s is set: the renderer will fail for %s", output, FAULT_ENV, output)
    return Faulty()


def remove_stale(folder: Path, names: list[str]) -> None:
    """Delete outputs of an earlier attempt (and temp files a killed attempt left behind)."""
    for name in names:
        for p in [folder / name, *folder.glob(f".{name}.*.tmp")]:
            try:
                p.unlink()
                log.info("removed stale %s", p)
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("cannot remove stale %s: %s", p, _one_line(e))


def _unlink(p) -> None:
    if p is None:
        return
    try:
        os.unlink(p)
    except OSError:
        pass


# =========================================================================== demo job

def build_demo_job(root: Path) -> None:
    """A job as if training had produced ``splat.ply``: the demo room moved into nerfstudio's
    frame by the applied_transform that ns-process-data records in transforms.json."""
    from rasterizer.demo import demo_scene
    from rasterizer.scene import atomic_write, save_ply
    from rasterizer.transform import COLMAP_TO_NERFSTUDIO, from_matrix, transform_scene

    job = Job(root, DEMO_ID, DEMO_ID)
    applied = COLMAP_TO_NERFSTUDIO.tolist()
    doc = {"camera_model": "OPENCV", "frames": [], "applied_transform": applied}
    atomic_write(job.ns_data / "transforms.json", lambda f: f.write(json.dumps(doc, indent=2).encode()))
    scene = transform_scene(demo_scene(), from_matrix(applied))
    save_ply(scene, job.splat_ply)
    log.info("demo: wrote %s (%d Gaussians, SH degree %d, in nerfstudio's frame) and %s", job.splat_ply,
             len(scene), scene.sh_degree, job.ns_data / "transforms.json")


# =========================================================================== main

STEP_FUNCS = {"extract": step_extract, "process": step_process, "train": step_train, "export": step_export,
              "rotate": step_rotate, "convert": step_convert, "previews": step_previews, "video": step_video}


def run_pipeline(job: Job, steps: list[str]) -> int:
    log.info("job %s (domain %s): root %s, steps %s", job.job_id, job.domain_id, job.root, " → ".join(steps))
    missing = [(s, TOOLS[s]) for s in steps if s in TOOLS and shutil.which(TOOLS[s]) is None]
    if missing:  # before hours of work, not after
        step, tool = missing[0]
        log.error("step %s failed: %s not found on PATH (%s)", step, tool, NERFSTUDIO_HINT)
        return 1
    t_job = time.perf_counter()
    for i, step in enumerate(steps, 1):
        log.info("step %d/%d %s: start (%s)", i, len(steps), step, DESCRIPTIONS[step])
        t0 = time.perf_counter()
        try:
            STEP_FUNCS[step](job)
        except StepError as e:
            log.error("step %s failed after %.1f s: %s", step, time.perf_counter() - t0, e)
            return 1
        except Exception as e:  # noqa: BLE001
            if step in BEST_EFFORT:
                log.warning("step %s failed (best effort, the job goes on): %s", step, _one_line(e))
            else:
                log.debug("traceback", exc_info=True)
                log.error("step %s failed after %.1f s: %s: %s", step, time.perf_counter() - t0,
                          type(e).__name__, _one_line(e))
                return 1
        log.info("step %s: done in %.2f s", step, time.perf_counter() - t0)
    outputs = [p for p in (job.splat_ply, job.splat_rot_ply, job.splat_rot_splat, job.out / "preview_top.jpg",
                           job.out / "preview_angle.jpg", job.out / "preview.mp4") if p.is_file()]
    log.info("job done in %.1f s; outputs: %s", time.perf_counter() - t_job,
             ", ".join(f"{p.name} ({p.stat().st_size} B)" for p in outputs) or "none")
    return 0


def parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)x(\d+)", text.strip().lower())
    if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 1280x720, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def parse_video_size(text: str) -> tuple[int, int]:
    w, h = parse_size(text)
    if w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"H.264 yuv420p needs an even width and height, got {text!r}")
    return w, h


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="run.py", description="splatter job pipeline: " + " → ".join(STEPS),
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--domain_id", help="domain the job belongs to (logged); required unless --demo")
    ap.add_argument("--job_id", help="job id (logged); required unless --demo")
    ap.add_argument("--job_root_path", type=Path, help="the job folder (inputs and outputs)")
    ap.add_argument("--log_level", default="info", type=str.upper,
                    choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging level")
    ap.add_argument("--from-step", choices=STEPS, help="start here (resume an earlier job)")
    ap.add_argument("--to-step", choices=STEPS, help="stop after this step")
    ap.add_argument("--steps", action="store_true", help="list the steps in order and exit")
    ap.add_argument("--demo", action="store_true",
                    help="build a demo job from the built-in demo scene under --job_root_path (default "
                         "demo-job) and run it from step rotate")
    ap.add_argument("--backend", default="auto", choices=["auto", "gpu", "cpu", "numpy"],
                    help="renderer for previews and video (auto: gpu when CuPy sees a device, else cpu)")
    ap.add_argument("--preview-size", type=parse_size, default="1280x720", metavar="WxH",
                    help="preview image size")
    ap.add_argument("--video-size", type=parse_video_size, default="1280x720", metavar="WxH",
                    help="orbit video size (even numbers)")
    ap.add_argument("--video-frames", type=int, default=150, help="orbit frames (5 s at 30 fps)")
    ap.add_argument("--video-fps", type=int, default=30)
    ap.add_argument("--video-cpu-budget", type=float, default=300.0, metavar="SECONDS",
                    help="without a GPU, render the video only if it should take at most this long")
    return ap


def setup_logging(level: str) -> None:
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(lambda r: r.levelno < logging.ERROR)
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.ERROR)
    root = logging.getLogger()
    root.handlers[:] = []
    for h in (out, err):
        h.setFormatter(fmt)
        root.addHandler(h)
    root.setLevel(level)


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.steps:
        for i, s in enumerate(STEPS, 1):
            print(f"{i}. {s:9s} {DESCRIPTIONS[s]}")
        return 0
    if args.demo:
        args.job_root_path = args.job_root_path or Path("demo-job")
        args.domain_id, args.job_id = args.domain_id or DEMO_ID, args.job_id or DEMO_ID
        if args.from_step and STEPS.index(args.from_step) < STEPS.index("rotate"):
            ap.error("--demo starts from a trained splat: --from-step must be rotate or later")
        args.from_step = args.from_step or "rotate"
    else:
        missing = [f"--{n}" for n in ("domain_id", "job_id", "job_root_path") if getattr(args, n) is None]
        if missing:
            ap.error(f"the following arguments are required: {', '.join(missing)} (or use --demo)")
    first = STEPS.index(args.from_step) if args.from_step else 0
    last = STEPS.index(args.to_step) if args.to_step else len(STEPS) - 1
    if first > last:
        ap.error(f"--from-step {args.from_step} comes after --to-step {args.to_step}")
    if args.video_frames < 1 or args.video_fps < 1:
        ap.error("--video-frames and --video-fps must be at least 1")
    setup_logging(args.log_level)

    opts = Options(backend=args.backend, preview_size=args.preview_size, video_size=args.video_size,
                   video_frames=args.video_frames, video_fps=args.video_fps,
                   video_cpu_budget_s=args.video_cpu_budget)
    job = Job(args.job_root_path.resolve(), args.domain_id, args.job_id, opts)
    if args.demo:
        try:
            build_demo_job(job.root)
        except Exception as e:  # noqa: BLE001 - e.g. an unwritable folder
            log.error("demo: cannot build the demo job under %s: %s", job.root, _one_line(e))
            return 1
    elif not job.root.is_dir():
        log.error("job root %s is not a folder", job.root)
        return 1
    return run_pipeline(job, list(STEPS[first:last + 1]))


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
