"""The ``/splatter/colmap/v1`` runner: inputs from the domain → ``run.py`` → splat and previews to the domain.

Follows the splatter-server runner (lib.rs, preview version): the manifest CID lists ``dataIDs``; recordings
land in ``datasets/<scan>/Frames.mp4`` and the refined COLMAP model in ``refined/global/refined_sfm_combined``;
``refined/splatter/splat_rot.splat`` is the one required output and the previews are best effort.
"""
from __future__ import annotations

import json
import logging
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .domain import DomainClient
from .paths import contained
from .pyproc import ChildCancelled, child_env, run_python
from .session import TaskCancelled, TaskSession
from .storage import ArtifactOutput, materialize_cid

log = logging.getLogger(__name__)

CAPABILITY = "/splatter/colmap/v1"
METADATA_CHUNK = 50
RECORDING_PREFIX = "dmt_recording_"
MANIFEST_PREFIX = "refined_manifest"
MAX_MANIFEST_BYTES = 64 << 20
TASK_MARKER = ".splatter-task"
COLMAP_FILES = (("colmap_frames_bin", "frames.bin"), ("colmap_images_bin", "images.bin"),
                ("colmap_cameras_bin", "cameras.bin"), ("colmap_points3d_bin", "points3D.bin"),
                ("colmap_rigs_bin", "rigs.bin"))
SPLAT = ("splat_rot.splat", "splat_data", "refined_splat")
PREVIEW_IMAGES = (("preview_top.jpg", "splat_preview_top", "refined_splat_preview_top"),
                  ("preview_angle.jpg", "splat_preview_angle", "refined_splat_preview_angle"))
PREVIEW_VIDEO = ("preview.mp4", "splat_preview_video", "refined_splat_preview_video")


@dataclass
class TaskContext:
    cfg: Config
    session: TaskSession
    domain: DomainClient
    output: ArtifactOutput
    domain_id: str
    domain_server_url: str

    @property
    def task(self) -> dict:
        return self.session.task

    @property
    def task_id(self) -> str:
        return self.session.task_id

    @property
    def job_id(self) -> str:
        return str(self.task.get("job_id") or self.task_id)


def suffixed(prefix: str, suffix: str | None) -> str:
    """``prefix + suffix`` with exactly one ``_`` between; the bare prefix without a suffix."""
    if not suffix:
        return prefix
    return prefix + suffix if suffix.startswith("_") else f"{prefix}_{suffix}"


def derived_scan_id(data_id: str) -> str | None:
    """Scan id behind a dataID that is not a data id: ``refined_scan_<scan>``, ``dmt_recording_<scan>[.mp4]``
    or a bare scan id. UUIDs and URLs are data references, not scans."""
    raw = data_id.strip()
    if not raw or raw.startswith(("http://", "https://")):
        return None
    if raw.startswith("refined_scan_"):
        return raw[len("refined_scan_"):] or None
    if raw.startswith(RECORDING_PREFIX):
        return _strip_mp4(raw[len(RECORDING_PREFIX):]) or None
    return None if _is_uuid(raw) else raw


def _strip_mp4(s: str) -> str:
    return s[: -len(".mp4")] if s.endswith(".mp4") else s


def workspace_for(cfg: Config, task_id: str) -> Path:
    """``$TASKS_ROOT/<sanitized task id>``, absolute: run.py runs in another working directory."""
    return contained(cfg.tasks_root.absolute(), task_id)


def planned_artifacts(job_root: Path, suffix: str | None) -> list[tuple[str, str, Path]]:
    """(name, data_type, path) of every output file the runner would upload, in upload order (existing only)."""
    out = job_root / "refined" / "splatter"
    items = [SPLAT, *PREVIEW_IMAGES, PREVIEW_VIDEO]
    return [(suffixed(prefix, suffix), dt, out / fname) for fname, dt, prefix in items if (out / fname).is_file()]


