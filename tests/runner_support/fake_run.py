#!/usr/bin/env python3
"""Stand-in for the pipeline's run.py: same arguments, same inputs checked, same outputs written, at the paths of
the job layout (``pipeline.layout``, imported: the layout test spells the contract's literal paths).

Behaviour knobs (env): FAKE_RUN_REPORT (write a JSON report of what it saw), FAKE_RUN_PID_FILE (write its pid,
and the grandchild's when FAKE_RUN_GRANDCHILD=1), FAKE_RUN_SLEEP (seconds to sleep before writing outputs),
FAKE_RUN_EXIT (exit with this status instead), FAKE_RUN_NO_PREVIEWS=1 (write only the splat and the SOG),
FAKE_RUN_NO_SOG=1 (no SOG), FAKE_RUN_EXPECT_COLMAP=1 (require the five COLMAP binaries), FAKE_RUN_GAUSSIANS
(splat size, default 64).
"""
import argparse
import hashlib
import json
import os
import random
import struct
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from pipeline.layout import COLMAP_INPUTS, PREVIEW_ANGLE, PREVIEW_TOP, JobLayout


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--domain_id", required=True)
    ap.add_argument("--job_id", required=True)
    ap.add_argument("--job_root_path", required=True)
    ap.add_argument("--log_level", required=True, choices=["debug", "info", "warning", "error"])
    args = ap.parse_args()
    root = Path(args.job_root_path)
    layout = JobLayout(root)
    env = os.environ
    datasets = {scan: sha(p) for scan, p in layout.recordings().items()}
    colmap = {c.file: sha(layout.colmap / c.file) for c in COLMAP_INPUTS if (layout.colmap / c.file).is_file()}
    report = {"argv": sys.argv[1:], "script": os.path.abspath(sys.argv[0]), "cwd": os.getcwd(), "pid": os.getpid(),
              "executable": sys.executable,
              "dataset_folders": sorted(p.name for p in layout.datasets.iterdir()) if layout.datasets.is_dir() else [],
              "unbuffered": env.get("PYTHONUNBUFFERED"),
              "secrets_in_env": [k for k in ("SECP256K1_PRIVHEX", "REG_SECRET") if k in env],
              "datasets": datasets, "colmap": colmap, "outputs": {},
              "all_files": sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())}

    def save() -> None:
        if env.get("FAKE_RUN_REPORT"):
            Path(env["FAKE_RUN_REPORT"]).write_text(json.dumps(report))

    print(f"fake run.py: job {args.job_id} in domain {args.domain_id}, {len(datasets)} dataset(s)")
    print("fake run.py: a warning line on stderr", file=sys.stderr)
    pids = [os.getpid()]
    if env.get("FAKE_RUN_GRANDCHILD") == "1":
        pids.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]).pid)
    if env.get("FAKE_RUN_PID_FILE"):
        tmp = Path(env["FAKE_RUN_PID_FILE"] + ".tmp")
        tmp.write_text(" ".join(map(str, pids)))
        tmp.rename(env["FAKE_RUN_PID_FILE"])
    save()
    if not datasets:
        print("no datasets/<scan>/Frames.mp4 found", file=sys.stderr)
        return 4
    if env.get("FAKE_RUN_EXPECT_COLMAP") == "1" and len(colmap) != len(COLMAP_INPUTS):
        print(f"colmap binaries missing: have {sorted(colmap)}", file=sys.stderr)
        return 5
    time.sleep(float(env.get("FAKE_RUN_SLEEP") or 0))
    if env.get("FAKE_RUN_EXIT"):
        for i in range(250):
            print(f"training step {i} diverged", flush=True)
        print("fatal: training failed", file=sys.stderr)
        return int(env["FAKE_RUN_EXIT"])

    out = layout.out
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.job_id)
    n = int(env.get("FAKE_RUN_GAUSSIANS") or 64)
    records = []
    for _ in range(n):  # .splat: 3 f32 position, 3 f32 scale, 4 u8 RGBA, 4 u8 rotation = 32 bytes
        records.append(struct.pack("<6f8B", *(rng.uniform(-1, 1) for _ in range(3)),
                                   *(rng.uniform(0.01, 0.1) for _ in range(3)),
                                   *(rng.randrange(256) for _ in range(4)), 128, 128, 128, 255))
    layout.splat_rot_splat.write_bytes(b"".join(records))
    if env.get("FAKE_RUN_NO_SOG") != "1":
        layout.splat_rot_sog.write_bytes(b"PK\x03\x04 fake sog " + bytes(rng.randrange(256) for _ in range(200)))
    if env.get("FAKE_RUN_NO_PREVIEWS") != "1":
        from PIL import Image
        for artifact, color in ((PREVIEW_TOP, (200, 80, 40)), (PREVIEW_ANGLE, (40, 120, 200))):
            Image.new("RGB", (64, 36), color).save(layout.artifact(artifact), "JPEG", quality=90)
        layout.preview_video.write_bytes(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(64))
    report["outputs"] = {p.name: sha(p) for p in sorted(out.iterdir())}
    save()
    print("fake run.py: done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
