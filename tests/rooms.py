"""Procedural scans for the layout and preview tests: rooms, flats, open ground and objects.

They imitate what a trained capture looks like where it matters to the analysis: surfaces are
flat Gaussians scattered a few cm around them (floors a few cm thick, walls thicker clouds), the
floor may be tilted, ceilings may be partial, and floaters hang everywhere, some of them opaque.
Everything is deterministic (seeded) and small (tens of thousands of Gaussians).
"""
from __future__ import annotations

import math

import numpy as np

from rasterizer.scene import SH_C0, Scene
from rasterizer.transform import Similarity, transform_scene


class Builder:
    def __init__(self, seed: int = 0, spacing: float = 0.07):
        self.rng = np.random.default_rng(seed)
        self.spacing = spacing
        self.parts = []

    def patch(self, origin, u, v, color, thickness=0.01, opacity=0.9, keep=None, spacing=None):
        """Flat Gaussians scattered over the parallelogram origin + s·u + t·v (s, t in [0, 1])."""
        sp = spacing or self.spacing
        u, v, origin = (np.asarray(a, float) for a in (u, v, origin))
        normal = np.cross(u, v)
        area = float(np.linalg.norm(normal))
        normal /= area
        n = max(1, int(area / sp ** 2))
        st = self.rng.random((n, 2))
        if keep is not None:
            st = st[keep(st[:, 0], st[:, 1])]
        pts = origin + st[:, :1] * u + st[:, 1:] * v + normal * self.rng.normal(0, thickness, (len(st), 1))
        self._add(pts, np.broadcast_to(normal, pts.shape), color, sp * 0.8, sp * 0.1, opacity)

    def blobs(self, pts, color, size, opacity):
        """Round Gaussians (floaters, foliage)."""
        d = self.rng.normal(size=pts.shape)
        self._add(pts, d / np.linalg.norm(d, axis=1, keepdims=True), color, size, size, opacity)

    def box(self, lo, hi, color, **kw):
        """Five faces of an axis-aligned box (no bottom: it stands on the floor)."""
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        dx, dy, dz = np.diag(hi - lo)
        self.patch(lo + dy, dx, dz, color, **kw)                     # top
        for o, a, b in ((lo, dx, dy), (lo + dz, dx, dy), (lo, dz, dy), (lo + dx, dz, dy)):
            self.patch(o, a, b, color, **kw)

    def room(self, x0, z0, x1, z1, height=2.7, floor=True, ceiling=1.0, walls="nesw", door=None,
             floor_at=0.0, thickness=0.02):
        """A rectangular room: floor, walls (n = z0 side, s = z1, w = x0, e = x1), ceiling; ``ceiling`` is
        the share of the ceiling that was captured (a band along x); ``door`` = (wall, from, to) in metres
        along it, 2.1 m high."""
        y0 = floor_at
        if floor:
            self.patch((x0, y0, z0), (x1 - x0, 0, 0), (0, 0, z1 - z0), (0.6, 0.5, 0.4), thickness=0.015)
        if ceiling:
            self.patch((x0, y0 + height, z0), (ceiling * (x1 - x0), 0, 0), (0, 0, z1 - z0), (0.9, 0.9, 0.92),
                       thickness=0.02)
        for side in walls:
            o, a = {"n": ((x0, y0, z0), (x1 - x0, 0, 0)), "s": ((x0, y0, z1), (x1 - x0, 0, 0)),
                    "w": ((x0, y0, z0), (0, 0, z1 - z0)), "e": ((x1, y0, z0), (0, 0, z1 - z0))}[side]
            keep = None
            if door and door[0] == side:
                length = float(np.linalg.norm(a))
                keep = lambda s, t, d=door, L=length: ~((s * L > d[1]) & (s * L < d[2]) & (t * height < 2.1))  # noqa: E731
            self.patch(o, a, (0, height, 0), (0.7, 0.68, 0.62), thickness=thickness, keep=keep)

    def floaters(self, lo, hi, n, opaque_share=0.3):
        pts = self.rng.uniform(lo, hi, (n, 3))
        op = np.where(self.rng.random(n) < opaque_share, 0.7, 0.1)
        for value in (0.7, 0.1):
            sel = op == value
            self.blobs(pts[sel], self.rng.random(3), 0.04, value)

    def _add(self, pts, normals, color, wide, thin, opacity):
        n = len(pts)
        z = np.array([0.0, 0.0, 1.0])
        axis = np.cross(np.broadcast_to(z, normals.shape), normals)
        s = np.linalg.norm(axis, axis=1)
        ang = np.arctan2(s, normals @ z)
        axis = np.where(s[:, None] > 1e-9, axis / np.maximum(s, 1e-12)[:, None], [1.0, 0.0, 0.0])
        quats = np.concatenate([np.cos(ang / 2)[:, None], axis * np.sin(ang / 2)[:, None]], 1)
        scales = np.log(np.tile([wide, wide, thin], (n, 1)))
        col = np.clip(np.asarray(color, float) + self.rng.normal(0, 0.03, (n, 3)), 0, 1)
        sh = ((col - 0.5) / SH_C0)[:, None, :]
        op = np.log(opacity / (1 - opacity)) + self.rng.normal(0, 0.2, n)
        self.parts.append((pts, scales, quats, op, sh))

    def scene(self, rotate=None, scale=1.0, name="<procedural>") -> Scene:
        """The scene; ``rotate`` (3x3) turns it (and so its up axis), ``scale`` changes its units."""
        means, scales, quats, op, sh = (np.concatenate([p[i] for p in self.parts]).astype(np.float32)
                                        for i in range(5))
        scene = Scene(means, scales, quats, op, sh, None, name)
        if rotate is None and scale == 1.0:
            return scene
        return transform_scene(scene, Similarity(np.eye(3) if rotate is None else np.asarray(rotate), scale,
                                                 np.zeros(3)))


