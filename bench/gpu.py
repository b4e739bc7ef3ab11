"""``python -m bench.gpu``: the CuPy backend against gsplat 1.4.0, in the same process.

For each scene (the real ones; 1M and 3M Gaussians tiled on a grid from the 500k SH-0 scene and
from the SH-3 scene), resolution (1920x1080 by default) and camera (the ¾ ``angle`` preview, the
``top`` one, and ``inside``: at the robust centre of the scene, or of its first copy for the tiled
ones, looking sideways through it): the median frame time of ours and of gsplat's
``rasterization(..., packed=False, rasterize_mode="classic")`` over ``repeat`` runs after warm-up,
timed with CUDA events in alternating rounds (same clocks for both), the scene already on the GPU,
black background; the ratio; the PSNR
between the two 8-bit images and the largest alpha difference; the number of tile intersections
we bin and gsplat's count of them; the peak GPU memory of our frame (CuPy's pool: bytes in use,
the scene included) and of gsplat's (PyTorch's allocator).

The standalone run also reports the kernel compile cost and the GPU preview step
(``python -m rasterizer preview --backend gpu``) of whole processes: wall time and peak RSS, the
import time of the big packages, and load / backend / compile / upload / render / download /
encode times measured step by step in a fresh process; and the same command on the CPU backend;
for the 500k scene, the 1M SH-3 and 3M SH-0 tiled ones and 1M Gaussians of the demo's rooms (indoor:
the preview cuts their ceilings away), each written to a PLY. Then the orbit video's frames per second
(PyAV needed).

``python -m bench`` calls :func:`run_gpu_bench` when a GPU is present. Nothing here imports CuPy,
PyTorch or gsplat at module import time: :func:`gsplat_render` (the one place that calls gsplat
with the contract's parameters) is also what ``golden/gsplat/regenerate.py`` and the live
reference test use.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rasterizer import stages
from rasterizer.camera import Camera
from rasterizer.imageio import psnr
from rasterizer.preview import parse_up, preview_cameras, robust_bounds
from rasterizer.render import Prepared
from rasterizer.scene import Scene, load_scene

from .scenes import BIG_SCENE, REAL_SCENES, REPO, SH3_SCENE, scenes_dir, tile_scene

VIEWS = ("angle", "top", "inside")
TARGET_RATIO = 0.40                 # ours / gsplat 1.4.0 on every scene and camera (issue 12)
TARGET_PREVIEW_S = 1.0              # whole GPU preview step, 1M SH-3 PLY, both views, JPEGs
INDOOR = "tiled-1M (demo rooms, SH3)"   # the built-in demo room tiled to 1M Gaussians (preview report only)


class PeakMemory:
    """Peak bytes in use in CuPy's default memory pool (every CuPy allocation),
    tracked from construction (or :meth:`start`) until :meth:`close`. The tracking hook costs
    host time on every allocation: frames are timed without it."""

    def __init__(self, start: bool = True):
        import cupy as cp
        self.pool = cp.get_default_memory_pool()
        self.peak = 0
        if start:
            self.start()

    def start(self) -> None:
        import cupy as cp
        self.reset()
        cp.cuda.set_allocator(self._malloc)

    def _malloc(self, size: int):
        mem = self.pool.malloc(size)
        used = self.pool.used_bytes()
        if used > self.peak:
            self.peak = used
        return mem

    def reset(self) -> None:
        self.peak = self.pool.used_bytes()

    def close(self) -> None:
        import cupy as cp
        cp.cuda.set_allocator(self.pool.malloc)


# --------------------------------------------------------------------------- cameras

def inside_camera(scene: Scene, up: str, size, anchor: Scene | None = None, fov_y_deg: float = 70.0) -> Camera:
    """At the robust centre of ``anchor`` (default: the scene), looking sideways (horizontally,
    off the world axes) through it."""
    b = robust_bounds(anchor if anchor is not None else scene)
    u = parse_up(up)
    k = int(np.argmax(np.abs(u)))
    a_ax, b_ax = (np.eye(3)[i] for i in range(3) if i != k)
    side = 0.3 * a_ax + 1.0 * b_ax
    return Camera.look_at(b.center, b.center + side, u, fov_y_deg, *size)


def bench_cameras(scene: Scene, up: str, size, anchor: Scene | None = None) -> dict[str, Camera]:
    cams = preview_cameras(scene, up=up, size=size)
    cams["inside"] = inside_camera(scene, up, size, anchor)
    return cams


# --------------------------------------------------------------------------- gsplat

def _gsplat(out=print):
    try:
        import gsplat
        import torch
        return gsplat, torch
    except Exception as e:  # noqa: BLE001 - not installed, or its CUDA build failed
        out(f"# gsplat not importable ({type(e).__name__}: {e}); timing ours only")
        return None, None


def gsplat_inputs(torch, g: stages.Gaussians):
    """Activated Gaussians (NumPy or CuPy arrays) as contiguous CUDA tensors, and the SH degree."""
    t = [torch.as_tensor(a, device="cuda").contiguous() for a in (g.means, g.quats, g.scales, g.opacities, g.sh)]
    return (*t, g.sh_degree)


def gsplat_frame(gsplat, torch, inputs, cam: Camera, background=(0.0, 0.0, 0.0)):
    """One gsplat 1.4.0 frame with the contract's parameters: (colors (H, W, 3), alphas (H, W)),
    unclamped CUDA tensors."""
    means, quats, scales, opac, sh, degree = inputs
    view = torch.tensor(cam.world_to_camera, dtype=torch.float32, device="cuda")[None]
    K = torch.tensor([[cam.fx, 0, cam.cx], [0, cam.fy, cam.cy], [0, 0, 1]], dtype=torch.float32, device="cuda")[None]
    bg = torch.tensor([background], dtype=torch.float32, device="cuda")
    colors, alphas, _ = gsplat.rasterization(
        means, quats, scales, opac, sh, view, K, cam.width, cam.height, near_plane=stages.NEAR,
        far_plane=stages.FAR, eps2d=stages.EPS2D, sh_degree=degree, packed=False, tile_size=stages.TILE,
        rasterize_mode="classic", radius_clip=0.0, backgrounds=bg, camera_model=cam.model)
    return colors[0], alphas[0, ..., 0]


def gsplat_render(scene: Scene, cameras, background=(0.0, 0.0, 0.0)) -> list[tuple[np.ndarray, np.ndarray]]:
    """gsplat 1.4.0's images of ``scene``: (rgb clamped to [0, 1], alpha) float32 per camera.
    Raises ImportError where gsplat or PyTorch is missing."""
    import gsplat
    import torch
    inputs = gsplat_inputs(torch, stages.activate(scene))
    out = []
    with torch.no_grad():
        for cam in cameras:
            rgb, alpha = gsplat_frame(gsplat, torch, inputs, cam, background)
            out.append((rgb.clamp(0, 1).cpu().numpy(), alpha.cpu().numpy()))
    return out


def _median_ms(frame, events, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start, end, elapsed = events()
        start.record()
        frame()
        end.record()
        end.synchronize()
        times.append(elapsed(start, end))
    return statistics.median(times)


# --------------------------------------------------------------------------- ours

def _cupy_events():
    import cupy as cp
    return cp.cuda.Event(), cp.cuda.Event(), cp.cuda.get_elapsed_time


def _torch_events():
    import torch
    return (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True),
            lambda a, b: a.elapsed_time(b))


def time_case(prepared: Prepared, cam, repeat: int, mem: PeakMemory, gs=None) -> dict:
    """Median device times (CUDA events) of our frame (:meth:`Prepared.frame`, no download) and of
    gsplat's (``gs = (gsplat, torch, inputs)``), the two alternating in rounds of 5 frames so that
    both see the same clocks; their images; the peak memory of each."""
    import cupy as cp
    ours = lambda: prepared.frame(cam)                                     # noqa: E731
    for _ in range(3):
        ours()
    cp.cuda.Device().synchronize()
    mem.start()                                        # one untimed frame for the memory peak
    rgb, alpha = ours()
    cp.cuda.Device().synchronize()
    mem.close()
    out = {"ours_img": (cp.asnumpy(rgb), cp.asnumpy(alpha)), "ours_peak_mib": mem.peak / 2**20}
    if gs is None:
        out["ours_ms"] = _median_ms(ours, _cupy_events, repeat)
        return out
    gsplat, torch, inputs = gs
    theirs = lambda: gsplat_frame(gsplat, torch, inputs, cam)             # noqa: E731
    with torch.no_grad():
        for _ in range(3):
            theirs()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        colors, alphas = theirs()
        out["gsplat_img"] = (colors.clamp(0, 1).cpu().numpy(), alphas.cpu().numpy())
        out["gsplat_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        a, b = [], []
        for _ in range((repeat + 4) // 5):
            a.append(_median_ms(ours, _cupy_events, 5))
            b.append(_median_ms(theirs, _torch_events, 5))
    out["ours_ms"], out["gsplat_ms"] = statistics.median(a), statistics.median(b)
    return out


def _warm_up(seconds: float = 1.0) -> None:
    """Busy the GPU for a moment so that the first case is not timed at idle clocks."""
    import cupy as cp
    a = cp.ones((4096, 4096), np.float32)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ a
        cp.cuda.Device().synchronize()


def pair_counts(prepared: Prepared, cam) -> tuple[int, int]:
    """(tile intersections we bin, gsplat's: every tile of each visible Gaussian's square)."""
    import cupy as cp
    p, _ = prepared.backend.project_and_color(prepared.gaussians, cam)
    square = stages.Projection(cp.asnumpy(p.means2d), None, None, cp.asnumpy(p.radii))
    return int(p.counts.sum()), int(stages.tile_rects(square, *stages.tile_grid(cam))[4].sum())


def _entry(e) -> tuple:
    """(scene, up, anchor) of a ``scenes`` entry: a Scene, (Scene, up) or (Scene, up, anchor)."""
    e = e if isinstance(e, tuple) else (e,)
    return e[0], e[1] if len(e) > 1 else "y", e[2] if len(e) > 2 else None


def run_gpu_bench(scenes: dict, out=print, repeat: int = 20, sizes=((1920, 1080),), views=VIEWS) -> list[dict]:
    """Time our GPU backend (and gsplat 1.4.0 when importable) on every scene, size and view.

    ``scenes`` maps a name to a :class:`Scene`, ``(Scene, up)`` or ``(Scene, up, anchor)`` (the
    scene whose robust centre the ``inside`` camera stands at). Returns one dict per case.
    """
    import cupy as cp
    gsplat, torch = _gsplat(out)
    mem = PeakMemory(start=False)
    rows = []
    _warm_up()
    out(f"{'scene':30s} {'N':>8s} {'sh':>2s} {'size':>9s} {'view':6s} {'ours ms':>8s} {'gsplat ms':>9s} "
        f"{'ratio':>6s} {'PSNR dB':>8s} {'d-alpha':>8s} {'pairs':>9s} {'gs pairs':>9s} {'MiB':>5s} {'gs MiB':>6s}")
    try:
        for name, entry in scenes.items():
            scene, up, anchor = _entry(entry)
            cp.get_default_memory_pool().free_all_blocks()
            prepared = Prepared(scene, "gpu")
            inputs = gsplat_inputs(torch, prepared.gaussians) if gsplat is not None else None
            for (w, h) in sizes:
                cams = bench_cameras(scene, up, (w, h), anchor)
                for view in views:
                    cam = cams[view]
                    t = time_case(prepared, cam, repeat, mem, None if inputs is None else (gsplat, torch, inputs))
                    ours, (rgb, alpha) = t["ours_ms"], t["ours_img"]
                    pairs, gs_pairs = pair_counts(prepared, cam)
                    row = {"scene": name, "n": len(scene), "sh": scene.sh_degree, "size": (w, h), "view": view,
                           "ours_ms": ours, "ours_peak_mib": t["ours_peak_mib"], "pairs": pairs,
                           "gsplat_pairs": gs_pairs}
                    if inputs is not None:
                        ref, (grgb, galpha) = t["gsplat_ms"], t["gsplat_img"]
                        row.update(gsplat_ms=ref, ratio=ours / ref, psnr=psnr(rgb, grgb),
                                   dalpha=float(np.abs(alpha - galpha).max()), gsplat_peak_mib=t["gsplat_peak_mib"])
                        quality = (f"{ref:9.3f} {ours / ref:6.2f} {row['psnr']:8.2f} {row['dalpha']:8.5f} "
                                   f"{pairs:9d} {gs_pairs:9d} {row['ours_peak_mib']:5.0f} "
                                   f"{row['gsplat_peak_mib']:6.0f}")
                    else:
                        quality = (f"{'-':>9s} {'-':>6s} {'-':>8s} {'-':>8s} {pairs:9d} {gs_pairs:9d} "
                                   f"{row['ours_peak_mib']:5.0f} {'-':>6s}")
                    out(f"{name:30s} {len(scene):8d} {scene.sh_degree:2d} {w:4d}x{h:<4d} {view:6s} {ours:8.3f} "
                        f"{quality}")
                    rows.append(row)
            del prepared, inputs
            if torch is not None:
                torch.cuda.empty_cache()
    finally:
        mem.close()
    timed = [r for r in rows if "ratio" in r]
    if timed:
        best, worst = min(timed, key=lambda r: r["ratio"]), max(timed, key=lambda r: r["ratio"])
        low = min(timed, key=lambda r: r["psnr"])
        out(f"# target: ours <= {TARGET_RATIO:.2f}x gsplat on every case at PSNR >= 50 dB; best "
            f"{best['ratio']:.2f} ({best['scene']} {best['view']}), worst {worst['ratio']:.2f} "
            f"({worst['scene']} {worst['view']}), lowest PSNR {low['psnr']:.2f} dB ({low['scene']} {low['view']}); "
            f"{sum(r['ratio'] <= TARGET_RATIO for r in timed)}/{len(timed)} cases meet the ratio")
    return rows


# --------------------------------------------------------------------------- whole processes

def compile_report(out=print) -> None:
    """Time this process's kernel load (compile, or CuPy's disk cache) and first frame."""
    import cupy as cp

    from rasterizer.backends import gpu_cupy
    t0 = time.perf_counter()
    gpu_cupy.load_kernels()
    cp.cuda.Device().synchronize()
    t1 = time.perf_counter()
    from rasterizer.demo import demo_scene
    scene = demo_scene()
    prepared = Prepared(scene, "gpu")
    cam = preview_cameras(scene, size=(640, 480))["angle"]
    t2 = time.perf_counter()
    prepared.render(cam)
    t3 = time.perf_counter()
    prepared.render(cam)
    t4 = time.perf_counter()
    out(f"# kernel load {t1 - t0:.3f} s; first frame {t3 - t2:.3f} s (CuPy's own kernels included), "
        f"second frame {t4 - t3:.4f} s; cache dir {os.environ.get('CUPY_CACHE_DIR', '~/.cupy/kernel_cache')}")


def _run(cmd: list[str], env=None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stderr) of one child process. The peak is the child's own VmHWM,
    polled from /proc until it exits (getrusage's maxrss would count the pages this big benchmark
    process shares with the child between fork and exec)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, text=True, env=env)
        peak_kib = 0
        while proc.poll() is None:
            try:
                with open(f"/proc/{proc.pid}/status") as f:
                    peak_kib = max([peak_kib] + [int(line.split()[1]) for line in f if line.startswith("VmHWM:")])
            except (OSError, ValueError):
                pass
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        err.seek(0)
        text = err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {text.strip()[-500:]}")
    return wall, peak_kib / 1024.0, text


def _import_times(stderr: str, packages=("cupy", "numba", "numpy", "PIL", "plyfile", "rasterizer")) -> str:
    """Cumulative import seconds of the top-level packages in ``-X importtime`` output."""
    found = {}
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|\s?(\S+)$", line)
        if m and m.group(2) in packages:
            found[m.group(2)] = int(m.group(1)) / 1e6
    return ", ".join(f"{p} {found[p]:.2f} s" if p in found else f"{p} -" for p in packages)


def preview_stages(ply: str, up: str, size=(1280, 720)) -> dict:
    """The GPU preview step of ``python -m rasterizer preview`` timed step by step in this (fresh)
    process: seconds per step."""
    t = {}
    t0 = time.perf_counter()
    import cupy as cp
    t["import cupy"] = time.perf_counter() - t0
    from rasterizer.backends import get, gpu_cupy
    from rasterizer.imageio import save_image
    from rasterizer.preview import DEFAULT_BACKGROUND
    t0 = time.perf_counter()
    get("gpu")
    t["backend check"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    gpu_cupy.load_kernels()
    t["kernel load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scene = load_scene(ply)
    t["load PLY"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    prepared = Prepared(scene, "gpu")
    cp.cuda.Device().synchronize()
    t["upload"] = time.perf_counter() - t0
    t["render"] = t["download"] = t["encode"] = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for view, cam in preview_cameras(scene, up=up, size=size).items():
            t0 = time.perf_counter()
            rgb, _alpha = prepared.frame(cam, DEFAULT_BACKGROUND)
            cp.cuda.Device().synchronize()
            t1 = time.perf_counter()
            rgb = cp.asnumpy(rgb)
            t2 = time.perf_counter()
            save_image(Path(tmp) / f"preview_{view}.jpg", rgb)
            t3 = time.perf_counter()
            t["render"] += t1 - t0
            t["download"] += t2 - t1
            t["encode"] += t3 - t2
    return t


def _child_env() -> dict:
    """The environment of the timed child processes: Python's bytecode cache on (in a folder of its own,
    so that it also works where the packages' folders are read-only), as an installed node has it. A
    machine with ``PYTHONDONTWRITEBYTECODE`` set compiles every module of every process again (0.5 s
    of each preview process on the H100 host measured)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", str(Path(tempfile.gettempdir()) / "splatter-bench-pycache"))
    return env


