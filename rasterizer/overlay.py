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


#: the smallest image (width, height) the scale bar and axis marker fit on legibly
MIN_SIZE = (160, 90)


def fits(width: int, height: int) -> bool:
    return width >= MIN_SIZE[0] and height >= MIN_SIZE[1]


def draw_overlay(rgb: np.ndarray, camera: Camera) -> tuple[np.ndarray, ScaleBar]:
    """``rgb`` (H, W, 3 floats in [0, 1], the view of the orthographic ``camera``) with the scale bar
    (bottom left) and the axis marker (bottom right) composited over it."""
    if not camera.is_ortho:
        raise ValueError("a metric scale bar needs an orthographic camera")
    h, w = rgb.shape[:2]
    k = min(w, h) / 720.0
    pad, thick = max(4, round(14 * k)), max(2, round(6 * k))
    font = ImageFont.load_default(size=max(10, round(22 * k)))
    stroke = max(1, round(2 * k))
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    plate = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw, plates = ImageDraw.Draw(layer), ImageDraw.Draw(plate)
    text = dict(font=font, stroke_width=stroke)

    # scale bar, bottom left: the bar (rows y0b .. y0b + thick - 1, columns x0 .. x1 - 1), end ticks
    # rising above it, the label above them
    length = round_length(BAR_SHARE * w / camera.fx)
    pixels = length * camera.fx
    label = length_label(length)
    x0, x1 = 2 * pad, 2 * pad + round(pixels)
    y0b = h - 2 * pad - thick
    tick = max(2, thick // 2)
    rects = [(x0, y0b, x1 - 1, y0b + thick - 1),
             (x0, y0b - thick, x0 + tick - 1, y0b - 1), (x1 - tick, y0b - thick, x1 - 1, y0b - 1)]
    label_at = (x0, y0b - thick - pad // 2)
    lb = draw.textbbox(label_at, label, anchor="lb", **text)
    plates.rounded_rectangle((x0 - pad, lb[1] - pad // 2, max(x1, lb[2]) + pad, y0b + thick + pad),
                             radius=pad // 2, fill=PLATE)
    for r in rects:
        draw.rectangle((r[0] - stroke, r[1] - stroke, r[2] + stroke, r[3] + stroke), fill=OUTLINE)
    for r in rects:
        draw.rectangle(r, fill=WHITE)
    draw.text(label_at, label, fill=WHITE, anchor="lb", stroke_fill=OUTLINE, **text)
    bar = ScaleBar(length, pixels, label, x0, y0b + thick // 2)

    # axis marker, bottom right: where the world axes point in the image
    arm = round(46 * k)
    names = [axis_name(camera.world_to_camera[0, :3]), axis_name(-camera.world_to_camera[1, :3])]
    widths = [draw.textbbox((0, 0), n or "", anchor="lm", **text)[2] for n in names]
    ox, oy = w - 2 * pad - arm - widths[0] - pad // 2, h - 2 * pad
    top = oy - arm - pad // 2 - (lb[3] - lb[1])
    plates.rounded_rectangle((ox - pad - max(0, widths[1] // 2 - pad), top - pad // 2, w - pad, h - pad),
                             radius=pad // 2, fill=PLATE)
    for name, (dx, dy) in zip(names, ((1, 0), (0, -1))):
        color = AXIS_COLORS[name[-1]] if name else WHITE
        tip = (ox + dx * arm, oy + dy * arm)
        _arrow(draw, (ox, oy), tip, color, max(2, round(3 * k)), stroke)
        if name:
            at, anchor = ((tip[0] + pad // 2, tip[1]), "lm") if dx else ((tip[0], tip[1] - pad // 2), "mb")
            draw.text(at, name, fill=color, anchor=anchor, stroke_fill=OUTLINE, **text)

    strip = max(0, min(lb[1], top) - pad)         # everything drawn lies below this row
    over = Image.alpha_composite(plate.crop((0, strip, w, h)), layer.crop((0, strip, w, h)))
    a = np.asarray(over, np.float32) / 255.0
    out = rgb.copy()
    out[strip:] = rgb[strip:] * (1.0 - a[..., 3:]) + a[..., :3] * a[..., 3:]
    return out, bar


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
