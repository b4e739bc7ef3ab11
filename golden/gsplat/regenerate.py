"""Regenerate the gsplat 1.4.0 reference images: the judge every backend is tested against.

    python golden/gsplat/regenerate.py [--only demo]

Needs a CUDA GPU with PyTorch and gsplat==1.4.0 (its CUDA code builds on first import: on a
fresh machine set ``MAX_JOBS``, ``TORCH_CUDA_ARCH_LIST`` and allow a few minutes), and the real
scenes (``$SPLATTER_SCENES`` or ``../shared/scenes``; without them only the demo cases are
rewritten and the stored real-scene cases are kept, with a warning). ``--only demo`` rewrites only
the demo cases (after a change of ``rasterizer/demo.py``).

Every case is one scene, one camera and one background, rendered by gsplat's
``rasterization(..., packed=False, rasterize_mode="classic", camera_model=...)`` with the
contract's constants (:func:`bench.gpu.gsplat_render`). Writes, per case, ``<case>.npz`` holding
``rgb`` (H, W, 3) and ``alpha`` (H, W) as uint16 ``round(v * 65535)`` (colour clamped to
[0, 1]), and ``cases.json``: for each case the scene (``demo`` or a real scene's file name) and
a fingerprint of its arrays, the exact camera (model, size, fx, fy, cx, cy, world-to-camera) and
the background. ``tests/test_gsplat_reference.py`` compares every backend with these files.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from cameras import cameras_for  # noqa: E402

from bench.gpu import gsplat_render  # noqa: E402
from bench.scenes import BIG_SCENE, REAL_SCENES, scenes_dir  # noqa: E402
from rasterizer.camera import Camera  # noqa: E402
from rasterizer.demo import demo_scene  # noqa: E402
from rasterizer.preview import DEFAULT_BACKGROUND, robust_bounds  # noqa: E402
from rasterizer.scene import Scene, atomic_write, load_scene  # noqa: E402

CASES_FILE = HERE / "cases.json"
SCENE_BACKGROUND = (0.1, 0.2, 0.3)        # real scenes: a background that shows through where alpha < 1
# real scenes: every camera of tests/cameras.py at a small odd size (<= 320 px wide for the 500k
# scene, so that the NumPy reference stays quick on CI)
SCENE_SIZES = {BIG_SCENE: (255, 191)}
DEFAULT_SCENE_SIZE = (199, 149)


def fingerprint(scene: Scene) -> str:
    """A short hash of a scene's arrays: a reference is only valid for the scene it was made of."""
    h = hashlib.sha256()
    for a in (scene.means, scene.scales, scene.quats, scene.opacities, scene.sh):
        h.update(np.ascontiguousarray(a, np.float32).tobytes())
    return h.hexdigest()[:16]


def demo_cameras(scene: Scene) -> dict[str, Camera]:
    """¾ view, top view, an inside camera with a wide fov, an odd size, two orthographic views."""
    wide = cameras_for(scene, size=(400, 225))
    odd = cameras_for(scene, size=(401, 301))
    small = cameras_for(scene, size=(333, 251))
    c = robust_bounds(scene).center
    return {
        "oblique_400x225": wide["oblique"],
        "top_320x180": cameras_for(scene, size=(320, 180))["top"],
        "inside_wide_333x251": Camera.look_at(c, c + np.array([0.3, 0.1, 1.0]), [0, 1, 0], 100.0, 333, 251),
        "inside_401x301": odd["inside"],
        "ortho_top_333x251": small["ortho_top"],
        "ortho_inside_333x251": small["ortho_inside"],
    }


def camera_record(cam: Camera) -> dict:
    return {"model": cam.model, "width": cam.width, "height": cam.height, "fx": cam.fx, "fy": cam.fy,
            "cx": cam.cx, "cy": cam.cy, "world_to_camera": np.asarray(cam.world_to_camera).ravel().tolist()}


def camera_from_record(rec: dict) -> Camera:
    return Camera(rec["width"], rec["height"], rec["fx"], rec["fy"], rec["cx"], rec["cy"],
                  np.array(rec["world_to_camera"], np.float64).reshape(4, 4), rec["model"])


def to_u16(v: np.ndarray) -> np.ndarray:
    return np.round(np.clip(v, 0.0, 1.0) * 65535.0).astype(np.uint16)


def from_u16(v: np.ndarray) -> np.ndarray:
    return v.astype(np.float32) / np.float32(65535.0)


def write_cases(scene_name: str, scene: Scene, cams: dict[str, Camera], background, cases: dict) -> None:
    images = gsplat_render(scene, list(cams.values()), background)
    for (view, cam), (rgb, alpha) in zip(cams.items(), images):
        case = f"{Path(scene_name).stem}_{view}"
        atomic_write(HERE / f"{case}.npz",
                     lambda f, rgb=rgb, alpha=alpha: np.savez_compressed(f, rgb=to_u16(rgb), alpha=to_u16(alpha)))
        cases[case] = {"scene": scene_name, "fingerprint": fingerprint(scene), "background": list(background),
                       "camera": camera_record(cam)}
        print(f"wrote golden/gsplat/{case}.npz ({cam.model} {cam.width}x{cam.height}, "
              f"alpha mean {float(alpha.mean()):.3f})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["demo"], help="rewrite only the demo cases")
    args = ap.parse_args(argv)
    old = json.loads(CASES_FILE.read_text()) if CASES_FILE.is_file() else {}
    cases = {k: v for k, v in old.items() if v["scene"] != "demo"}
    demo = demo_scene()
    write_cases("demo", demo, demo_cameras(demo), DEFAULT_BACKGROUND, cases)
    if args.only != "demo":
        d = scenes_dir()
        for name in REAL_SCENES:
            if d is None or not (d / name).is_file():
                print(f"warning: {name} not found (set SPLATTER_SCENES): its stored cases are kept", file=sys.stderr)
                continue
            for case in [k for k, v in cases.items() if v["scene"] == name]:
                del cases[case]
            scene = load_scene(d / name)
            size = SCENE_SIZES.get(name, DEFAULT_SCENE_SIZE)
            write_cases(name, scene, cameras_for(scene, size=size, up=REAL_SCENES[name]), SCENE_BACKGROUND, cases)
    for stale in set(p.stem for p in HERE.glob("*.npz")) - set(cases):
        (HERE / f"{stale}.npz").unlink()
    text = json.dumps(dict(sorted(cases.items())), indent=1) + "\n"
    atomic_write(CASES_FILE, lambda f: f.write(text.encode()))
    print(f"wrote golden/gsplat/cases.json ({len(cases)} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
