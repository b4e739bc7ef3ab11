"""Stand-ins for nerfstudio's ``ns-process-data``, ``ns-train`` and ``ns-export`` (test doubles).

Each is a real process on ``PATH`` (``jobs.standin_bin`` writes the commands): it insists on the exact
arguments run.py must pass (nerfstudio's own CLI would accept others, but the pipeline contract is these), checks the
inputs the real tool needs, and writes the files the real tool writes:

- ``ns-process-data images --data ROOT/Frames --output-dir ROOT/refined/nerfstudio-data
  --skip-colmap --colmap-model-path ../global/refined_sfm_combined/``: needs cameras.bin and
  images.bin there and every image images.bin names under ``--data`` (nerfstudio's rename map
  raises KeyError otherwise); copies the images to ``images/frame_00001.jpg``… in sorted order
  and writes ``transforms.json`` with nerfstudio's ``applied_transform``
  (``$STANDIN_APPLIED_TRANSFORM``, JSON, overrides it; ``none`` leaves it out).
- ``ns-train splatfacto …`` (the seed's options): writes ``splatter/splatfacto/config.yml``.
- ``ns-export gaussian-splat --load-config … --output-dir …``: writes ``splat.ply``, the scene
  ``$STANDIN_SCENE`` (a domain-frame PLY) moved into nerfstudio's frame by the applied_transform.

``$STANDIN_FAIL=<tool>`` makes that tool print an error and exit 3. Every call is appended to
``$STANDIN_LOG`` (JSON lines) when set.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(REPO))

NS_APPLIED = [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0]]
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".tif", ".tiff"}


def fail(msg: str, code: int = 2) -> int:
    print(f"error: {msg}", file=sys.stderr, flush=True)
    return code


def expect(argv: list[str], want: list[str]) -> str | None:
    if argv != want:
        return f"unexpected arguments:\n  got  {argv}\n  want {want}"
    return None


def process_data(argv: list[str]) -> int:
    if len(argv) < 5 or argv[:2] != ["images", "--data"] or argv[3] != "--output-dir":
        return fail(f"usage: ns-process-data images --data D --output-dir O ...; got {argv}")
    data, out = Path(argv[2]), Path(argv[4])
    err = expect(argv, ["images", "--data", str(data), "--output-dir", str(out), "--skip-colmap",
                        "--colmap-model-path", "../global/refined_sfm_combined/"])
    if err:
        return fail(err)
    root = out.parent.parent
    if data != root / "Frames":
        return fail(f"--data {data} is not the job's Frames folder {root / 'Frames'}")
    out.mkdir(parents=True, exist_ok=True)  # as nerfstudio's converter does first (__post_init__)
    model = out / "../global/refined_sfm_combined/"
    for f in ("cameras.bin", "images.bin"):
        if not (model / f).is_file():
            return fail(f"Could not find existing COLMAP results ({model / f}).", 1)
    from pipeline_support.colmap import read_images_bin

    images = sorted(p for p in data.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXT
                    and not p.name.startswith("."))
    (out / "images").mkdir(parents=True, exist_ok=True)
    rename = {}
    for i, p in enumerate(images, 1):
        new = f"frame_{i:05d}{p.suffix.lower()}"
        shutil.copyfile(p, out / "images" / new)
        rename[p.relative_to(data).as_posix()] = new
        print(f"\rCopying image {i} of {len(images)}...", end="", flush=True)
    print(f"\nStarting with {len(images)} images", flush=True)
    frames = []
    for image_id, name in read_images_bin(model / "images.bin"):
        if name not in rename:
            print("Traceback (most recent call last):", file=sys.stderr)
            print(f"KeyError: '{name}'", file=sys.stderr, flush=True)
            return 1
        frames.append({"file_path": f"images/{rename[name]}", "colmap_im_id": image_id,
                       "transform_matrix": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]})
    doc = {"w": 64, "h": 48, "fl_x": 50.0, "fl_y": 50.0, "cx": 32.0, "cy": 24.0, "k1": 0.0, "k2": 0.0,
           "p1": 0.0, "p2": 0.0, "camera_model": "OPENCV", "frames": frames}
    applied = os.environ.get("STANDIN_APPLIED_TRANSFORM")
    if applied != "none":
        doc["applied_transform"] = json.loads(applied) if applied else NS_APPLIED
    (out / "transforms.json").write_text(json.dumps(doc, indent=2))
    print(f"Colmap matched {len(frames)} images", flush=True)
    print(":tada: :tada: :tada: All DONE :tada: :tada: :tada:", flush=True)
    return 0


TRAIN_TAIL = ["nerfstudio-data", "--center-method", "none", "--orientation-method", "none",
              "--auto-scale-poses", "False"]


def train(argv: list[str]) -> int:
    try:
        data = Path(argv[argv.index("--data") + 1])
        out = Path(argv[argv.index("--output-dir") + 1])
    except (ValueError, IndexError):
        return fail(f"ns-train needs --data and --output-dir; got {argv}")
    err = expect(argv, ["splatfacto", "--vis", "tensorboard", "--logging.local-writer.max-log-size", "0",
                        "--logging.steps-per-log", "1000", "--data", str(data), "--experiment-name", "splatter",
                        "--method-name", "splatfacto", "--timestamp", "/", "--output-dir", str(out), *TRAIN_TAIL])
    if err:
        return fail(err)
    if data != out / "nerfstudio-data" or not (data / "transforms.json").is_file():
        return fail(f"no nerfstudio dataset at {data} (transforms.json missing)")
    for step in (0, 1000, 2000, 29999):
        print(f"\rStep {step} (train loss 0.{9 - step // 5000:d})", end="", flush=True)
        time.sleep(0.01)
    print("\nTraining Finished", flush=True)
    cfg = out / "splatter" / "splatfacto" / "config.yml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(f"# ns-train stand-in\nmethod_name: splatfacto\ndata: {data}\n")
    return 0


def export(argv: list[str]) -> int:
    if len(argv) != 5:
        return fail(f"usage: ns-export gaussian-splat --load-config C --output-dir O; got {argv}")
    cfg, out = Path(argv[2]), Path(argv[4])
    err = expect(argv, ["gaussian-splat", "--load-config", str(cfg), "--output-dir", str(out)])
    if err:
        return fail(err)
    if not cfg.is_file():
        return fail(f"config {cfg} not found")
    data = Path(next(l.split(":", 1)[1].strip() for l in cfg.read_text().splitlines() if l.startswith("data:")))
    applied = json.loads((data / "transforms.json").read_text()).get("applied_transform", NS_APPLIED)
    src = os.environ.get("STANDIN_SCENE")
    if not src:
        return fail("STANDIN_SCENE (a domain-frame PLY) is not set")
    from rasterizer.scene import load_scene, save_ply
    from rasterizer.transform import from_matrix, transform_scene

    scene = transform_scene(load_scene(src), from_matrix(applied))  # "trained" in nerfstudio's frame
    save_ply(scene, out / "splat.ply")
    print(f"Saved {len(scene)} Gaussians to {out / 'splat.ply'}", flush=True)
    return 0


TOOLS = {"ns-process-data": process_data, "ns-train": train, "ns-export": export}


def main(tool: str) -> int:
    argv = sys.argv[1:]
    logfile = os.environ.get("STANDIN_LOG")
    if logfile:
        with open(logfile, "a") as f:
            f.write(json.dumps({"tool": tool, "argv": argv, "prefix": sys.prefix}) + "\n")
    if tool in os.environ.get("STANDIN_FAIL", "").split(","):
        print(f"{tool}: simulated failure (STANDIN_FAIL)", flush=True)
        print("RuntimeError: CUDA out of memory", file=sys.stderr, flush=True)
        return 3
    return TOOLS[tool](argv)