def run(ctx: TaskContext) -> None:
    """Run one task in ``$TASKS_ROOT/<task_id>``; always removes the workspace unless cleanup is disabled."""
    job_root = workspace_for(ctx.cfg, ctx.task_id)
    job_root.mkdir(parents=True, exist_ok=True)
    (job_root / TASK_MARKER).touch()
    s = ctx.session
    try:
        _run(ctx, job_root)
    except Exception as exc:
        if isinstance(exc, (TaskCancelled, ChildCancelled)) or s.is_cancelled():
            err = exc if isinstance(exc, TaskCancelled) else TaskCancelled(f"task cancelled: {exc}")
            if not s.lost:
                try:
                    s.progress({"stage": "cancelled", "status": "cancelled"})
                    s.log_event({"level": "warn", "stage": "cancelled", "message": str(err)})
                except TaskCancelled:
                    pass
            raise err from exc
        s.log_event({"level": "error", "stage": "runner", "message": str(exc)})
        raise
    finally:
        if ctx.cfg.disable_tasks_cleanup:
            log.info("task cleanup disabled; leaving workspace %s on disk", job_root)
        else:
            shutil.rmtree(job_root, ignore_errors=True)


def _run(ctx: TaskContext, job_root: Path) -> None:
    s = ctx.session
    s.progress({"pct": 5, "stage": "workspace", "status": "prepared", "job_root": str(job_root)})
    s.log_event({"level": "info", "stage": "workspace", "message": "workspace prepared",
                 "task_id": ctx.task_id, "job_id": ctx.job_id})

    suffix, data_ids = _read_manifest(ctx, job_root)
    summary = _download_inputs(ctx, job_root, suffix, data_ids)
    s.progress({"pct": 20, "stage": "inputs", "status": "materialized", **summary})
    s.log_event({"level": "info", "stage": "inputs", "message": "inputs materialized", **summary})

    _run_pipeline(ctx, job_root)
    _upload_outputs(ctx, job_root, suffix)