def rotation(axis, deg):
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = math.radians(deg)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(t) * k + (1 - math.cos(t)) * k @ k


def furnish(b: Builder, x0, z0, x1, z1, floor_at=0.0):
    """A sofa, a table and a cabinet inside the rectangle."""
    w, d = x1 - x0, z1 - z0
    y = floor_at
    b.box((x0 + 0.1 * w, y, z0 + 0.05), (x0 + 0.45 * w, y + 0.8, z0 + 0.05 + 0.8), (0.2, 0.3, 0.6))
    b.box((x0 + 0.45 * w, y, z0 + 0.45 * d), (x0 + 0.45 * w + 1.2, y + 0.75, z0 + 0.45 * d + 0.8), (0.5, 0.3, 0.15))
    b.box((x1 - 0.55, y, z1 - 1.4), (x1 - 0.05, y + 1.9, z1 - 0.2), (0.6, 0.1, 0.1))


def furnished_room(seed=0, **room) -> Builder:
    b = Builder(seed)
    b.room(-3, -2, 3, 2, door=("s", 1.2, 2.1), **room)
    furnish(b, -3, -2, 3, 2, room.get("floor_at", 0.0))
    b.floaters((-4.5, -0.5, -3.5), (4.5, 3.6, 3.5), 400)
    return b


def flat(seed=1) -> Builder:
    """An L-shaped flat: a living room, a bedroom and a kitchen (2.6 m) and a hall with a higher
    ceiling (3.0 m); internal walls with door openings."""
    b = Builder(seed)
    wall = (0.7, 0.68, 0.62)
    b.room(0, 0, 6, 4, height=2.6, walls="nwe")                 # living room
    furnish(b, 0, 0, 6, 4)
    b.room(0, 4, 4, 8, height=2.6, walls="w")                   # bedroom
    b.box((0.3, 0, 5.0), (2.3, 0.5, 7.5), (0.8, 0.8, 0.7))     # a bed
    b.room(4, 4, 6, 8, height=3.0, walls="es")                  # hall, open to the living room
    b.room(0, 8, 4, 11, height=2.6, walls="wse")                # kitchen
    b.box((0.1, 0, 8.2), (0.7, 0.9, 10.8), (0.85, 0.85, 0.85))  # a counter
    door = lambda s, t: ~((s > 0.3) & (s < 0.55) & (t < 0.8))   # noqa: E731
    b.patch((0, 0, 4), (4, 0, 0), (0, 2.6, 0), wall, thickness=0.02, keep=door)
    b.patch((4, 0, 4), (0, 0, 4), (0, 2.6, 0), wall, thickness=0.02, keep=door)
    b.patch((0, 0, 8), (4, 0, 0), (0, 2.6, 0), wall, thickness=0.02, keep=door)
    b.floaters((-1, -0.3, -1), (7, 3.5, 12), 600)
    return b


