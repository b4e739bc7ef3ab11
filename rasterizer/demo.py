"""The built-in demo scene: a small procedural room, the same on every run.

A 4 m x 4 m checkered floor (0.5 m squares) with two walls, a red sphere, a green box,
a blue cylinder and a yellow ring, in the domain frame (+Y up, metres). Objects carry SH
bands 1-3 so that colour changes with the view direction. It is what the README
quickstart, the golden images and the benchmark (without real scenes) render.
"""
from __future__ import annotations

import numpy as np

from .scene import SH_C0, Scene

FLOOR_HALF = 2.0
SQUARE = 0.5
WALL_HEIGHT = 1.4
LIGHT, DARK = np.array([0.85, 0.82, 0.75]), np.array([0.22, 0.24, 0.28])


def _logit(p):
    return np.log(p / (1.0 - p))


def _surface(rng, points, normals, color, spacing, opacity=0.95, sh_gloss=0.0):
    """Flat Gaussians on a surface: thin along the normal, ``spacing`` wide along it."""
    n = len(points)
    points = points + rng.normal(0.0, spacing * 0.05, points.shape)
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
    return points, scales, quats, opac, sh, normals


def _grid(u_range, v_range, spacing):
    u = np.arange(u_range[0] + spacing / 2, u_range[1], spacing)
    v = np.arange(v_range[0] + spacing / 2, v_range[1], spacing)
    uu, vv = np.meshgrid(u, v, indexing="ij")
    return uu.ravel(), vv.ravel()


def _sphere_points(rng, n):
    p = rng.normal(size=(n, 3))
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def demo_scene(detail: float = 1.0) -> Scene:
    """Build the demo room (about 33k Gaussians at ``detail=1``); deterministic."""
    rng = np.random.default_rng(20261124)
    sp = 0.04 / detail
    parts = []

    # floor: a checkerboard of 0.5 m squares at y = 0
    x, z = _grid((-FLOOR_HALF, FLOOR_HALF), (-FLOOR_HALF, FLOOR_HALF), sp)
    checker = ((np.floor((x + FLOOR_HALF) / SQUARE) + np.floor((z + FLOOR_HALF) / SQUARE)) % 2).astype(bool)
    col = np.where(checker[:, None], DARK, LIGHT)
    pts = np.stack([x, np.zeros_like(x), z], 1)
    parts.append(_surface(rng, pts, np.tile([0.0, 1.0, 0.0], (len(x), 1)), col, sp))

    # back walls at z = -2 (warm grey) and x = -2 (cool grey), with a horizontal stripe
    ws = sp * 1.25
    u, v = _grid((-FLOOR_HALF, FLOOR_HALF), (0.0, WALL_HEIGHT), ws)
    stripe = ((v > 0.9) & (v < 1.0))[:, None]
    parts.append(_surface(rng, np.stack([u, v, np.full_like(u, -FLOOR_HALF)], 1),
                          np.tile([0.0, 0.0, 1.0], (len(u), 1)),
                          np.where(stripe, [0.75, 0.35, 0.2], [0.62, 0.58, 0.52]), ws))
    parts.append(_surface(rng, np.stack([np.full_like(u, -FLOOR_HALF), v, u], 1),
                          np.tile([1.0, 0.0, 0.0], (len(u), 1)),
                          np.where(stripe, [0.2, 0.45, 0.75], [0.5, 0.55, 0.6]), ws))

    # a glossy red sphere
    r, c = 0.45, np.array([0.6, 0.45, 0.5])
    d = _sphere_points(rng, 2500)
    parts.append(_surface(rng, c + r * d, d, [0.85, 0.12, 0.1], 0.035, sh_gloss=0.8))

    # a green box
    h, c = 0.35, np.array([-0.9, 0.35, -0.6])
    for axis in range(3):
        for sign in (-1.0, 1.0):
            a, b = _grid((-h, h), (-h, h), 0.035)
            p = np.zeros((len(a), 3))
            others = [k for k in range(3) if k != axis]
            p[:, axis], p[:, others[0]], p[:, others[1]] = sign * h, a, b
            nrm = np.zeros_like(p)
            nrm[:, axis] = sign
            parts.append(_surface(rng, c + p, nrm, [0.15, 0.65, 0.2], 0.035, sh_gloss=0.2))

    # a blue cylinder (side and top)
    r, hgt, c = 0.25, 0.9, np.array([-0.2, 0.0, 1.0])
    th, yy = np.meshgrid(np.arange(0, 2 * np.pi, 0.035 / r), np.arange(0.0175, hgt, 0.035), indexing="ij")
    th, yy = th.ravel(), yy.ravel()
    nrm = np.stack([np.cos(th), np.zeros_like(th), np.sin(th)], 1)
    parts.append(_surface(rng, c + np.stack([r * np.cos(th), yy, r * np.sin(th)], 1), nrm,
                          [0.15, 0.3, 0.85], 0.035, sh_gloss=0.4))
    a, b = _grid((-r, r), (-r, r), 0.03)
    keep = a * a + b * b < r * r
    top = np.stack([a[keep], np.full(keep.sum(), hgt), b[keep]], 1) + c
    parts.append(_surface(rng, top, np.tile([0.0, 1.0, 0.0], (len(top), 1)), [0.3, 0.45, 0.95], 0.03))

    # a yellow ring lying on the floor
    big, small = 0.4, 0.1
    c = np.array([1.1, small, -1.0])
    th, ph = _grid((0, 2 * np.pi), (0, 2 * np.pi), 0.09)
    ring = np.stack([(big + small * np.cos(ph)) * np.cos(th), small * np.sin(ph),
                     (big + small * np.cos(ph)) * np.sin(th)], 1)
    nrm = np.stack([np.cos(ph) * np.cos(th), np.sin(ph), np.cos(ph) * np.sin(th)], 1)
    parts.append(_surface(rng, c + ring, nrm, [0.95, 0.8, 0.1], 0.035, sh_gloss=0.5))

    cat = [np.concatenate([p[i] for p in parts]).astype(np.float32) for i in range(6)]
    means, scales, quats, opac, sh, normals = cat
    return Scene(means, scales, quats, opac, sh, np.zeros_like(normals), "<demo scene>")
