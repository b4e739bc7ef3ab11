"""run.py end to end, as real processes: stand-in nerfstudio commands on PATH, real MP4s and COLMAP models."""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import scene_path
from pipeline_support.jobs import IDS, SMALL, job_env, make_capture, run_job
from pipeline_support.media import grey_level, mean_grey, probe_video

import run
from pipeline.colmap import match_frames, read_image_names

OUTPUTS = ("splat.ply", "splat_rot.ply", "splat_rot.splat", "splat_rot.sog", "preview_top.jpg", "preview_angle.jpg",
           "preview.mp4")
STEP_NAMES = ["extract", "process", "train", "export", "rotate", "convert", "sog", "previews", "video"]


@pytest.fixture(scope="module")
def demo_ply(tmp_path_factory) -> Path:
    """The demo room as a domain-frame PLY: what the ns-export stand-in "trains"."""
    from rasterizer.demo import demo_scene
    from rasterizer.scene import save_ply
    return save_ply(demo_scene(), tmp_path_factory.mktemp("scene") / "demo.ply")


def log_of(proc) -> str:
    return proc.stdout + proc.stderr


def assert_no_temp_files(folder: Path):
    leftovers = [p.name for p in folder.rglob(".*") if p.is_file()]
    assert not leftovers, f"temporary files left behind: {leftovers}"


def assert_same_scene(a, b, atol=2e-5):
    assert len(a) == len(b) and a.sh_degree == b.sh_degree
    np.testing.assert_allclose(a.means, b.means, atol=atol * max(1.0, float(np.abs(b.means).max())))
    np.testing.assert_allclose(a.scales, b.scales, atol=atol)
    np.testing.assert_allclose(a.opacities, b.opacities, atol=0)
    np.testing.assert_allclose(a.sh, b.sh, atol=atol)
    # same rotation: q and -q are one rotation; the pipeline keeps the raw length
    qa, qb = a.quats.astype(np.float64), b.quats.astype(np.float64)
    sign = np.sign(np.einsum("ij,ij->i", qa, qb))[:, None]
    np.testing.assert_allclose(qa * sign, qb, atol=atol * 10)


def build_demo_job(tmp_path: Path) -> Path:
    """A demo job up to the convert step (previews and video not rendered yet)."""
    root = tmp_path / "job"
    p = run_job(root, "--demo", "--to-step", "convert", env=job_env(tmp_path, standins=False))
    assert p.returncode == 0, log_of(p)
    return root


# --------------------------------------------------------------------------- the steps and the CLI

def test_steps_lists_the_nine_steps_in_order(tmp_path):
    p = run_job(None, "--steps", env=job_env(tmp_path), cwd=tmp_path)
    assert p.returncode == 0, log_of(p)
    names = [line.split()[1] for line in p.stdout.splitlines()]
    assert names == STEP_NAMES