def open_ground(seed=2) -> Builder:
    """A 16 x 16 m courtyard: paving, a bench, a car-sized box, a tree (trunk and a round crown) and a
    small roofed shelter covering a tenth of it; floaters."""
    b = Builder(seed, spacing=0.1)
    b.patch((-8, 0, -8), (16, 0, 0), (0, 0, 16), (0.55, 0.55, 0.5), thickness=0.02)
    b.box((-5, 0, 2), (-3, 0.5, 2.6), (0.5, 0.35, 0.2))
    b.box((1, 0, -6), (5.5, 1.5, -4.2), (0.7, 0.1, 0.1))
    b.box((4.8, 0, 3.8), (5.2, 2.5, 4.2), (0.35, 0.25, 0.15))
    crown = b.rng.normal(size=(3000, 3))
    crown = crown / np.linalg.norm(crown, axis=1, keepdims=True) * (1.6 * b.rng.random((3000, 1)) ** 0.3)
    b.blobs(crown + (5, 3.8, 4), (0.2, 0.5, 0.15), 0.15, 0.8)
    b.patch((-7, 2.4, -7), (4, 0, 0), (0, 0, 4), (0.3, 0.3, 0.35), thickness=0.02)   # shelter roof
    for x, z in ((-7, -7), (-3, -7), (-7, -3), (-3, -3)):
        b.box((x, 0, z), (x + 0.15, 2.4, z + 0.15), (0.3, 0.3, 0.3))
    b.floaters((-9, -0.5, -9), (9, 6, 9), 500)
    return b


def lone_object(seed=3) -> Builder:
    """A 1.2 m statue-like object (a stack of boxes and a ball) with no ground under it."""
    b = Builder(seed, spacing=0.03)
    b.box((-0.4, 0, -0.3), (0.4, 0.5, 0.3), (0.5, 0.5, 0.55))
    b.box((-0.2, 0.5, -0.2), (0.2, 1.0, 0.2), (0.3, 0.3, 0.35))
    d = b.rng.normal(size=(1500, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    b.blobs((0, 1.1, 0) + 0.12 * d, (0.8, 0.2, 0.2), 0.02, 0.9)
    b.floaters((-1, -0.3, -1), (1, 1.6, 1), 200)
    return b


def house_from_outside(seed=4) -> Builder:
    """A house 10 x 8 m and 5 m high scanned from outside on its 14 x 12 m plot: walls and a flat roof
    covering half of the plot, no inside."""
    b = Builder(seed, spacing=0.1)
    outside = lambda s, t: (np.abs(s * 14 - 7) > 5) | (np.abs(t * 12 - 6) > 4)     # noqa: E731
    b.patch((-7, 0, -6), (14, 0, 0), (0, 0, 12), (0.4, 0.55, 0.3), thickness=0.02, keep=outside)    # lawn
    b.box((-5, 0, -4), (5, 5, 4), (0.75, 0.7, 0.65), thickness=0.02)
    b.floaters((-8, -0.5, -7), (8, 7, 7), 400)
    return b


def blob_cloud(seed=6) -> Scene:
    """A 4 m ball of isolated round blobs (a tree crown, a cloud of floaters): no surfaces at all."""
    b = Builder(seed)
    pts = b.rng.normal(size=(2000, 3))
    b.blobs(pts, (0.3, 0.5, 0.2), 0.05, 0.9)
    return b.scene()

