"""Regenerate the golden images of the demo scene with the NumPy reference.

    python golden/regenerate.py

Writes ``golden/<name>.png`` and ``golden/cameras.json`` (the camera of each image).
See golden/README.md for when to run it.
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
from rasterizer.preview import DEFAULT_BACKGROUND, preview_cameras  # noqa: E402
from rasterizer.render import Prepared  # noqa: E402

SIZE = (640, 360)


def golden_cameras(scene) -> dict[str, Camera]:
    views = preview_cameras(scene, up="y", size=SIZE)
    return {
        "preview_top": views["top"],
        "preview_angle": views["angle"],
        # standing in the room at eye height, looking at the sphere and the walls
        "inside": Camera.look_at([1.6, 1.5, 1.7], [0.0, 0.4, -0.5], [0, 1, 0], 75.0, *SIZE),
        # close to the glossy sphere, odd size: SH bands 1-3 and partial tiles at the edges
        "sphere_517x389": Camera.look_at([1.5, 0.9, 1.6], [0.6, 0.45, 0.5], [0, 1, 0], 45.0, 517, 389),
    }


def camera_record(cam: Camera) -> dict:
    return {"width": cam.width, "height": cam.height, "fov": cam.fov_y_deg,
            "world_to_camera": np.asarray(cam.world_to_camera).ravel().tolist()}


def main() -> None:
    scene = demo_scene()
    ref = Prepared(scene, "numpy")
    records = {}
    for name, cam in golden_cameras(scene).items():
        img = ref.render(cam, DEFAULT_BACKGROUND)
        save_image(HERE / f"{name}.png", img.rgb)
        records[name] = camera_record(cam)
        print(f"wrote golden/{name}.png ({cam.width}x{cam.height})")
    (HERE / "cameras.json").write_text(json.dumps({"background": DEFAULT_BACKGROUND, "cameras": records},
                                                  indent=1) + "\n")


if __name__ == "__main__":
    main()