def _read_manifest(ctx: TaskContext, job_root: Path) -> tuple[str | None, list[str]]:
    cids = ctx.task.get("inputs_cids") or []
    if not cids or not isinstance(cids[0], str) or not cids[0].strip():
        raise ValueError("no input cid provided; cannot run splatter job")
    cid = cids[0]
    ctx.session.checkpoint("before input materialization")
    mat = materialize_cid(ctx.domain, cid, ctx.domain_server_url, ctx.domain_id, job_root)
    log.info("input cid %s: %s (%s, id %s)", cid, mat.name, mat.data_type, mat.data_id)
    suffix = mat.name[len(MANIFEST_PREFIX):] if mat.name.startswith(MANIFEST_PREFIX) else None
    if mat.path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ValueError(f"input manifest {mat.name} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        manifest = json.loads(mat.path.read_bytes())
    except ValueError as exc:
        raise ValueError(f"parse input cid {cid} as JSON: {exc}") from None
    raw_ids = manifest.get("dataIDs") if isinstance(manifest, dict) else None
    data_ids = [d for d in raw_ids if isinstance(d, str)] if isinstance(raw_ids, list) else []
    log.info("manifest lists %d dataIDs (suffix %r)", len(data_ids), suffix)
    return suffix or None, data_ids


def _download_inputs(ctx: TaskContext, job_root: Path, suffix: str | None, data_ids: list[str]) -> dict:
    s, dom, domain_id = ctx.session, ctx.domain, ctx.domain_id
    datasets = job_root / "datasets"
    datasets.mkdir(parents=True, exist_ok=True)
    chunks = items = downloaded = failures = colmap_ok = colmap_failed = 0
    seen: set[str] = set()

    def fetch_recording(data_id: str, folder: str, name: str) -> bool:
        nonlocal downloaded, failures
        s.checkpoint("downloading input recording")
        dest = contained(job_root, "datasets", folder) / "Frames.mp4"
        try:
            n = dom.download_by_id(domain_id, data_id, dest)
        except Exception as exc:  # noqa: BLE001 - one bad recording does not sink the task
            s.checkpoint("downloading input recording")
            failures += 1
            log.warning("failed to download recording %s (%s): %s", name, data_id, exc)
            return False
        downloaded += 1
        seen.add(name)
        log.info("downloaded recording %s (%d bytes) to %s", name, n, dest)
        return True

    uuid_like = [d for d in data_ids if _is_uuid(d)]
    for i in range(0, len(uuid_like), METADATA_CHUNK):
        s.checkpoint("resolving dataset metadata")
        chunk = uuid_like[i:i + METADATA_CHUNK]
        chunks += 1
        try:
            metas = dom.list_metadata(domain_id, ids=chunk)
        except Exception as exc:  # noqa: BLE001
            s.checkpoint("resolving dataset metadata")
            log.warning("metadata fetch failed for a chunk of %d ids: %s", len(chunk), exc)
            continue
        items += len(metas)
        for m in metas:
            log.info("dataID metadata: %s %s %s", m.id, m.name, m.data_type)
            if m.name.startswith(RECORDING_PREFIX) and m.name not in seen:
                fetch_recording(m.id, _strip_mp4(m.name[len(RECORDING_PREFIX):]) or m.id, m.name)

    scans: set[str] = set()
    for raw in data_ids:
        scan = derived_scan_id(raw)
        if not scan or scan in scans:
            continue
        scans.add(scan)
        for candidate in (f"{RECORDING_PREFIX}{scan}", f"{RECORDING_PREFIX}{scan}.mp4"):
            if candidate in seen:
                break
            s.checkpoint("resolving derived recording metadata")
            try:
                found = dom.find(domain_id, candidate, "dmt_recording_mp4")
            except Exception as exc:  # noqa: BLE001
                s.checkpoint("resolving derived recording metadata")
                log.warning("metadata lookup for derived recording %s failed: %s", candidate, exc)
                continue
            if found is not None and fetch_recording(found.id, scan, candidate):
                break

    if suffix:
        refs = {}
        for prefix, target in COLMAP_FILES:
            s.checkpoint("resolving colmap metadata")
            name = prefix + suffix
            try:
                metas = dom.list_metadata(domain_id, name=name)
            except Exception as exc:  # noqa: BLE001
                s.checkpoint("resolving colmap metadata")
                log.warning("colmap metadata fetch for %s failed: %s", name, exc)
                continue
            match = next((m for m in metas if m.name == name), None)
            if match is None:
                log.warning("colmap binary %s missing", name)
            else:
                refs[target] = match
        if len(refs) == len(COLMAP_FILES):
            dest_dir = job_root / "refined" / "global" / "refined_sfm_combined"
            for target, meta in refs.items():
                s.checkpoint("downloading colmap binary")
                try:
                    dom.download_by_id(domain_id, meta.id, dest_dir / target)
                    colmap_ok += 1
                except Exception as exc:  # noqa: BLE001
                    s.checkpoint("downloading colmap binary")
                    colmap_failed += 1
                    log.warning("failed to download colmap binary %s: %s", meta.name, exc)
        else:
            colmap_failed += len(COLMAP_FILES) - len(refs)
            log.warning("missing %d colmap binaries for suffix %s", colmap_failed, suffix)

    if downloaded == 0 and not any(datasets.iterdir()):
        raise RuntimeError("no datasets downloaded; expected at least one dmt_recording_* input")
    return {"datasets": downloaded, "metadata_chunks": chunks, "metadata_items": items,
            "recording_failures": failures, "colmap_downloaded": colmap_ok, "colmap_failed": colmap_failed}


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value.strip())
        return True
    except ValueError:
        return False


