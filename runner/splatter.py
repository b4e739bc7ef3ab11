"""The ``/splatter/colmap/v1`` runner: inputs from the domain → ``run.py`` → SOG, splat and previews to the domain.

Follows the splatter-server runner (lib.rs, its preview and SOG versions): the manifest CID lists ``dataIDs``;
recordings land in ``datasets/<scan>/Frames.mp4`` and the refined COLMAP model in
``refined/global/refined_sfm_combined`` (the job layout is ``pipeline.layout``); of the artifacts
(``pipeline.layout.ARTIFACTS``) the splat is required, the SOG, the previews and the video are best effort.
"""
from __future__ import annotations

import json
import logging
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import one_line
from pipeline.layout import ARTIFACTS, COLMAP_INPUTS, PREVIEW_IMAGES, PREVIEW_VIDEO, SOG, SPLAT, Artifact, JobLayout

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
RECORDING_DATA_TYPE = "dmt_recording_mp4"
MANIFEST_PREFIX = "refined_manifest"
MAX_MANIFEST_BYTES = 64 << 20
TASK_MARKER = ".splatter-task"
NO_DATASETS = "no datasets downloaded; expected at least one dmt_recording_* input"


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


def planned_artifacts(job_root: Path) -> list[tuple[Artifact, Path]]:
    """The artifacts the runner would upload from ``job_root`` and their files, in upload order (existing only)."""
    layout = JobLayout(job_root)
    return [(a, layout.artifact(a)) for a in ARTIFACTS if layout.artifact(a).is_file()]


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

    layout = JobLayout(job_root)
    suffix, data_ids = _read_manifest(ctx, job_root)
    summary = _download_inputs(ctx, layout, suffix, data_ids)
    s.progress({"pct": 20, "stage": "inputs", "status": "materialized", **summary})
    s.log_event({"level": "info", "stage": "inputs", "message": "inputs materialized", **summary})

    _run_pipeline(ctx, job_root)
    _upload_outputs(ctx, layout, suffix)


def _read_manifest(ctx: TaskContext, job_root: Path) -> tuple[str | None, list[str]]:
    cids = ctx.task.get("inputs_cids") or []
    if not cids or not isinstance(cids[0], str) or not cids[0].strip():
        raise ValueError("no input cid provided; cannot run splatter job")
    cid = cids[0]
    ctx.session.checkpoint("before input materialization")
    mat = materialize_cid(ctx.domain, cid, ctx.domain_server_url, ctx.domain_id, job_root)
    log.info("input cid %r: %r (%r, id %r)", cid, mat.name, mat.data_type, mat.data_id)
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


def _download_inputs(ctx: TaskContext, layout: JobLayout, suffix: str | None, data_ids: list[str]) -> dict:
    """The manifest's recordings into ``datasets/<scan>/Frames.mp4`` and, with a suffix, the five COLMAP
    binaries; a recording that fails is skipped (and leaves no folder), a COLMAP model arrives whole or not at
    all. Raises when not one recording arrived."""
    s, dom, domain_id = ctx.session, ctx.domain, ctx.domain_id
    layout.datasets.mkdir(parents=True, exist_ok=True)
    chunks = items = downloaded = failures = colmap_ok = colmap_failed = 0
    seen: set[str] = set()

    def fetch_recording(data_id: str, folder: str, name: str) -> bool:
        nonlocal downloaded, failures
        s.checkpoint("downloading input recording")
        dest = layout.recording(contained(layout.datasets, folder).name)
        try:
            n = dom.download_by_id(domain_id, data_id, dest)
        except Exception as exc:  # noqa: BLE001 - one bad recording does not sink the task
            s.checkpoint("downloading input recording")
            failures += 1
            log.warning("failed to download recording %r (%r): %s", name, data_id, one_line(exc))
            return False
        downloaded += 1
        seen.add(name)
        log.info("downloaded recording %r (%d bytes) to %s", name, n, dest)
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
            log.warning("metadata fetch failed for a chunk of %d ids: %s", len(chunk), one_line(exc))
            continue
        items += len(metas)
        for m in metas:
            log.info("dataID metadata: %r %r %r", m.id, m.name, m.data_type)
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
                found = dom.find(domain_id, candidate, RECORDING_DATA_TYPE)
            except Exception as exc:  # noqa: BLE001
                s.checkpoint("resolving derived recording metadata")
                log.warning("metadata lookup for derived recording %r failed: %s", candidate, one_line(exc))
                continue
            if found is not None and fetch_recording(found.id, scan, candidate):
                break

    if suffix:
        colmap_ok, colmap_failed = _download_colmap(ctx, layout, suffix)
    if not layout.recordings():
        raise RuntimeError(NO_DATASETS)
    return {"datasets": downloaded, "metadata_chunks": chunks, "metadata_items": items,
            "recording_failures": failures, "colmap_downloaded": colmap_ok, "colmap_failed": colmap_failed}


