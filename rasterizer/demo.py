"""The built-in demo scene: a furnished room scanned from the inside, the same on every run.

A 6 m x 4 m room in the domain frame (+Y up, metres, the floor at y = 0): a checkered floor
(0.5 m squares), four walls 2.7 m high with a door opening in the front wall (z = +2), a ceiling,
a sofa against the back wall, a table with a glossy ball on it, a tall cabinet against the right
wall, a plant in the front-left corner, and a few floaters inside and outside the room. The table,
the cabinet, the ball and the plant carry SH bands 1-3, so their colour changes with the view
direction. About 51k Gaussians, built in well under a second (0.05 s here). It is what the README quickstart,
the golden images and the tests render.
"""
from __future__ import annotations

import numpy as np

from .scene import SH_C0, Scene

ROOM_X, ROOM_Z = 3.0, 2.0          # half sizes: the room is [-3, 3] x [-2, 2]
CEILING = 2.7
SQUARE = 0.5
DOOR = ((1.2, 2.1), 2.1)           # x range and height of the door opening in the front wall (z = +2)
LIGHT, DARK = np.array([0.85, 0.80, 0.70]), np.array([0.35, 0.25, 0.18])
CEILING_COLOR = np.array([0.93, 0.93, 0.96])
#: the furniture: name → (lowest corner, highest corner, colour); the ball and the plant are round
FURNITURE = {
    "sofa": ((-2.6, 0.0, -1.95), (-0.6, 0.85, -1.1), (0.15, 0.35, 0.65)),
    "table": ((0.0, 0.0, -0.2), (1.2, 0.75, 0.6), (0.55, 0.33, 0.15)),
    "cabinet": ((2.45, 0.0, -1.6), (2.95, 1.9, -0.4), (0.62, 0.12, 0.12)),
    "ball": ((0.13, 0.75, -0.07), (0.37, 0.99, 0.17), (0.95, 0.8, 0.1)),
    "plant": ((-2.65, 0.0, 1.05), (-2.05, 1.3, 1.65), (0.2, 0.6, 0.2)),
}


def _logit(p):
    return np.log(p / (1.0 - p))


def _surface(rng, points, normals, color, spacing, opacity=0.95, sh_gloss=0.0, thickness=0.0):
    """Flat Gaussians on a surface: thin along the normal, ``spacing`` wide along it; ``thickness``
    scatters them along the normal (a wall that is a cloud, as in real scans)."""
    n = len(points)
    points = points + rng.normal(0.0, spacing * 0.05, points.shape)
    if thickness:
        points = points + normals * rng.normal(0.0, thickness, (n, 1))
    # quaternion turning the local z axis onto the normal (thin axis = z)
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(np.broadcast_to(z, normals.shape), normals)
    s = np.linalg.norm(axis, axis=1)
    c = normals @ z
    angle = np.arctan2(s, c)
    axis = np.where(s[:, None] > 1e-9, axis / np.maximum(s, 1e-12)[:, None], [1.0, 0.0, 0.0])
    quats = np.concatenate([np.cos(angle / 2)[:, None], axis * np.sin(angle / 2)[:, None]], axis=1)
    scales = np.log(np.tile([spacing * 0.7, spacing * 0.7, spacing * 0.08], (n, 1)))
    color = np.broadcast_to(np.asarray(color, float), (n, 3))
    color = np.clip(color + rng.normal(0.0, 0.02, (n, 3)), 0.02, 0.98)
    sh = np.zeros((n, 16, 3))
    sh[:, 0] = (color - 0.5) / SH_C0
    if sh_gloss:
        # a highlight that follows the view direction (band 1), plus finer bands 2-3
        sh[:, 1:4] = sh_gloss * np.array([[0.6, 0.6, 0.6], [-0.9, -0.9, -0.9], [0.4, 0.4, 0.4]])
        sh[:, 4:16] = rng.normal(0.0, sh_gloss * 0.15, (1, 12, 3))  # coherent across the object
    opac = np.full(n, _logit(opacity)) + rng.normal(0.0, 0.1, n)
    return points, scales, quats, opac, sh


def _grid(u_range, v_range, spacing):
    u = np.arange(u_range[0] + spacing / 2, u_range[1], spacing)
    v = np.arange(v_range[0] + spacing / 2, v_range[1], spacing)
    uu, vv = np.meshgrid(u, v, indexing="ij")
    return uu.ravel(), vv.ravel()


def _rect(rng, axis, at, u_range, v_range, normal_sign, color, spacing, keep=None, **kw):
    """An axis-aligned rectangle at coordinate ``at`` along ``axis``; u, v are the other two axes
    in x, y, z order; ``keep(u, v)`` masks holes (the door)."""
    u, v = _grid(u_range, v_range, spacing)
    if keep is not None:
        mask = keep(u, v)
        u, v = u[mask], v[mask]
    others = [k for k in range(3) if k != axis]
    p = np.zeros((len(u), 3))
    p[:, axis], p[:, others[0]], p[:, others[1]] = at, u, v
    nrm = np.zeros_like(p)
    nrm[:, axis] = normal_sign
    col = color(u, v) if callable(color) else color
    return _surface(rng, p, nrm, col, spacing, **kw)


def _box(rng, lo, hi, color, spacing, bottom=False, **kw):
    """The faces of an axis-aligned box (no bottom face unless asked: it stands on something)."""
    out = []
    for axis in range(3):
        u_ax, v_ax = [k for k in range(3) if k != axis]
        for sign, at in ((-1.0, lo[axis]), (1.0, hi[axis])):
            if axis == 1 and sign < 0 and not bottom:
                continue
            out.append(_rect(rng, axis, at, (lo[u_ax], hi[u_ax]), (lo[v_ax], hi[v_ax]), sign, color, spacing, **kw))
    return out


