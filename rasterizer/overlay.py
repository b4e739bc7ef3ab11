"""The top preview's overlay: a metric scale bar and an axis marker, drawn with Pillow's ``ImageDraw``.

Both sit on a translucent dark plate and are drawn in white (the marker's arrows in the usual axis
colours) with a dark outline, so they stay legible on dark and light scenes alike. The scale bar
is a round length (1, 2 or 5 times a power of ten) close to a fifth of the image width, labelled
in metres; its length in pixels is that length times the orthographic camera's pixels per unit.
The marker shows which world axes point right and up in the image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .camera import Camera

BAR_SHARE = 0.2                      # the scale bar is about this share of the image width
WHITE, OUTLINE, PLATE = (255, 255, 255, 255), (20, 20, 20, 255), (0, 0, 0, 115)
AXIS_COLORS = {"x": (255, 90, 80, 255), "y": (110, 230, 110, 255), "z": (95, 160, 255, 255)}


@dataclass(frozen=True)
class ScaleBar:
    length: float                     # world units (metres in the domain frame)
    pixels: float                     # its length in image pixels: length · camera.fx
    label: str                        # e.g. "2 m"
    x0: int                           # left end of the bar (pixel column)
    y: int                            # the bar's centre row


def round_length(target: float) -> float:
    """The 1-2-5 series value closest to ``target`` (on a log scale)."""
    k = math.floor(math.log10(target))
    options = [m * 10.0 ** e for e in (k - 1, k, k + 1) for m in (1.0, 2.0, 5.0)]
    return min(options, key=lambda v: abs(math.log(v / target)))


def length_label(length: float) -> str:
    return f"{length:g} m"


def axis_name(v: np.ndarray) -> str | None:
    """``x``, ``-z``, … for a direction within ~25° of a world axis, else None."""
    k = int(np.argmax(np.abs(v)))
    if abs(v[k]) < 0.9:
        return None
    return ("" if v[k] > 0 else "-") + "xyz"[k]


def draw_overlay(rgb: np.ndarray, camera: Camera) -> tuple[np.ndarray, ScaleBar]:
    """``rgb`` (H, W, 3 floats in [0, 1], the view of the orthographic ``camera``) with the scale bar
    (bottom left) and the axis marker (bottom right) composited over it."""
    if not camera.is_ortho:
        raise ValueError("a metric scale bar needs an orthographic camera")
    h, w = rgb.shape[:2]
    k = min(w, h) / 720.0
    pad, thick = max(4, round(14 * k)), max(2, round(6 * k))
    font = ImageFont.load_default(size=max(10, round(22 * k)))
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    plate = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw, plates = ImageDraw.Draw(layer), ImageDraw.Draw(plate)
    stroke = max(1, round(2 * k))

    # scale bar, bottom left: label above the bar, ticks at both ends
    length = round_length(BAR_SHARE * w / camera.fx)
    pixels = length * camera.fx
    label = length_label(length)
    tw, th = _text_size(draw, label, font, stroke)
    x0 = 2 * pad
    y = h - 2 * pad - thick // 2
    x1 = x0 + round(pixels)
    top = y - thick - th - pad // 2
    plates.rounded_rectangle((x0 - pad, top - pad, max(x1, x0 + tw) + pad, h - pad), radius=pad // 2, fill=PLATE)
    y0b = y - thick // 2                            # the bar: rows y0b .. y0b + thick - 1, columns x0 .. x1 - 1
    tick = max(2, thick // 2)
    rects = [(x0, y0b, x1 - 1, y0b + thick - 1),     # the bar, then the end ticks rising above it
             (x0, y0b - thick, x0 + tick - 1, y0b - 1), (x1 - tick, y0b - thick, x1 - 1, y0b - 1)]
    for r in rects:
        draw.rectangle((r[0] - stroke, r[1] - stroke, r[2] + stroke, r[3] + stroke), fill=OUTLINE)
    for r in rects:
        draw.rectangle(r, fill=WHITE)
    draw.text((x0, top), label, font=font, fill=WHITE, stroke_width=stroke, stroke_fill=OUTLINE)
    bar = ScaleBar(length, pixels, label, x0, y)

    # axis marker, bottom right: where the world axes point in the image
    right = camera.world_to_camera[0, :3]
    up_img = -camera.world_to_camera[1, :3]
    arm = round(46 * k)
    ox, oy = w - 2 * pad - arm - tw // 2, h - 2 * pad - th // 2
    box = (ox - th, oy - arm - th - pad // 2, w - pad, h - pad)
    plates.rounded_rectangle(box, radius=pad // 2, fill=PLATE)
    for vec, (dx, dy) in ((right, (1, 0)), (up_img, (0, -1))):
        name = axis_name(vec)
        color = AXIS_COLORS[name[-1]] if name else WHITE
        tip = (ox + dx * arm, oy + dy * arm)
        _arrow(draw, (ox, oy), tip, color, max(2, round(3 * k)), stroke)
        if name:
            text_at = (tip[0] + pad // 2, tip[1] - th // 2) if dx else (tip[0] - tw // 4, tip[1] - th - pad // 3)
            draw.text(text_at, name, font=font, fill=color, stroke_width=stroke, stroke_fill=OUTLINE)

    over = Image.alpha_composite(plate, layer)
    a = np.asarray(over, np.float32) / 255.0
    out = rgb * (1.0 - a[..., 3:]) + a[..., :3] * a[..., 3:]
    return out.astype(np.float32), bar


def _text_size(draw, text, font, stroke) -> tuple[int, int]:
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)
    return x1 - x0, y1 - y0


def _arrow(draw, start, tip, color, width, stroke) -> None:
    sx, sy = start
    tx, ty = tip
    d = np.array([tx - sx, ty - sy], float)
    d /= np.linalg.norm(d)
    n = np.array([-d[1], d[0]])
    head = 3.5 * width
    base = np.array([tx, ty]) - d * head
    tri = [tuple(np.array([tx, ty]) + d * stroke), tuple(base + n * (head * 0.6 + stroke)),
           tuple(base - n * (head * 0.6 + stroke))]
    draw.line((sx, sy, *base), fill=OUTLINE, width=width + 2 * stroke)
    draw.polygon(tri, fill=OUTLINE)
    draw.line((sx, sy, *base), fill=color, width=width)
    draw.polygon([(tx, ty), tuple(base + n * head * 0.6), tuple(base - n * head * 0.6)], fill=color)
