"""The synthetic video world: captioned clips with known generative factors.

Everything the scorers need to know about a clip is in its factors (shape, colour, count, relation, motion,
background, camera pan), so the offline `synthetic` backend can read VBench-like dimensions against ground truth.
Rendering is vectorised numpy with 4x supersampling (anti-aliased edges); the same seed gives the same pixels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import zlib

import numpy as np

SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (40, 190, 60),
    "blue": (40, 80, 235),
    "yellow": (240, 220, 40),
    "magenta": (215, 50, 215),
    "cyan": (40, 215, 225),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "gray": (120, 120, 120),
    "black": (25, 25, 25),
    "white": (235, 235, 235),
    "brown": (105, 75, 45),
}
TEXTURES: tuple[str, ...] = ("none", "stripes", "checker")
DIRECTIONS: dict[str, tuple[float, float]] = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0),
                                              "down": (0.0, 1.0)}
SPEEDS: dict[str, float] = {"slow": 0.012, "fast": 0.025}  # fraction of the frame per frame in a 17-frame clip
# Longer clips move proportionally slower, so an object travels the same distance over the whole clip at any clip
# length (a fast object crosses 40% of the frame, a slow one 19%): objects stay in the canvas for 33 or 65 frames,
# the prompted motion stays visible, and `fast` stays twice `slow`.
REFERENCE_FRAMES = 17
PAN_SPEEDS: dict[str, float] = {"none": 0.0, "left": 0.01, "right": -0.01}  # per frame in a 17-frame clip
RELATIONS: dict[str, tuple[float, float]] = {  # offset direction of object 0 relative to object 1
    "to the left of": (-1.0, 0.0),
    "to the right of": (1.0, 0.0),
    "above": (0.0, -1.0),
    "below": (0.0, 1.0),
}
SUPERSAMPLE = 4


@dataclass
class SceneObject:
    shape: str
    colour: str
    x: float  # centre at frame 0, fraction of width
    y: float  # centre at frame 0, fraction of height
    size: float  # radius as a fraction of the frame's shorter side


@dataclass
class Factors:
    """Ground truth of one clip. Velocities are fractions of the frame per frame."""

    objects: list[SceneObject]
    direction: str = "static"  # left/right/up/down/static (all objects move together)
    speed: str = "static"  # slow/fast/static
    relation: str | None = None  # relation of object 0 to object 1
    background: str = "gray"
    texture: str = "none"
    pan: str = "none"  # camera pan: none/left/right
    clip_frames: int = REFERENCE_FRAMES  # frames of the clip the velocity is scaled to (see SPEEDS)

    @property
    def velocity(self) -> tuple[float, float]:
        """Displacement per frame (fractions of the frame's width and height)."""
        if self.direction == "static":
            return (0.0, 0.0)
        dx, dy = DIRECTIONS[self.direction]
        s = SPEEDS[self.speed] * speed_scale(self.clip_frames)
        return (dx * s, dy * s)

    @property
    def pan_velocity(self) -> float:
        """Horizontal on-screen shift of the whole scene per frame from the camera pan (camera left -> scene
        moves right), scaled with the clip length like the objects' speeds."""
        return PAN_SPEEDS[self.pan] * speed_scale(self.clip_frames)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Factors":
        d = dict(d)
        d["objects"] = [SceneObject(**o) for o in d["objects"]]
        return Factors(**d)


def speed_scale(frames: int) -> float:
    """Per-frame speed factor of a clip of `frames` frames: 1 up to REFERENCE_FRAMES, then (17 - 1) / (frames - 1)
    so the travel over the clip stays that of a 17-frame clip."""
    return min(1.0, (REFERENCE_FRAMES - 1) / max(1, frames - 1))


def _place(rng: np.random.Generator, n: int, size: float, travel: tuple[float, float], relation: str | None):
    """Centres at frame 0 so every object stays fully inside the frame for the whole clip."""
    lo_x, hi_x = size + max(0.0, -travel[0]), 1 - size - max(0.0, travel[0])
    lo_y, hi_y = size + max(0.0, -travel[1]), 1 - size - max(0.0, travel[1])
    if n == 1:
        return [(rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y))]
    # object 0 is offset from object 1 along the relation axis by at least 2.2 radii
    ox, oy = RELATIONS[relation]
    gap = 2.3 * size
    pts = []
    for _ in range(200):
        x1, y1 = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)
        x0 = x1 + ox * gap + rng.uniform(-0.05, 0.05) * (ox == 0)
        y0 = y1 + oy * gap + rng.uniform(-0.05, 0.05) * (oy == 0)
        if not (lo_x <= x0 <= hi_x and lo_y <= y0 <= hi_y):
            continue
        pts = [(x0, y0), (x1, y1)]
        if n == 3:  # third object away from the first two
            for _ in range(100):
                x2, y2 = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)
                if all((x2 - a) ** 2 + (y2 - b) ** 2 > (2.2 * size) ** 2 for a, b in pts):
                    pts.append((x2, y2))
                    break
            else:
                continue
        return pts
    raise RuntimeError("could not place objects; lower data.synthetic.max_objects")


