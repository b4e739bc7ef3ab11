"""Regenerate the golden images of the demo scene with the NumPy reference.

    python golden/regenerate.py

Writes ``golden/<name>.png`` and ``golden/cameras.json`` (the camera of each image, and whether it
renders the demo after the previews' automatic section cut). See golden/README.md for when to run it.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from rasterizer.camera import Camera  # noqa: E402
from rasterizer.demo import demo_scene  # noqa: E402
from rasterizer.imageio import save_image  # noqa: E402
from rasterizer.preview import DEFAULT_BACKGROUND, plan_previews  # noqa: E402
from rasterizer.render import Prepared  # noqa: E402

SIZE = (640, 360)


def golden_cameras(scene) -> dict[str, tuple[Camera, bool]]:
    """name → (camera, renders the scene after the automatic cut)."""
    views = plan_previews(scene, up="y", size=SIZE).cameras
    return {
        "preview_top": (views["top"], True),       # orthographic floor plan
        "preview_angle": (views["angle"], True),   # the dollhouse view
        # standing in the room at eye height, looking past the table at the sofa and the back wall
        "inside": (Camera.look_at([2.2, 1.6, 1.6], [-1.0, 0.6, -1.2], [0, 1, 0], 75.0, *SIZE), False),
        # close to the glossy ball on the table, odd size: SH bands 1-3 and partial tiles at the edges
        "ball_517x389": (Camera.look_at([1.0, 1.3, 0.9], [0.25, 0.87, 0.05], [0, 1, 0], 45.0, 517, 389), False),
    }


def camera_record(cam: Camera, cut: bool) -> dict:
    return {"model": cam.model, "width": cam.width, "height": cam.height, "fx": cam.fx, "fy": cam.fy,
            "cx": cam.cx, "cy": cam.cy, "world_to_camera": np.asarray(cam.world_to_camera).ravel().tolist(),
            "cut": cut}


def camera_of(rec: dict) -> Camera:
    return Camera(rec["width"], rec["height"], rec["fx"], rec["fy"], rec["cx"], rec["cy"],
                  np.array(rec["world_to_camera"]).reshape(4, 4), rec["model"])


def main() -> None:
    scene = demo_scene()
    plan = plan_previews(scene, up="y", size=SIZE)
    ref = {False: Prepared(scene, "numpy"), True: Prepared(plan.scene, "numpy")}
    records = {}
    for name, (cam, cut) in golden_cameras(scene).items():
        img = ref[cut].render(cam, DEFAULT_BACKGROUND)
        save_image(HERE / f"{name}.png", img.rgb)
        records[name] = camera_record(cam, cut)
        print(f"wrote golden/{name}.png ({cam.width}x{cam.height}, {cam.model}{', after the cut' if cut else ''})")
    (HERE / "cameras.json").write_text(json.dumps({"background": DEFAULT_BACKGROUND, "cameras": records},
                                                  indent=1) + "\n")


if __name__ == "__main__":
    main()
