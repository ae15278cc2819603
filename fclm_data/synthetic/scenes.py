"""Synthetic scenes: shapes with colour, size, texture and position, each with text about it.

The generators in this package write these scenes in the *official release formats* (COCO
folders, refer pickles, Describe-Anything tars, ...), so tests, the README demo and benchmarks
exercise the real readers without downloading anything. Captions are built from the attributes,
which makes the data learnable (the learnability benchmark trains on it); :class:`SceneSpec` sets how hard a
scene is (object count, palette, sizes, noise, whether objects may share colour and shape).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
SHAPES = ("circle", "square", "triangle", "rectangle")
TEXTURES = ("plain", "striped", "dotted")
SIZES = ("small", "medium", "large")
CATEGORY_IDS = {shape: i + 1 for i, shape in enumerate(SHAPES)}
#: object radius as a fraction of the image's short side, per size
RADIUS = {"small": 0.07, "medium": 0.12, "large": 0.18}


@dataclass(frozen=True)
class SceneSpec:
    """How hard a scene is. The defaults are the toolkit's demo scenes (byte-identical to before the spec)."""

    min_objects: int = 1
    max_objects: int = 4
    colours: tuple[str, ...] = tuple(COLOURS)  #: the palette objects draw from
    shapes: tuple[str, ...] = SHAPES
    textures: tuple[str, ...] = TEXTURES
    sizes: tuple[str, ...] = SIZES
    radius_scale: float = 1.0  #: multiplies :data:`RADIUS` (larger objects are easier to segment)
    noise: float = 6.0  #: std of the background's pixel noise
    #: what no two objects of a scene share: "colour+shape" (so "the red circle" is never ambiguous), "colour"
    #: (a colour names one object), or None
    unique: str | None = None

    def __post_init__(self) -> None:
        if self.unique not in (None, "colour", "colour+shape"):
            raise ValueError(f"unique must be None, 'colour' or 'colour+shape', got {self.unique!r}")


@dataclass
class SceneObject:
    shape: str
    colour: str
    texture: str
    size: str  #: small | medium | large
    polygon: list[float]  #: COCO polygon [x1, y1, x2, y2, ...] in absolute pixels
    box: list[float]  #: [x, y, w, h]
    position: str  #: e.g. "upper left"

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    def expression(self) -> str:
        """A short referring expression (RefCOCO style)."""
        return f"{self.size} {self.colour} {self.shape} on the {self.position.split()[-1]}"

    def caption(self) -> str:
        """A detailed localized caption (Describe-Anything style)."""
        texture = {"plain": "a plain, even surface", "striped": "dark diagonal stripes", "dotted": "small round dots"}
        return (
            f"A {self.size} {self.colour} {self.shape} with {texture[self.texture]}, "
            f"placed in the {self.position} part of the picture. Its edges are sharp and its colour is uniform."
        )


@dataclass
class Scene:
    width: int
    height: int
    objects: list[SceneObject]
    image: Image.Image

    def jpeg_bytes(self, quality: int = 90) -> bytes:
        buf = io.BytesIO()
        self.image.save(buf, "JPEG", quality=quality)
        return buf.getvalue()

    def png_bytes(self) -> bytes:
        buf = io.BytesIO()
        self.image.save(buf, "PNG")
        return buf.getvalue()


def _position(cx: float, cy: float, width: int, height: int) -> str:
    vertical = "upper" if cy < height / 3 else "lower" if cy > 2 * height / 3 else "middle"
    horizontal = "left" if cx < width / 3 else "right" if cx > 2 * width / 3 else "centre"
    return f"{vertical} {horizontal}"


def _polygon(shape: str, cx: float, cy: float, r: float, aspect: float) -> list[tuple[float, float]]:
    if shape == "circle":
        return [(cx + r * math.cos(t), cy + r * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 24, endpoint=False)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r * 0.95, cy + r * 0.8), (cx - r * 0.95, cy + r * 0.8)]
    rx, ry = (r, r) if shape == "square" else (r * aspect, r / aspect)
    return [(cx - rx, cy - ry), (cx + rx, cy - ry), (cx + rx, cy + ry), (cx - rx, cy + ry)]