def sample_factors(rng: np.random.Generator, max_objects: int = 3, static_fraction: float = 0.2,
                   camera_pan_prob: float = 0.2, texture_prob: float = 0.3, frames: int = 17,
                   still: bool = False) -> Factors:
    """Draw the factors of one clip (or, with `still`, one image: no motion, no pan)."""
    n = int(rng.integers(1, max_objects + 1))
    size = {1: 0.24, 2: 0.17, 3: 0.15}[n]
    static = still or rng.random() < static_fraction
    direction = "static" if static else str(rng.choice(list(DIRECTIONS)))
    # several objects move slowly and are related across the motion axis, so they all stay in frame
    speed = "static" if static else ("slow" if n >= 2 else str(rng.choice(list(SPEEDS))))
    relations = list(RELATIONS)
    if n >= 2 and direction != "static":
        moving_x = DIRECTIONS[direction][0] != 0
        relations = [r for r in relations if (RELATIONS[r][0] == 0) == moving_x]
    relation = str(rng.choice(relations)) if n >= 2 else None
    pan = "none" if still or rng.random() >= camera_pan_prob else str(rng.choice(["left", "right"]))
    texture = str(rng.choice(TEXTURES[1:])) if rng.random() < texture_prob else "none"
    f = Factors(objects=[], direction=direction, speed=speed, relation=relation,
                background=str(rng.choice(list(BACKGROUNDS))), texture=texture, pan=pan, clip_frames=frames)
    vx, vy = f.velocity
    travel = ((vx + f.pan_velocity) * (frames - 1), vy * (frames - 1))  # the pan moves the objects too
    if abs(travel[0]) > 1 - 2 * size:  # a pan along a fast motion would carry the object out: no pan
        f.pan = "none"
        travel = (vx * (frames - 1), vy * (frames - 1))
    centres = _place(rng, n, size, travel, relation)
    colours = rng.choice(list(COLOURS), size=n, replace=False)
    shapes = rng.choice(list(SHAPES), size=n, replace=True)
    f.objects = [SceneObject(str(s), str(c), float(x), float(y), size)
                 for s, c, (x, y) in zip(shapes, colours, centres)]
    return f


def factors_from_spec(shape: str, colour: str, direction: str = "static", speed: str = "slow",
                      background: str = "gray", relation: str | None = None, other_shape: str | None = None,
                      other_colour: str | None = None, frames: int = 17, x: float | None = None,
                      y: float | None = None) -> Factors:
    """Factors from a caption-level spec (what a prompt suite states as ground truth). Deterministic."""
    for name, value, vocab in (("shape", shape, SHAPES), ("colour", colour, COLOURS),
                               ("background", background, BACKGROUNDS)):
        if value not in vocab:
            raise ValueError(f"factors_from_spec: {name}={value!r}; expected one of {list(vocab)}")
    if direction != "static" and direction not in DIRECTIONS:
        raise ValueError(f"factors_from_spec: direction={direction!r}; expected static or one of {list(DIRECTIONS)}")
    # zlib.crc32, not hash(): str hashes are salted per process, and ground truth must not change between runs
    key = "|".join(map(str, (shape, colour, direction, background, relation, other_shape, other_colour)))
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    f = Factors(objects=[], direction=direction, speed="static" if direction == "static" else speed,
                relation=relation, background=background, clip_frames=frames)
    vx, vy = f.velocity
    travel = (vx * (frames - 1), vy * (frames - 1))
    if relation is None:
        size = 0.24
        (cx, cy), = _place(rng, 1, size, travel, None)
        f.objects = [SceneObject(shape, colour, x if x is not None else cx, y if y is not None else cy, size)]
    else:
        size = 0.17
        (x0, y0), (x1, y1) = _place(rng, 2, size, travel, relation)
        f.objects = [SceneObject(shape, colour, x0, y0, size),
                     SceneObject(other_shape or "circle", other_colour or "blue", x1, y1, size)]
    return f