def pipeline_command(python: str, run_py: Path, domain_id: str, job_id: str, job_root: Path) -> list[str]:
    """``python3 run.py --domain_id D --job_id J --job_root_path ROOT --log_level info``."""
    return [python, str(run_py), "--domain_id", domain_id, "--job_id", job_id,
            "--job_root_path", str(job_root), "--log_level", "info"]


def _run_pipeline(ctx: TaskContext, job_root: Path) -> None:
    s = ctx.session
    run_py = ctx.cfg.run_py.resolve()
    s.checkpoint("before python start")
    s.progress({"pct": 35, "stage": "python", "status": "starting", "job_root_path": str(job_root.resolve()),
                "script": str(run_py)})
    s.log_event({"level": "info", "stage": "python", "message": "python pipeline starting", "script": str(run_py)})
    cmd = pipeline_command(ctx.cfg.python, run_py, ctx.domain_id, ctx.job_id, job_root.resolve())
    try:
        result = run_python(cmd, run_py.parent, child_env(), s.is_cancelled)
    except ChildCancelled as exc:
        raise TaskCancelled(f"task cancelled: {exc}") from None
    if result.returncode != 0:
        s.progress({"pct": 35, "stage": "python", "status": "failed"})
        s.log_event({"level": "error", "stage": "python", "message": "python job failed",
                     "status": result.returncode, "duration_ms": result.duration_ms,
                     "stdout_lines": result.stdout_lines, "stderr_lines": result.stderr_lines, "tail": result.tail})
        status = "None" if result.returncode is None else f"Some({result.returncode})"
        raise RuntimeError(f"python job failed: status={status}")
    s.progress({"pct": 80, "stage": "python", "status": "completed", "duration_ms": result.duration_ms})
    s.log_event({"level": "info", "stage": "python", "message": "python pipeline completed",
                 "status": result.returncode, "duration_ms": result.duration_ms,
                 "stdout_lines": result.stdout_lines, "stderr_lines": result.stderr_lines})


def _upload_outputs(ctx: TaskContext, job_root: Path, suffix: str | None) -> None:
    s, out = ctx.session, ctx.output
    s.checkpoint("before upload")
    out_dir = job_root / "refined" / "splatter"
    splat_path = out_dir / SPLAT[0]
    if not splat_path.is_file():
        raise FileNotFoundError(f"expected output missing: {splat_path}")
    if not suffix:
        log.warning("refined manifest suffix missing; uploading without timestamp")
    splat_name = suffixed(SPLAT[2], suffix)
    s.progress({"pct": 85, "stage": "upload", "status": "starting"})
    out.put_domain_artifact(splat_name, splat_name, SPLAT[1], splat_path)
    s.progress({"pct": 92, "stage": "upload", "status": "splat_uploaded", "uploaded": splat_name,
                "splat_path": str(splat_path)})

    def best_effort(fname: str, data_type: str, prefix: str) -> str | None:
        s.checkpoint("uploading previews")
        path, name = out_dir / fname, suffixed(prefix, suffix)
        if not path.is_file():
            log.warning("preview %s not produced; skipping %s", fname, name)
            return None
        try:
            out.put_domain_artifact(name, name, data_type, path)
            return name
        except Exception as exc:  # noqa: BLE001 - previews never fail the task
            s.checkpoint("uploading previews")
            log.warning("preview upload of %s as %s failed: %s", fname, name, exc)
            return None

    previews = [n for n in (best_effort(*p) for p in PREVIEW_IMAGES) if n]
    video = best_effort(*PREVIEW_VIDEO)
    keys = {"uploaded_splat": splat_name, "uploaded_previews": previews, "uploaded_preview_video": video}
    s.progress({"pct": 95, "stage": "upload", "status": "completed", **keys})
    s.log_event({"level": "info", "stage": "upload", "message": "all outputs uploaded", **keys})
    s.progress({"progress": 100, "stage": "complete", "status": "succeeded", **keys})