def _download_colmap(ctx: TaskContext, layout: JobLayout, suffix: str) -> tuple[int, int]:
    """The five COLMAP binaries named ``<prefix><suffix>``, all or none: a model missing a file is useless, and
    one left half-made would look like an input. Returns (downloaded, failed)."""
    s, dom = ctx.session, ctx.domain
    refs = {}
    for c in COLMAP_INPUTS:
        s.checkpoint("resolving colmap metadata")
        name = c.prefix + suffix
        try:
            metas = dom.list_metadata(ctx.domain_id, name=name)
        except Exception as exc:  # noqa: BLE001
            s.checkpoint("resolving colmap metadata")
            log.warning("colmap metadata fetch for %r failed: %s", name, one_line(exc))
            continue
        match = next((m for m in metas if m.name == name), None)
        if match is None:
            log.warning("colmap binary %r missing", name)
        else:
            refs[c.file] = match
    if len(refs) < len(COLMAP_INPUTS):
        log.warning("missing %d colmap binaries for suffix %r", len(COLMAP_INPUTS) - len(refs), suffix)
        return 0, len(COLMAP_INPUTS) - len(refs)
    for file, meta in refs.items():
        s.checkpoint("downloading colmap binary")
        try:
            dom.download_by_id(ctx.domain_id, meta.id, layout.colmap / file)
        except Exception as exc:  # noqa: BLE001
            s.checkpoint("downloading colmap binary")
            log.warning("failed to download colmap binary %r: %s; the model is incomplete, dropping it", meta.name,
                        one_line(exc))
            shutil.rmtree(layout.colmap, ignore_errors=True)
            return 0, len(COLMAP_INPUTS)
    return len(COLMAP_INPUTS), 0


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value.strip())
        return True
    except ValueError:
        return False


def pipeline_command(python: str, run_py: Path, domain_id: str, job_id: str, job_root: Path,
                     extra: list[str] | None = None) -> list[str]:
    """``python3 run.py --domain_id D --job_id J --job_root_path ROOT --log_level info [extra...]``."""
    return [python, str(run_py), "--domain_id", domain_id, "--job_id", job_id,
            "--job_root_path", str(job_root), "--log_level", "info", *(extra or [])]


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


def _upload_outputs(ctx: TaskContext, layout: JobLayout, suffix: str | None) -> None:
    """SOG (best effort), the splat (required), then the previews and the video (best effort); a cancel is
    honoured before each upload."""
    s, out = ctx.session, ctx.output
    s.checkpoint("before upload")
    splat_path = layout.artifact(SPLAT)
    if not splat_path.is_file():
        raise FileNotFoundError(f"expected output missing: {splat_path}")
    if not suffix:
        log.warning("refined manifest suffix missing; uploading without timestamp")
    s.progress({"pct": 85, "stage": "upload", "status": "starting"})

    def upload(artifact: Artifact) -> str | None:
        path, name = layout.artifact(artifact), artifact.name(suffix)
        s.checkpoint(f"before uploading {name}")
        if artifact.required:
            out.put_domain_artifact(name, name, artifact.data_type, path)
            return name
        if not path.is_file():
            log.warning("%s not produced; skipping %r", artifact.file, name)
            return None
        try:
            out.put_domain_artifact(name, name, artifact.data_type, path)
            return name
        except Exception as exc:  # noqa: BLE001 - best-effort artifacts never fail the task
            s.checkpoint(f"uploading {name}")
            log.warning("upload of %s as %r failed (best effort, the task goes on): %s", artifact.file, name,
                        one_line(exc))
            return None

    uploaded: dict[Artifact, str | None] = dict.fromkeys(ARTIFACTS)
    for artifact in ARTIFACTS:
        uploaded[artifact] = upload(artifact)
        if artifact is SPLAT:
            s.progress({"pct": 92, "stage": "upload", "status": "splat_uploaded", "uploaded": uploaded[SPLAT],
                        "splat_path": str(splat_path)})
    previews = [uploaded[a] for a in PREVIEW_IMAGES if uploaded[a]]
    keys = {"uploaded_sog": uploaded[SOG] is not None, "uploaded_splat": uploaded[SPLAT],
            "uploaded_previews": previews, "uploaded_preview_video": uploaded[PREVIEW_VIDEO]}
    s.progress({"pct": 95, "stage": "upload", "status": "completed", **keys})
    s.log_event({"level": "info", "stage": "upload", "message": "all outputs uploaded", **keys})
    s.progress({"progress": 100, "stage": "complete", "status": "succeeded", **keys})
