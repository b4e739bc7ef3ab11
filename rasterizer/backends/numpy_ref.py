"""The NumPy reference backend: the stages of :mod:`rasterizer.stages` as they are."""
from ..imageio import to_uint8
from ..stages import activate as upload  # noqa: F401
from ..stages import bin_tiles, blend, downscale, project, sh_colors  # noqa: F401  (the backend interface)


def project_and_color(g, camera):
    """Stages 2 and 3 for one camera, one after the other."""
    return project(g, camera), sh_colors(g, camera)


def download(rgb, alpha):
    return rgb, alpha


def download8(rgb):
    return to_uint8(rgb)


def warm_up() -> None:
    """Nothing to bring up."""


def subset(g, index):
    """The Gaussians selected by a boolean mask or indices."""
    return g.subset(index)