def caption(f: Factors) -> str:
    """VBench-style caption, e.g. 'a red square moving left on a gray background'."""
    o = f.objects
    def name(obj: SceneObject) -> str:
        return f"{obj.colour} {obj.shape}"
    if len(o) == 1:
        subject = f"a {name(o[0])}"
    elif len(o) == 2:
        subject = f"a {name(o[0])} {f.relation} a {name(o[1])}"
    else:
        subject = f"a {name(o[0])} {f.relation} a {name(o[1])}, and a {name(o[2])}"
    if f.direction == "static":
        text = (f"a static {subject[2:]}" if len(o) == 1 else f"{subject}, static")
    else:
        text = f"{subject} moving {f.direction}" + (" quickly" if f.speed == "fast" else "")
    bg = f"{f.background} background" if f.texture == "none" else f"{f.background} {f.texture} background"
    text += f" on a {bg}"
    if f.pan != "none":
        text += f", camera panning {f.pan}"
    return text


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Inside-test in units of the object's radius (y points down)."""
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.85
    if shape == "circle":
        return dx * dx + dy * dy <= 1.0
    if shape == "triangle":
        return (dy <= 0.8) & (np.abs(dx) <= (dy + 1.0) / 1.8 * 1.0) & (dy >= -1.0)
    if shape == "cross":
        return ((np.abs(dx) <= 0.3) & (np.abs(dy) <= 1.0)) | ((np.abs(dy) <= 0.3) & (np.abs(dx) <= 1.0))
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def render_clip(f: Factors, height: int, width: int, frames: int) -> np.ndarray:
    """Render uint8 frames (T, H, W, 3). Objects move with the factors' velocity; a camera pan shifts the
    whole scene (background texture and objects) the other way."""
    s = SUPERSAMPLE
    H, W = height * s, width * s
    short = min(height, width)
    ys = (np.arange(H) + 0.5) / H  # fractions of the frame
    xs = (np.arange(W) + 0.5) / W
    t = np.arange(frames, dtype=np.float64)
    shift = t * f.pan_velocity  # (T,)
    bg = np.array(BACKGROUNDS[f.background], dtype=np.float64)
    # background with optional texture: (T, H, W, 3)
    if f.texture == "none":
        img = np.broadcast_to(bg, (frames, H, W, 3)).copy()
    else:
        period = 0.25
        u = (xs[None, :] - shift[:, None]) / period  # (T, W)
        v = ys / period  # (H,)
        if f.texture == "stripes":
            pat = (np.floor(u) % 2)[:, None, :] * np.ones((1, H, 1))
        else:
            pat = (np.floor(u)[:, None, :] + np.floor(v)[None, :, None]) % 2
        img = bg + (pat[..., None] * 2 - 1) * 18.0
    vx, vy = f.velocity
    for obj in f.objects:
        cx = obj.x + vx * t + shift  # (T,)
        cy = obj.y + vy * t
        r_x = obj.size * short / width
        r_y = obj.size * short / height
        dx = (xs[None, None, :] - cx[:, None, None]) / r_x  # (T,1,W)
        dy = (ys[None, :, None] - cy[:, None, None]) / r_y  # (T,H,1)
        mask = _shape_mask(obj.shape, dx, dy)  # (T,H,W)
        img[mask] = np.array(COLOURS[obj.colour], dtype=np.float64)
    # box-downsample the supersampled frame (anti-aliasing)
    img = img.reshape(frames, height, s, width, s, 3).mean(axis=(2, 4))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