@pytest.mark.parametrize("args, needle", [
    (["--from-step", "bogus"], "invalid choice: 'bogus'"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--video-frames", "many"], "expected an integer in 1..100000, got 'many'"),
    (["--video-frames", "0"], "expected an integer in 1..100000"),
    (["--preview-size", "0x10"], "--preview-size"),
    (["--from-step", "video", "--to-step", "rotate"], "--from-step video comes after --to-step rotate"),
    (["--job_id", "j"], "required: --domain_id"),
    (["--video-size", "97x54"], "even width and height"),
])
def test_bad_command_lines_exit_2_with_one_line(tmp_path, args, needle):
    root = tmp_path / "job"
    root.mkdir()
    full = args if "--job_id" in args else [*IDS, *args]
    p = run_job(root, *full, env=job_env(tmp_path))
    assert p.returncode == 2
    assert p.stderr.startswith("error: ") and p.stderr.count("\n") == 1, p.stderr  # one line, no usage block
    assert needle in p.stderr
    assert "Traceback" not in log_of(p)


def test_help_still_prints_the_usage(tmp_path):
    p = run_job(None, "--help", env=job_env(tmp_path), cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.startswith("usage: run.py") and "--from-step" in p.stdout


def test_missing_job_root_is_bad_input(tmp_path):
    p = run_job(tmp_path / "nope", *IDS, env=job_env(tmp_path))
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "is not a folder" in p.stderr


@pytest.mark.parametrize("from_step, missing, producer", [
    ("extract", "datasets", "an input of the job"),
    ("process", "Frames", "extract"),
    ("rotate", "refined/splatter/splat.ply", "export"),
    ("convert", "refined/splatter/splat_rot.ply", "rotate"),
])
def test_a_missing_input_of_the_first_step_is_bad_input(tmp_path, from_step, missing, producer):
    """Resuming a job whose earlier outputs are absent: one line naming the file and the step that makes it,
    exit 2, before anything is written."""
    root = tmp_path / "job"
    root.mkdir()
    p = run_job(root, *IDS, "--from-step", from_step, env=job_env(tmp_path))
    assert p.returncode == 2, log_of(p)
    err = p.stderr.strip()
    assert err.count("\n") == 0 and f"step {from_step} failed" in err and f"{root / missing} not found" in err
    if producer != "an input of the job":
        assert f"(run the {producer} step first)" in err
    assert sorted(p.name for p in root.iterdir()) == []


# --------------------------------------------------------------------------- the whole job

def test_full_job_with_standins(tmp_path, demo_ply):
    """Every step runs: frames extracted under the images.bin names, the three nerfstudio
    commands get their exact arguments, and every output lands under its final name."""
    root = tmp_path / "job"
    names = ["scan_a/scan_a_000001.jpg", "scan_a/scan_a_000007.jpg", "scan_b/scan_b_000000.jpg",
             "scan_b/scan_b_000009.jpg"]
    make_capture(root, {"scan_a": 12, "scan_b": 10}, names)
    p = run_job(root, *IDS, "--log_level", "info", *SMALL, env=job_env(tmp_path, STANDIN_SCENE=demo_ply))
    log = log_of(p)
    assert p.returncode == 0, log

    # 1. extract: exactly the named frames, mirrored, each the right frame of its video
    frames = sorted(f.relative_to(root / "Frames").as_posix() for f in (root / "Frames").rglob("*.jpg"))
    assert frames == sorted(names)
    for name in names:
        index = int(name[-10:-4])
        assert abs(mean_grey(root / "Frames" / name) - grey_level(index)) < 8, name
    # 2-4. the stand-ins ran in order (they check their own arguments and fail otherwise)
    calls = [json.loads(line) for line in (tmp_path / "standin-calls.jsonl").read_text().splitlines()]
    assert [c["tool"] for c in calls] == ["ns-process-data", "ns-train", "ns-export"]
    # ... in this test's own environment (a virtualenv's, when the suite runs in one)
    assert {c["prefix"] for c in calls} == {sys.prefix}
    assert (root / "refined/nerfstudio-data/transforms.json").is_file()
    assert (root / "refined/splatter/splatfacto/config.yml").is_file()
    out = root / "refined" / "splatter"
    for name in OUTPUTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert_no_temp_files(out)

    # 5. the rotated splat is the domain-frame scene we "trained"
    from rasterizer.scene import load_scene
    assert_same_scene(load_scene(out / "splat_rot.ply"), load_scene(demo_ply))
    # 6. ply2splat's bytes
    ply2splat = pytest.importorskip("ply2splat")
    ref, _n = ply2splat.load_and_convert(str(out / "splat_rot.ply"))
    assert (out / "splat_rot.splat").read_bytes() == bytes(ref)
    # 7. the SOG bundle holds the rotated scene, within its quantisation
    sog = load_scene(out / "splat_rot.sog")
    rot = load_scene(out / "splat_rot.ply")
    assert len(sog) == len(rot) and sog.sh_degree == rot.sh_degree
    assert np.allclose(np.sort(sog.means, 0), np.sort(rot.means, 0), atol=1e-3 * float(np.ptp(rot.means)))
    # 8. the video
    assert probe_video(out / "preview.mp4") == {"codec": "h264", "pix_fmt": "yuv420p", "width": 96, "height": 54,
                                                "fps": 30.0, "frames": 6, "faststart": True}

    # the log: one line per event, each step's start, command and duration, tool output streamed
    lines = log.splitlines()
    for i, step in enumerate(STEP_NAMES, 1):
        assert any(f"step {i}/9 {step}: start" in line for line in lines), step
        assert any(f"step {step}: done in" in line for line in lines), step
    # the video's progress: frames done, rate, time left
    assert any("video: frame 3/6 (50%)" in line and "frames/s, about" in line for line in lines)
    assert any("train: command: ns-train splatfacto --vis tensorboard" in line for line in lines)
    assert any("ns-train | Step 1000" in line for line in lines)  # \r-separated progress → lines
    assert any("extract: scan_a: wrote 2 frame(s)" in line for line in lines)
    assert any("<recording>/<frame>" in line for line in lines)


def test_extract_reconstruction_server_names_in_one_folder(tmp_path):
    """Flat ``<scan>_<index:06d>.jpg`` names (the reconstruction server's own) stay flat; only the
    extract step runs, so no nerfstudio is needed."""
    root = tmp_path / "job"
    names = ["dmt_scan_2024-06-26_10-18-51_000002.jpg", "dmt_scan_2024-06-26_10-18-51_000005.jpg"]
    make_capture(root, {"dmt_scan_2024-06-26_10-18-51": 8}, names)
    p = run_job(root, *IDS, "--to-step", "extract", env=job_env(tmp_path, standins=False))
    assert p.returncode == 0, log_of(p)
    got = sorted(f.name for f in (root / "Frames").iterdir())
    assert got == names
    assert abs(mean_grey(root / "Frames" / names[1]) - grey_level(5)) < 8
    assert "layout flat" in p.stdout


@pytest.mark.parametrize("recordings, names, needle", [
    ({"scan_a": 6}, ["scan_a/scan_a_000050.jpg"], "has 6 frames but images.bin names frame index 50"),
    ({"scan_a": 6, "scan_b": 6}, ["elsewhere_000001.jpg"], "match no frame of the recordings"),
    ({"scan_a": 6}, ["../escape_000001.jpg"], "not a path inside Frames/"),
])
def test_extract_errors_name_the_step_and_the_problem(tmp_path, recordings, names, needle):
    root = tmp_path / "job"
    make_capture(root, recordings, names)
    p = run_job(root, *IDS, env=job_env(tmp_path))
    assert p.returncode == 2
    err = p.stderr.strip()
    assert err.count("\n") == 0 and "step extract failed" in err and needle in err, err
    assert "Traceback" not in log_of(p)
    assert not (root / "refined" / "splatter").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")
def test_a_recording_that_is_a_named_pipe_is_refused_not_waited_on(tmp_path):
    """The decoder's open blocks for ever on a FIFO (nothing ever writes to it)."""
    root = tmp_path / "job"
    (root / "datasets" / "s1").mkdir(parents=True)
    os.mkfifo(root / "datasets" / "s1" / "Frames.mp4")
    p = run_job(root, *IDS, "--to-step", "extract", env=job_env(tmp_path), timeout=60)
    assert p.returncode == 2, log_of(p)
    assert "step extract failed" in p.stderr and "Frames.mp4: not a file" in p.stderr


def test_a_recording_with_a_non_utf8_tag_still_decodes(tmp_path):
    """A damaged metadata tag (the stream's handler name with a byte that is not UTF-8) stopped the
    extract with an internal error; nothing we read is in the tags, so the frames come out."""
    root = tmp_path / "job"
    names = ["scan_a_000001.jpg", "scan_a_000003.jpg"]
    make_capture(root, {"scan_a": 5}, names)
    mp4 = root / "datasets/scan_a/Frames.mp4"
    data = mp4.read_bytes()
    assert b"VideoHandler" in data
    mp4.write_bytes(data.replace(b"VideoHandler", b"Video\x9eandler", 1))
    p = run_job(root, *IDS, "--to-step", "extract", env=job_env(tmp_path, standins=False))
    assert p.returncode == 0, log_of(p)
    assert sorted(f.name for f in (root / "Frames").iterdir()) == names
    assert abs(mean_grey(root / "Frames" / names[1]) - grey_level(3)) < 8


def test_damaged_recordings_decode_or_fail_cleanly(tmp_path):
    """Bytes of a recording flipped (seeded): extract either writes the frames or raises BadInput
    naming the file, never anything else."""
    from pipeline import frames
    from pipeline.errors import BadInput
    root = tmp_path / "job"
    make_capture(root, {"scan_a": 5}, ["scan_a_000001.jpg"])
    good = (root / "datasets/scan_a/Frames.mp4").read_bytes()
    outcomes = []
    for seed in range(24):
        rng = np.random.default_rng(seed)
        data = bytearray(good)
        for i in rng.integers(0, len(data), 1 + seed * 4):
            data[i] ^= int(rng.integers(1, 256))
        mp4 = tmp_path / f"damaged{seed}.mp4"
        mp4.write_bytes(bytes(data))
        try:
            frames.extract(mp4, tmp_path / f"frames{seed}", None, "scan_a")
            outcomes.append("ok")
        except BadInput as e:
            assert str(mp4) in str(e) and "\n" not in str(e)
            outcomes.append("error")
    assert "error" in outcomes, outcomes


def test_corrupt_images_bin_is_a_clear_error(tmp_path):
    root = tmp_path / "job"
    make_capture(root, {"scan_a": 4}, ["scan_a/scan_a_000001.jpg"])
    bin_ = root / "refined/global/refined_sfm_combined/images.bin"
    bin_.write_bytes(bin_.read_bytes()[:-10])
    p = run_job(root, *IDS, "--to-step", "extract", env=job_env(tmp_path))
    assert p.returncode == 2 and "not a readable COLMAP images.bin" in p.stderr


@pytest.mark.parametrize("from_step, tool", [(None, "ns-process-data"), ("train", "ns-train"), ("export", "ns-export")])
def test_missing_nerfstudio_is_one_line_before_any_work(tmp_path, from_step, tool):
    root = tmp_path / "job"
    make_capture(root, {"scan_a": 4}, ["scan_a/scan_a_000001.jpg"])
    args = [*IDS] + (["--from-step", from_step] if from_step else [])
    p = run_job(root, *args, env=job_env(tmp_path, standins=False))
    assert p.returncode == 1
    assert p.stderr.strip().count("\n") == 0
    assert f"{tool} not found on PATH (install nerfstudio" in p.stderr
    assert "Traceback" not in log_of(p)
    assert not (root / "Frames").exists()  # checked up front, not after extracting


def test_failing_tool_stops_the_job(tmp_path, demo_ply):
    root = tmp_path / "job"
    make_capture(root, {"scan_a": 4}, ["scan_a/scan_a_000001.jpg"])
    p = run_job(root, *IDS, env=job_env(tmp_path, STANDIN_SCENE=demo_ply, STANDIN_FAIL="ns-train"))
    assert p.returncode == 1
    assert "step train failed" in p.stderr and "ns-train exited with status 3" in p.stderr
    assert "ns-train | RuntimeError: CUDA out of memory" in p.stdout  # the tool's stderr, streamed
    assert not (root / "refined/splatter/splat.ply").exists()


# --------------------------------------------------------------------------- resuming and rotating

def test_resume_from_rotate_with_a_scaled_applied_transform(tmp_path):
    """``--from-step rotate`` on an existing splat.ply (no nerfstudio needed): the real SH-3
    scene comes back from a similarity applied_transform (rotation, scale 2.5, translation)."""
    from rasterizer.scene import load_scene, save_ply
    from rasterizer.transform import from_matrix, transform_scene
    original = load_scene(scene_path("loadersgl-train-1000.ply"))
    root = tmp_path / "job"
    c, s = np.cos(0.7), np.sin(0.7)
    applied = (2.5 * np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])).tolist()
    applied = [row + [t] for row, t in zip(applied, (0.5, -1.0, 3.0))]
    (root / "refined/nerfstudio-data").mkdir(parents=True)
    (root / "refined/nerfstudio-data/transforms.json").write_text(json.dumps({"applied_transform": applied}))
    save_ply(transform_scene(original, from_matrix(applied)), root / "refined/splatter/splat.ply")
    p = run_job(root, *IDS, "--from-step", "rotate", "--to-step", "convert", env=job_env(tmp_path, standins=False))
    assert p.returncode == 0, log_of(p)
    out = root / "refined/splatter"
    assert_same_scene(load_scene(out / "splat_rot.ply"), original, atol=5e-5)
    assert (out / "splat_rot.splat").is_file()
    assert not (out / "preview_top.jpg").exists()  # --to-step convert


