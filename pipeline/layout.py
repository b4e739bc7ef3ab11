"""The job folder and the artifact table: the one definition that run.py, the node and the tests import.

A job folder (``$TASKS_ROOT/<task id>`` on the node, any folder for ``run.py``)::

    ROOT
    ├── datasets/<scan>/Frames.mp4          one recording per scan (the node downloads them)
    ├── Frames/                             extracted frames, named as the COLMAP model names them
    └── refined
        ├── global/refined_sfm_combined/    the COLMAP model: frames, images, cameras, points3D, rigs .bin
        ├── nerfstudio-data/                ns-process-data's dataset (transforms.json, images/)
        └── splatter
            ├── splatfacto/config.yml       ns-train's model
            ├── splat.ply                   ns-export, nerfstudio's frame
            ├── splat_rot.ply               the domain frame, +Y up, metres
            └── ARTIFACTS                   what the node uploads (the table below)

The artifact table is the contract with the domain (protocol doc §3-4): each output file, its data type, its
domain name (``<prefix><suffix>``, the suffix being the refined manifest's, e.g. ``_2024-01-02_03-04-05``) and
whether the task fails without it. The rows are in upload order: the SOG first, then the splat, then the
previews and the video.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

RECORDING_FILE = "Frames.mp4"
TRANSFORMS_FILE = "transforms.json"


@dataclass(frozen=True)
class Artifact:
    file: str          # under refined/splatter/
    data_type: str
    prefix: str        # the domain name without the suffix
    required: bool

    def name(self, suffix: str | None) -> str:
        return suffixed(self.prefix, suffix)


SOG = Artifact("splat_rot.sog", "splat_data_sog", "refined_splat_sog", required=False)
SPLAT = Artifact("splat_rot.splat", "splat_data", "refined_splat", required=True)
PREVIEW_TOP = Artifact("preview_top.jpg", "splat_preview_top", "refined_splat_preview_top", required=False)
PREVIEW_ANGLE = Artifact("preview_angle.jpg", "splat_preview_angle", "refined_splat_preview_angle", required=False)
PREVIEW_VIDEO = Artifact("preview.mp4", "splat_preview_video", "refined_splat_preview_video", required=False)
#: in upload order
ARTIFACTS = (SOG, SPLAT, PREVIEW_TOP, PREVIEW_ANGLE, PREVIEW_VIDEO)
PREVIEW_IMAGES = (PREVIEW_TOP, PREVIEW_ANGLE)


@dataclass(frozen=True)
class ColmapInput:
    prefix: str        # domain name ``<prefix><suffix>``
    file: str          # under refined/global/refined_sfm_combined/


#: the refined COLMAP model's five binaries, as the reconstruction server names them in the domain
COLMAP_INPUTS = (ColmapInput("colmap_frames_bin", "frames.bin"), ColmapInput("colmap_images_bin", "images.bin"),
                 ColmapInput("colmap_cameras_bin", "cameras.bin"), ColmapInput("colmap_points3d_bin", "points3D.bin"),
                 ColmapInput("colmap_rigs_bin", "rigs.bin"))


def suffixed(prefix: str, suffix: str | None) -> str:
    """``prefix + suffix`` with exactly one ``_`` between; the bare prefix without a suffix."""
    if not suffix:
        return prefix
    return prefix + suffix if suffix.startswith("_") else f"{prefix}_{suffix}"


@dataclass(frozen=True)
class JobLayout:
    """Every path of one job folder."""

    root: Path

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    def recording(self, scan: str) -> Path:
        return self.datasets / scan / RECORDING_FILE

    def recordings(self) -> dict[str, Path]:
        """The recordings present, ``{scan: Frames.mp4}``, sorted by scan."""
        return {p.parent.name: p for p in sorted(self.datasets.glob(f"*/{RECORDING_FILE}"))}

    @property
    def frames(self) -> Path:
        return self.root / "Frames"

    @property
    def colmap(self) -> Path:
        return self.root / "refined" / "global" / "refined_sfm_combined"

    @property
    def images_bin(self) -> Path:
        return self.colmap / "images.bin"

    @property
    def ns_data(self) -> Path:
        return self.root / "refined" / "nerfstudio-data"

    @property
    def transforms(self) -> Path:
        return self.ns_data / TRANSFORMS_FILE

    @property
    def colmap_from_ns_data(self) -> str:
        """The COLMAP model relative to the nerfstudio dataset, as ns-process-data's --colmap-model-path."""
        return os.path.relpath(self.colmap, self.ns_data) + "/"

    @property
    def out(self) -> Path:
        return self.root / "refined" / "splatter"

    @property
    def config(self) -> Path:
        return self.out / "splatfacto" / "config.yml"

    @property
    def dataparser_transforms(self) -> Path:
        return self.config.parent / "dataparser_transforms.json"

    @property
    def splat_ply(self) -> Path:
        return self.out / "splat.ply"

    @property
    def splat_rot_ply(self) -> Path:
        return self.out / "splat_rot.ply"

    def artifact(self, artifact: Artifact) -> Path:
        return self.out / artifact.file

    @property
    def splat_rot_splat(self) -> Path:
        return self.artifact(SPLAT)

    @property
    def splat_rot_sog(self) -> Path:
        return self.artifact(SOG)

    @property
    def preview_top(self) -> Path:
        return self.artifact(PREVIEW_TOP)

    @property
    def preview_angle(self) -> Path:
        return self.artifact(PREVIEW_ANGLE)

    @property
    def preview_video(self) -> Path:
        return self.artifact(PREVIEW_VIDEO)