def _background(rng: np.random.Generator, width: int, height: int, noise: float = 6.0) -> Image.Image:
    """Smooth gradient plus mild noise: JPEG sizes resemble photos more than a flat fill does."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(60, 190, size=3)
    tilt = rng.uniform(-0.15, 0.15, size=(3, 2))
    channels = [base[c] + tilt[c, 0] * x + tilt[c, 1] * y + rng.normal(0, noise, (height, width)) for c in range(3)]
    return Image.fromarray(np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8))


def _texture(draw: ImageDraw.ImageDraw, obj: SceneObject, colour: tuple[int, int, int]) -> None:
    x, y, w, h = obj.box
    dark = tuple(max(0, c - 90) for c in colour)
    if obj.texture == "striped":  # drawn over the box; the caller pastes through the shape's mask
        for offset in range(int(-h), int(w), 8):
            draw.line([(x + offset, y + h), (x + offset + h, y)], fill=dark, width=2)
    elif obj.texture == "dotted":
        for dx in range(int(x) + 4, int(x + w) - 2, 9):
            for dy in range(int(y) + 4, int(y + h) - 2, 9):
                draw.ellipse([dx - 1.5, dy - 1.5, dx + 1.5, dy + 1.5], fill=dark)


def make_scene(
    rng: np.random.Generator, width: int = 320, height: int = 240, max_objects: int = 4, spec: SceneSpec | None = None
) -> Scene:
    """A scene of 1..max_objects non-overlapping shapes on a textured background (``spec`` overrides both)."""
    spec = spec or SceneSpec(max_objects=max_objects)
    image = _background(rng, width, height, spec.noise)
    canvas = Image.new("RGB", (width, height))
    canvas.paste(image)
    objects: list[SceneObject] = []
    boxes: list[tuple[float, float, float, float]] = []
    n = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    short = min(width, height)
    for _ in range(n * 6):
        if len(objects) == n:
            break
        size = str(rng.choice(list(spec.sizes)))
        r = short * RADIUS[size] * spec.radius_scale
        cx, cy = rng.uniform(r + 2, width - r - 2), rng.uniform(r + 2, height - r - 2)
        shape = str(rng.choice(list(spec.shapes)))
        points = _polygon(shape, cx, cy, r, float(rng.uniform(1.3, 1.7)))
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        box = (min(xs), min(ys), max(xs), max(ys))
        if not (box[0] >= 1 and box[1] >= 1 and box[2] <= width - 1 and box[3] <= height - 1):
            continue
        if any(not (box[2] < b[0] - 3 or box[0] > b[2] + 3 or box[3] < b[1] - 3 or box[1] > b[3] + 3) for b in boxes):
            continue
        colour = str(rng.choice(list(spec.colours)))
        if _clashes(spec.unique, colour, shape, objects):
            continue
        boxes.append(box)
        obj = SceneObject(
            shape=shape,
            colour=colour,
            texture=str(rng.choice(list(spec.textures))),
            size=size,
            polygon=[round(v, 2) for p in points for v in p],
            box=[round(box[0], 2), round(box[1], 2), round(box[2] - box[0], 2), round(box[3] - box[1], 2)],
            position=_position(cx, cy, width, height),
        )
        layer = Image.new("RGB", (width, height))
        draw = ImageDraw.Draw(layer)
        draw.polygon(points, fill=COLOURS[colour])
        _texture(draw, obj, COLOURS[colour])
        shape_mask = Image.new("L", (width, height), 0)
        ImageDraw.Draw(shape_mask).polygon(points, fill=255)
        canvas.paste(layer, (0, 0), shape_mask)
        objects.append(obj)
    return Scene(width, height, objects, canvas)


def _clashes(unique: str | None, colour: str, shape: str, objects: list[SceneObject]) -> bool:
    """Whether a new object would break the spec's uniqueness rule."""
    if unique == "colour":
        return any(o.colour == colour for o in objects)
    if unique == "colour+shape":
        return any(o.colour == colour and o.shape == shape for o in objects)
    return False