def test_rotate_without_applied_transform_uses_nerfstudios_axis_swap(tmp_path, demo_ply):
    from rasterizer.scene import load_scene, save_ply
    from rasterizer.transform import COLMAP_TO_NERFSTUDIO, from_matrix, transform_scene
    root = tmp_path / "job"
    save_ply(transform_scene(load_scene(demo_ply), from_matrix(COLMAP_TO_NERFSTUDIO)),
             root / "refined/splatter/splat.ply")
    p = run_job(root, *IDS, "--from-step", "rotate", "--to-step", "rotate", env=job_env(tmp_path))
    assert p.returncode == 0, log_of(p)
    assert "does not exist; using nerfstudio's fixed COLMAP→nerfstudio axis swap" in p.stdout
    assert_same_scene(load_scene(root / "refined/splatter/splat_rot.ply"), load_scene(demo_ply))


def test_rotate_rejects_a_reflection(tmp_path, demo_ply):
    root = tmp_path / "job"
    (root / "refined/nerfstudio-data").mkdir(parents=True)
    (root / "refined/nerfstudio-data/transforms.json").write_text(
        json.dumps({"applied_transform": [[-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]}))
    (root / "refined/splatter").mkdir(parents=True)
    (root / "refined/splatter/splat.ply").write_bytes(demo_ply.read_bytes())
    p = run_job(root, *IDS, "--from-step", "rotate", env=job_env(tmp_path))
    assert p.returncode == 2
    assert "step rotate failed" in p.stderr and "reflection" in p.stderr
    assert not (root / "refined/splatter/splat_rot.ply").exists()


@pytest.mark.parametrize("text, needle", [
    ("[" * 100_000, "not readable JSON"),            # nested past Python's recursion limit
    ("[1, 2]", "a JSON object was expected, got list"),
    ("{\"applied_transform\": [[1, 0, 0, 0], [0, 1, 0, 0", "not readable JSON"),
])
def test_rotate_refuses_an_unusable_transforms_json(tmp_path, demo_ply, text, needle):
    root = tmp_path / "job"
    (root / "refined/nerfstudio-data").mkdir(parents=True)
    (root / "refined/nerfstudio-data/transforms.json").write_text(text)
    (root / "refined/splatter").mkdir(parents=True)
    (root / "refined/splatter/splat.ply").write_bytes(demo_ply.read_bytes())
    p = run_job(root, *IDS, "--from-step", "rotate", env=job_env(tmp_path))
    assert p.returncode == 2, log_of(p)
    assert "step rotate failed" in p.stderr and f"transforms.json: {needle}" in p.stderr
    assert "Traceback" not in log_of(p)


@pytest.mark.parametrize("first", ["sog", "previews", "video"])
def test_a_best_effort_first_step_without_its_input_is_bad_input(tmp_path, first):
    """pipeline.md: a missing input of the first step is exit 2, also for the best-effort steps (which
    only warn when an earlier step of the same run left them nothing)."""
    root = tmp_path / "job"
    root.mkdir()
    p = run_job(root, *IDS, "--from-step", first, env=job_env(tmp_path))
    assert p.returncode == 2, log_of(p)
    assert f"step {first} failed" in p.stderr and "splat_rot.ply not found (run the rotate step first)" in p.stderr


def test_rotate_rejects_a_transform_beyond_float32(tmp_path, demo_ply):
    """A finite applied_transform whose translation no float32 can hold: no splat_rot.ply of infinities
    (and no .splat made of it), exit 2 naming transforms.json."""
    root = tmp_path / "job"
    (root / "refined/nerfstudio-data").mkdir(parents=True)
    (root / "refined/nerfstudio-data/transforms.json").write_text(
        json.dumps({"applied_transform": [[1, 0, 0, 1e300], [0, 1, 0, 0], [0, 0, 1, 0]]}))
    (root / "refined/splatter").mkdir(parents=True)
    (root / "refined/splatter/splat.ply").write_bytes(demo_ply.read_bytes())
    p = run_job(root, *IDS, "--from-step", "rotate", env=job_env(tmp_path))
    assert p.returncode == 2, log_of(p)
    assert "step rotate failed" in p.stderr and "transforms.json: the transform moves" in p.stderr
    assert "RuntimeWarning" not in log_of(p) and "Traceback" not in log_of(p)
    assert not (root / "refined/splatter/splat_rot.ply").exists()
    assert not (root / "refined/splatter/splat_rot.splat").exists()


def test_unreadable_splat_ply_fails_rotate_with_one_line(tmp_path):
    root = tmp_path / "job"
    (root / "refined/splatter").mkdir(parents=True)
    (root / "refined/splatter/splat.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\ngarbage")
    p = run_job(root, *IDS, "--from-step", "rotate", env=job_env(tmp_path))
    assert p.returncode == 2 and "step rotate failed" in p.stderr and "splat.ply" in p.stderr
    assert "Traceback" not in log_of(p)


# --------------------------------------------------------------------------- the demo (README main job)

def test_demo_job_at_the_default_sizes(tmp_path):
    """The README's main-job command, at the default sizes: every output, previews and video 1280x720 at
    30 fps. Only the orbit is shortened (12 frames instead of 150: the frame count changes nothing else, and
    the full orbit alone took 35 s of CPU); test_defaults_are_the_contract pins the 150."""
    from rasterizer.demo import demo_scene
    from rasterizer.scene import load_scene
    p = run_job(tmp_path / "demo-job", "--demo", "--job_root_path", "demo-job", "--video-frames", "12",
                env=job_env(tmp_path, standins=False), cwd=tmp_path)
    assert p.returncode == 0, log_of(p)
    out = tmp_path / "demo-job/refined/splatter"
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    assert_no_temp_files(out)
    assert_same_scene(load_scene(out / "splat_rot.ply"), demo_scene())
    from PIL import Image
    assert Image.open(out / "preview_top.jpg").size == (1280, 720)
    assert Image.open(out / "preview_angle.jpg").size == (1280, 720)
    assert probe_video(out / "preview.mp4") == {"codec": "h264", "pix_fmt": "yuv420p", "width": 1280,
                                                "height": 720, "fps": 30.0, "frames": 12, "faststart": True}


def test_defaults_are_the_contract():
    """What the node's command line gets when it passes no option: previews 1280x720, a 150-frame orbit of
    1280x720 at 30 fps (5 s), a 300 s CPU budget for it, the renderer chosen automatically."""
    args = run.build_parser().parse_args([*IDS, "--job_root_path", "j"])
    assert (args.preview_size, args.video_size, args.video_frames, args.video_fps, args.video_cpu_budget,
            args.backend, args.log_level) == ((1280, 720), (1280, 720), 150, 30, 300.0, "auto", "INFO")


def test_video_skipped_when_over_the_cpu_budget(tmp_path):
    root = build_demo_job(tmp_path)
    p = run_job(root, *IDS, "--from-step", "video", "--backend", "cpu", "--video-cpu-budget", "0",
                *SMALL, env=job_env(tmp_path))
    assert p.returncode == 0, log_of(p)
    assert "video: skipped: rendering 6 frames on the CPU would take about" in p.stdout
    assert not (root / "refined/splatter/preview.mp4").exists()
    assert_no_temp_files(root / "refined/splatter")


# --------------------------------------------------------------------------- best effort: failure injection

def stale_previews(out: Path):
    for name in ("preview_top.jpg", "preview_angle.jpg", "preview.mp4"):
        (out / name).write_bytes(b"from an earlier attempt")
    (out / ".preview.mp4.abc123.tmp").write_bytes(b"left by a killed attempt")


def test_unreadable_rotated_ply_skips_previews_and_the_job_succeeds(tmp_path):
    root = build_demo_job(tmp_path)
    out = root / "refined/splatter"
    splat = (out / "splat_rot.splat").read_bytes()
    (out / "splat_rot.ply").write_bytes(b"ply\nthis is not a header\n")
    stale_previews(out)
    p = run_job(root, *IDS, "--from-step", "previews", *SMALL, env=job_env(tmp_path))
    assert p.returncode == 0, log_of(p)
    assert "previews: skipped:" in p.stdout and "video: skipped:" in p.stdout
    for name in ("preview_top.jpg", "preview_angle.jpg", "preview.mp4"):
        assert not (out / name).exists(), f"stale {name} was not removed"
    assert_no_temp_files(out)
    assert (out / "splat_rot.splat").read_bytes() == splat


def test_unframeable_rotated_ply_skips_previews_with_the_reason(tmp_path):
    """A readable scene no camera can frame (finite positions spread over +-3e38): the previews and
    video are skipped with the same one-line reason ``python -m rasterizer preview`` gives, the job
    succeeds."""
    from rasterizer.scene import Scene, save_ply
    root = build_demo_job(tmp_path)
    out = root / "refined/splatter"
    n = 2000
    means = (np.random.default_rng(5).uniform(-1, 1, (n, 3)) * 3e38).astype(np.float32)
    save_ply(Scene(means, np.full((n, 3), -3.0, np.float32), np.tile(np.float32([1, 0, 0, 0]), (n, 1)),
                   np.full(n, 3.0, np.float32), np.zeros((n, 1, 3), np.float32)), out / "splat_rot.ply")
    p = run_job(root, *IDS, "--from-step", "previews", *SMALL, env=job_env(tmp_path))
    assert p.returncode == 0, log_of(p)
    assert re.search(r"previews: skipped: \S*splat_rot.ply: cannot frame a view of this scene: it spans "
                     r"[0-9.e+]+ units", p.stdout), log_of(p)
    assert "video: skipped:" in p.stdout and "Traceback" not in p.stdout + p.stderr
    for name in ("preview_top.jpg", "preview_angle.jpg", "preview.mp4"):
        assert not (out / name).exists(), name


@pytest.mark.parametrize("fault, missing", [("top", "preview_top.jpg"), ("angle", "preview_angle.jpg"),
                                            ("video", "preview.mp4"), ("video@3", "preview.mp4")])
def test_renderer_raising_costs_only_its_own_output(tmp_path, fault, missing):
    """The renderer raises (in a real run, through the test hook) for one output: the job exits 0,
    that output is absent (its stale copy removed, no partial file), the others are there."""
    root = build_demo_job(tmp_path)
    out = root / "refined/splatter"
    stale_previews(out)
    p = run_job(root, *IDS, "--from-step", "previews", *SMALL,
                env=job_env(tmp_path, SPLATTER_INJECT_RENDER_FAULT=fault))
    assert p.returncode == 0, log_of(p)
    assert f"{missing} not written" in p.stdout and "injected render fault" in p.stdout
    assert not (out / missing).exists()
    for name in {"preview_top.jpg", "preview_angle.jpg", "preview.mp4"} - {missing}:
        assert (out / name).stat().st_size > 100, name
    if missing != "preview.mp4":
        assert probe_video(out / "preview.mp4")["frames"] == 6
    assert_no_temp_files(out)


def _limit_file_size():
    import resource
    resource.setrlimit(resource.RLIMIT_FSIZE, (300, 300))  # any write past 300 bytes: EFBIG ("disk full")


def test_disk_full_while_writing_previews(tmp_path):
    """Writes fail mid-file (RLIMIT_FSIZE, which binds root too): exit 0, no partial files."""
    root = build_demo_job(tmp_path)
    out = root / "refined/splatter"
    p = run_job(root, *IDS, "--from-step", "previews", *SMALL, env=job_env(tmp_path), preexec_fn=_limit_file_size)
    assert p.returncode == 0, log_of(p)
    assert "File too large" in p.stdout
    for name in ("preview_top.jpg", "preview_angle.jpg", "preview.mp4"):
        assert not (out / name).exists(), name
    assert_no_temp_files(out)
    assert (out / "splat_rot.splat").is_file()


def test_read_only_output_folder(tmp_path):
    import os
    if os.geteuid() == 0:
        pytest.skip("running as root: a read-only folder does not stop root's writes "
                    "(test_disk_full_while_writing_previews covers failing writes)")
    root = build_demo_job(tmp_path)
    out = root / "refined/splatter"
    out.chmod(0o555)
    try:
        p = run_job(root, *IDS, "--from-step", "previews", *SMALL, env=job_env(tmp_path))
    finally:
        out.chmod(0o755)
    assert p.returncode == 0, log_of(p)
    for name in ("preview_top.jpg", "preview_angle.jpg", "preview.mp4"):
        assert not (out / name).exists(), name
    assert_no_temp_files(out)


# --------------------------------------------------------------------------- pure helpers

def test_match_frames_layouts():
    plan = match_frames(["a/x_000003.jpg", "a_000004.jpg", "b/sub/frame12.png"], ["a", "b"])
    assert plan == {"a": {3: ["a/x_000003.jpg"], 4: ["a_000004.jpg"]}, "b": {12: ["b/sub/frame12.png"]}}
    # the longest recording name wins a prefix match; a lone recording takes any numbered name
    assert match_frames(["scan_1_2_000001.jpg"], ["scan_1", "scan_1_2"]) == {
        "scan_1": {}, "scan_1_2": {1: ["scan_1_2_000001.jpg"]}}
    assert match_frames(["000009.jpg"], ["only"]) == {"only": {9: ["000009.jpg"]}}


def test_read_colmap_image_names_roundtrip(tmp_path):
    from pipeline_support.colmap import write_images_bin
    names = ["a/b_000001.jpg", "ü_000002.jpg", "c_000003.jpg"]
    assert read_image_names(write_images_bin(tmp_path / "images.bin", names, points_per_image=5)) == names


def test_sog_step_is_best_effort_and_never_leaves_a_stale_file(tmp_path):
    """``--from-step sog`` runs it; whatever the SOG writer does with an unreadable splat_rot.ply, the job
    succeeds, the earlier attempt's splat_rot.sog (and a killed attempt's temp file) are gone."""
    root = build_demo_job(tmp_path)
    out = root / "refined/splatter"
    (out / "splat_rot.sog").write_bytes(b"from an earlier attempt")
    (out / ".splat_rot.sog.k1ll3d.tmp").write_bytes(b"left by a killed attempt")
    (out / "splat_rot.ply").write_bytes(b"ply\nthis is not a header\n")
    p = run_job(root, *IDS, "--from-step", "sog", "--to-step", "sog", env=job_env(tmp_path))
    assert p.returncode == 0, log_of(p)
    assert "step 1/1 sog: start" in p.stdout and "step sog failed (best effort, the job goes on)" in p.stdout
    assert not (out / "splat_rot.sog").exists()
    assert_no_temp_files(out)


# --------------------------------------------------------------------------- the contract, spelt out once

def test_the_job_layout_and_the_artifact_table_are_the_protocols():
    """The one place that spells the contract's literal paths and names (protocol doc §3-4): run.py, the node
    and the test doubles all take them from pipeline.layout, so a rename there is caught here."""
    from pipeline.layout import ARTIFACTS, COLMAP_INPUTS, JobLayout
    L = JobLayout(Path("/job"))
    assert [(str(L.artifact(a)), a.data_type, a.name("_2024-01-02_03-04-05"), a.name(None), a.required)
            for a in ARTIFACTS] == [
        ("/job/refined/splatter/splat_rot.sog", "splat_data_sog", "refined_splat_sog_2024-01-02_03-04-05",
         "refined_splat_sog", False),
        ("/job/refined/splatter/splat_rot.splat", "splat_data", "refined_splat_2024-01-02_03-04-05",
         "refined_splat", True),
        ("/job/refined/splatter/preview_top.jpg", "splat_preview_top",
         "refined_splat_preview_top_2024-01-02_03-04-05", "refined_splat_preview_top", False),
        ("/job/refined/splatter/preview_angle.jpg", "splat_preview_angle",
         "refined_splat_preview_angle_2024-01-02_03-04-05", "refined_splat_preview_angle", False),
        ("/job/refined/splatter/preview.mp4", "splat_preview_video",
         "refined_splat_preview_video_2024-01-02_03-04-05", "refined_splat_preview_video", False)]
    assert ARTIFACTS[0].name("2024") == "refined_splat_sog_2024"  # a suffix without its "_" gets one
    assert str(L.recording("scan_1")) == "/job/datasets/scan_1/Frames.mp4"
    assert [(c.prefix + "_S", str(L.colmap / c.file)) for c in COLMAP_INPUTS] == [
        ("colmap_frames_bin_S", "/job/refined/global/refined_sfm_combined/frames.bin"),
        ("colmap_images_bin_S", "/job/refined/global/refined_sfm_combined/images.bin"),
        ("colmap_cameras_bin_S", "/job/refined/global/refined_sfm_combined/cameras.bin"),
        ("colmap_points3d_bin_S", "/job/refined/global/refined_sfm_combined/points3D.bin"),
        ("colmap_rigs_bin_S", "/job/refined/global/refined_sfm_combined/rigs.bin")]
    assert (str(L.frames), str(L.transforms), str(L.config), str(L.splat_ply), str(L.splat_rot_ply)) == (
        "/job/Frames", "/job/refined/nerfstudio-data/transforms.json", "/job/refined/splatter/splatfacto/config.yml",
        "/job/refined/splatter/splat.ply", "/job/refined/splatter/splat_rot.ply")
    assert L.colmap_from_ns_data == "../global/refined_sfm_combined/"
