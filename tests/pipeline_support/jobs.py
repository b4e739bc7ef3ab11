"""Building job folders and running run.py as a real process, with or without the stand-ins on PATH."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .colmap import write_cameras_bin, write_images_bin
from .media import make_mp4

REPO = Path(__file__).resolve().parents[2]
RUN_PY = REPO / "run.py"
STANDIN = Path(__file__).resolve().parent / "ns_standin.py"
NS_TOOLS = ("ns-process-data", "ns-train", "ns-export")
#: small renders keep the suite fast on a 2-core CI box
SMALL = ["--preview-size", "96x54", "--video-size", "96x54", "--video-frames", "6"]
IDS = ["--domain_id", "dom-1", "--job_id", "job-1"]


def standin_bin(tmp: Path) -> Path:
    """A folder of ``ns-*`` commands run by this very interpreter (``#!<sys.executable>``).

    Not ``#!/usr/bin/env python3`` with a ``python3`` symlink on PATH: an interpreter started through a symlink
    outside its virtualenv does not see the virtualenv's packages.
    """
    d = tmp / "standin-bin"
    d.mkdir(exist_ok=True)
    for tool in NS_TOOLS:
        exe = d / tool
        exe.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(STANDIN.parent)!r})\n"
                       f"from ns_standin import main\nsys.exit(main({tool!r}))\n")
        exe.chmod(0o755)
    return d


def path_without_nerfstudio() -> list[str]:
    return [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and not any((Path(d) / t).exists() for t in NS_TOOLS)]


def job_env(tmp: Path, standins: bool = True, **extra) -> dict:
    dirs = ([str(standin_bin(tmp))] if standins else []) + path_without_nerfstudio()
    env = dict(os.environ, PATH=os.pathsep.join(dirs), STANDIN_LOG=str(tmp / "standin-calls.jsonl"))
    env.pop("SPLATTER_INJECT_RENDER_FAULT", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_job(root: Path, *args: str, env: dict, cwd: Path | None = None, preexec_fn=None,
            timeout: float = 180) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(RUN_PY), *args]
    if "--job_root_path" not in args and root is not None:
        cmd += ["--job_root_path", str(root)]
    return subprocess.run(cmd, env=env, cwd=cwd or root.parent, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=preexec_fn)


def make_capture(root: Path, recordings: dict[str, int], image_names: list[str]) -> Path:
    """``ROOT/datasets/<name>/Frames.mp4`` (n frames each) and the COLMAP model naming ``image_names``."""
    for name, n in recordings.items():
        make_mp4(root / "datasets" / name / "Frames.mp4", n_frames=n)
    model = root / "refined" / "global" / "refined_sfm_combined"
    write_images_bin(model / "images.bin", image_names)
    write_cameras_bin(model / "cameras.bin")
    return root