def _sphere(rng, centre, radius, color, spacing, **kw):
    n = int(4 * np.pi * radius ** 2 / spacing ** 2)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return _surface(rng, np.asarray(centre) + radius * d, d, color, spacing, **kw)


def demo_scene(detail: float = 1.0) -> Scene:
    """Build the demo room (about 51k Gaussians at ``detail=1``); deterministic."""
    rng = np.random.default_rng(20261125)
    parts = []
    fs, ws = 0.045 / detail, 0.055 / detail       # floor and wall/ceiling spacing

    def checker(u, v):  # floor: u = x, v = z
        dark = ((np.floor((u + ROOM_X) / SQUARE) + np.floor((v + ROOM_Z) / SQUARE)) % 2).astype(bool)
        return np.where(dark[:, None], DARK, LIGHT)

    parts.append(_rect(rng, 1, 0.0, (-ROOM_X, ROOM_X), (-ROOM_Z, ROOM_Z), 1.0, checker, fs))
    parts.append(_rect(rng, 1, CEILING, (-ROOM_X, ROOM_X), (-ROOM_Z, ROOM_Z), -1.0, CEILING_COLOR, ws))

    # walls, facing into the room, a few cm thick as clouds; a stripe at 1 m on the back wall
    wall = dict(spacing=ws, thickness=0.012)
    (d0, d1), dh = DOOR
    parts.append(_rect(rng, 2, -ROOM_Z, (-ROOM_X, ROOM_X), (0.0, CEILING), 1.0,
                       lambda u, v: np.where(((v > 0.95) & (v < 1.05))[:, None], [0.75, 0.35, 0.2],
                                             [0.66, 0.6, 0.52]), **wall))
    parts.append(_rect(rng, 2, ROOM_Z, (-ROOM_X, ROOM_X), (0.0, CEILING), -1.0, [0.62, 0.58, 0.5],
                       keep=lambda u, v: ~((u > d0) & (u < d1) & (v < dh)), **wall))
    parts.append(_rect(rng, 0, -ROOM_X, (0.0, CEILING), (-ROOM_Z, ROOM_Z), 1.0, [0.5, 0.56, 0.62], **wall))
    parts.append(_rect(rng, 0, ROOM_X, (0.0, CEILING), (-ROOM_Z, ROOM_Z), -1.0, [0.55, 0.62, 0.52], **wall))

    # sofa: a seat, a back and two armrests
    lo, hi, col = FURNITURE["sofa"]
    parts += _box(rng, lo, (hi[0], 0.45, hi[2]), col, 0.04)
    parts += _box(rng, (lo[0], 0.45, lo[2]), (hi[0], hi[1], lo[2] + 0.22), col, 0.04)
    for x0 in (lo[0], hi[0] - 0.18):
        parts += _box(rng, (x0, 0.45, lo[2] + 0.22), (x0 + 0.18, 0.65, hi[2]), col, 0.04)

    # table: a glossy top on four legs, a glossy ball on it
    lo, hi, col = FURNITURE["table"]
    parts += _box(rng, (lo[0], hi[1] - 0.04, lo[2]), hi, col, 0.03, bottom=True, sh_gloss=0.3)
    for x0 in (lo[0] + 0.03, hi[0] - 0.09):
        for z0 in (lo[2] + 0.03, hi[2] - 0.09):
            parts += _box(rng, (x0, 0.0, z0), (x0 + 0.06, hi[1] - 0.04, z0 + 0.06), col, 0.03)
    lo, hi, col = FURNITURE["ball"]
    parts.append(_sphere(rng, (np.add(lo, hi)) / 2, (hi[0] - lo[0]) / 2, col, 0.025, sh_gloss=0.8))

    # a tall cabinet against the right wall
    lo, hi, col = FURNITURE["cabinet"]
    parts += _box(rng, lo, hi, col, 0.04, sh_gloss=0.25)

    # a plant: a pot, a stem and a round crown of leaves
    lo, hi, col = FURNITURE["plant"]
    c = (np.add(lo, hi)) / 2
    parts += _box(rng, (c[0] - 0.15, 0.0, c[2] - 0.15), (c[0] + 0.15, 0.4, c[2] + 0.15), [0.6, 0.4, 0.3], 0.035)
    parts += _box(rng, (c[0] - 0.03, 0.4, c[2] - 0.03), (c[0] + 0.03, hi[1] - 0.55, c[2] + 0.03), [0.4, 0.3, 0.15],
                  0.02)
    parts.append(_sphere(rng, (c[0], hi[1] - 0.3, c[2]), 0.3, col, 0.035, sh_gloss=0.3))

    # floaters: specks in and around the room, some of them faint
    n = 240
    pts = rng.uniform([-ROOM_X - 1.5, -0.5, -ROOM_Z - 1.5], [ROOM_X + 1.5, CEILING + 1.0, ROOM_Z + 1.5], (n, 3))
    d = rng.normal(size=(n, 3))
    fl = _surface(rng, pts, d / np.linalg.norm(d, axis=1, keepdims=True), rng.uniform(0.2, 0.9, (n, 3)), 0.05,
                  opacity=0.6)
    fl[3][:] = np.where(rng.random(n) < 0.5, _logit(0.08), _logit(0.7))
    parts.append(fl)

    means, scales, quats, opac, sh = (np.concatenate([p[i] for p in parts]).astype(np.float32) for i in range(5))
    return Scene(means, scales, quats, opac, sh, np.zeros_like(means), "<demo scene>")