def preview_report(ply: Path, up: str, label: str, out=print, runs: int = 3) -> None:
    """Whole ``python -m rasterizer preview`` processes on the GPU (and the CPU) for one PLY: the first
    process (caches cold where this is the first run), then the median of ``runs`` more."""
    base = [sys.executable, "-m", "rasterizer", "preview", str(ply), f"--up={up}"]
    env = _child_env()
    walls: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("gpu", "cpu"):
            walls[backend] = [_run(base + ["--out", tmp, "--backend", backend], env)[:2] for _ in range(runs + 1)]
        _, _, err = _run([sys.executable, "-X", "importtime"] + base[1:] + ["--out", tmp, "--backend", "gpu"], env)
    (g1, _), *g_rest = walls["gpu"]
    (c1, _), *c_rest = walls["cpu"]
    g2, r2 = statistics.median(w for w, _ in g_rest), max(r for _, r in g_rest)
    c2, rc = statistics.median(w for w, _ in c_rest), max(r for _, r in c_rest)
    verdict = "meets" if g2 <= TARGET_PREVIEW_S else "misses"
    out(f"# preview step, {label}: gpu {g1:.2f} s first process, median {g2:.2f} s of {runs} more "
        f"({min(w for w, _ in g_rest):.2f}-{max(w for w, _ in g_rest):.2f}; {verdict} the {TARGET_PREVIEW_S} s "
        f"target), peak RSS {r2:.0f} MiB; cpu {c1:.2f} s first, median {c2:.2f} s, peak RSS {rc:.0f} MiB; "
        f"gpu/cpu {g2 / c2:.2f}")
    out(f"#   imports (gpu process): {_import_times(err)}")
    r = subprocess.run([sys.executable, "-m", "bench.gpu", "--preview-stages", str(ply), f"--up={up}"], cwd=REPO,
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        out(f"#   step breakdown failed: {r.stderr.strip()[-300:]}")
        return
    steps = json.loads(r.stdout.strip().splitlines()[-1])
    out("#   steps (fresh process, one after the other): " + ", ".join(f"{k} {v:.3f} s" for k, v in steps.items())
        + f"; sum {sum(steps.values()):.2f} s")


def video_report(scene: Scene, up: str, label: str, out=print, frames: int = 150, size=(1280, 720)) -> None:
    """The orbit video of the pipeline's ``video`` step on the GPU, in this process (scene uploaded, CUDA
    up): frames per second of the render alone (each frame downloaded as 8-bit RGB) and of the whole
    step (render, download, H.264 encode into preview.mp4)."""
    try:
        from pipeline.video import write_mp4
    except ImportError as e:   # PyAV missing
        out(f"# orbit video, {label}: skipped ({e})")
        return
    import cupy as cp

    from rasterizer.preview import DEFAULT_BACKGROUND, plan_previews
    plan = plan_previews(scene, up=up)
    cams = plan.orbit_cameras(n_frames=frames, size=size)
    prepared = Prepared(plan.scene, "gpu")
    prepared.render(cams[0], DEFAULT_BACKGROUND)
    cp.cuda.Device().synchronize()
    t0 = time.perf_counter()
    for cam in cams:
        prepared.render8(cam, DEFAULT_BACKGROUND)
    render_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_mp4(Path(tmp) / "preview.mp4", (prepared.render8(c, DEFAULT_BACKGROUND) for c in cams), size, 30,
                  len(cams))
        whole_s = time.perf_counter() - t0
    out(f"# orbit video, {label}: {len(cams)} frames at {size[0]}x{size[1]}: render + download "
        f"{len(cams) / render_s:.0f} frames/s, whole step with the H.264 encode {len(cams) / whole_s:.0f} frames/s "
        f"({whole_s:.2f} s)")


# --------------------------------------------------------------------------- main

def bench_scenes(d: Path | None) -> dict:
    """name → (scene, up, anchor) for every real scene found and the tiled 1M / 3M scenes."""
    scenes = {}
    if d is not None:
        for f, up in REAL_SCENES.items():
            if (d / f).is_file():
                scenes[f] = (load_scene(d / f), up, None)
    for src, label, sizes in ((BIG_SCENE, "playbot", (1_000_000, 3_000_000)),
                              (SH3_SCENE, "train", (1_000_000, 3_000_000))):
        if src in scenes:
            base, up, _ = scenes[src]
            for n in sizes:
                tiled = tile_scene(base, n)             # the inside camera stands in its first copy
                scenes[f"tiled-{n // 1_000_000}M ({label}, SH{base.sh_degree})"] = (
                    tiled, up, tiled.subset(np.arange(len(base))))
    return scenes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", default=str(scenes_dir() or ""), help="folder of the real scenes "
                    "(default $SPLATTER_SCENES or ../shared/scenes)")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--size", action="append", help="WxH (repeatable; default 1920x1080)")
    ap.add_argument("--only", help="only the scenes whose name contains this")
    ap.add_argument("--compile-only", action="store_true", help="only the compile / first-frame report")
    ap.add_argument("--no-preview", action="store_true", help="skip the whole-process preview report")
    ap.add_argument("--preview-stages", metavar="PLY", help=argparse.SUPPRESS)   # the fresh child process
    ap.add_argument("--up", default="y", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.preview_stages:
        print(json.dumps(preview_stages(args.preview_stages, args.up)))
        return 0
    from rasterizer.backends import gpu_unavailable_reason
    reason = gpu_unavailable_reason()
    if reason:
        print(f"GPU benchmark skipped: {reason}")
        return 2
    compile_report()
    if args.compile_only:
        return 0
    d = Path(args.scenes) if args.scenes and Path(args.scenes).is_dir() else None
    if d is None:
        print(f"# real scenes not found in {args.scenes}; set SPLATTER_SCENES")
    scenes = bench_scenes(d)
    if args.only:
        scenes = {k: v for k, v in scenes.items() if args.only in k}
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.size] if args.size else [(1920, 1080)]
    run_gpu_bench(scenes, repeat=args.repeat, sizes=sizes)
    if args.no_preview:
        return 0
    from rasterizer.demo import demo_scene
    from rasterizer.scene import save_ply
    # the indoor case the node mostly sees: rooms with a ceiling, which the preview cuts away
    scenes[INDOOR] = (tile_scene(demo_scene(), 1_000_000), "y", None)
    with tempfile.TemporaryDirectory() as tmp:
        for name, label in ((BIG_SCENE, "playbot 500k SH-0 PLY"), ("tiled-1M (train, SH3)", "1M SH-3 PLY"),
                            (INDOOR, "1M SH-3 rooms PLY"), ("tiled-3M (playbot, SH0)", "3M SH-0 PLY")):
            if name in scenes:
                scene, up, _ = scenes[name]
                ply = save_ply(scene, Path(tmp) / "scene.ply")
                preview_report(ply, up, label)
                video_report(scene, up, label)
    return 0


if __name__ == "__main__":
    sys.exit(main())
