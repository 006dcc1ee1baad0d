"""Pure NumPy/OpenCV renderer of `something_synthetic` clips: frames + Something-Else boxes.

`render_clip` draws one clip from a seeded generator: a textured neutral background with static
clutter, the acted-on object(s) from an object set, and a skin-coloured hand on an arm entering
from off-frame, moved by the action's motion program. Boxes come from the drawn masks and are
returned in the released Something-Else JSON format so they take the same path as real boxes.
"""
import dataclasses

import cv2
import numpy as np

from data_prep.synthetic import actions as act
from data_prep.synthetic import motion
from data_prep.synthetic.knobs import Knobs

# Local shape coordinates are in units of the half-size; each predicate says which points are
# inside. Every shape fits in a radius of 1.25.
SHAPE_MASKS = {
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.85,
    "circle": lambda u, v: u * u + v * v <= 1.0,
    "triangle": lambda u, v: (v <= 0.8) & (v >= -1.0 + 1.9 * np.abs(u)),
    "diamond": lambda u, v: np.abs(u) + np.abs(v) <= 1.1,
    "bar": lambda u, v: (np.abs(u) <= 1.0) & (np.abs(v) <= 0.5),
    "hand": lambda u, v: u * u + (v / 1.25) ** 2 <= 1.0,
}
# Texture predicates pick the shaded pixels; the object textures are asymmetric enough to show
# rotation. The hand's darker rim and knuckle lines make it unlike any object.
TEXTURES = {
    "stripes": lambda u, v: np.floor((u + 2.0) * 2.5) % 2 == 1,
    "spot": lambda u, v: (u - 0.35) ** 2 + (v + 0.3) ** 2 < 0.16,
    "checker": lambda u, v: (np.floor((u + 2.0) * 2.0) + np.floor((v + 2.0) * 2.0)) % 2 == 1,
    "dots": lambda u, v: ((u * 1.75) % 1.0 - 0.5) ** 2 + ((v * 1.75) % 1.0 - 0.5) ** 2 < 0.08,
    "plain": lambda u, v: np.zeros(np.broadcast(u, v).shape, bool),
    "speckle": lambda u, v: np.sin(7.0 * u + 3.0 * np.cos(5.0 * v)) > 0.6,
    "hand": lambda u, v: ((u * u + (v / 1.25) ** 2 > 0.7)
                          | ((np.abs(v % 0.8 - 0.4) < 0.08) & (v < 0))),
}
_REACH = 1.25


@dataclasses.dataclass(frozen=True)
class Sprite:
    shape: str
    texture: str
    colour: tuple[int, int, int]
    shade: float = 0.5  # colour factor of the texture's shaded pixels


@dataclasses.dataclass
class Clip:
    frames: np.ndarray  # (T, H, W, 3) uint8
    annotations: list[dict]  # Something-Else format, one entry per annotated frame
    info: dict  # what was drawn (object set, sprite, motion extents), for stats and tests


def rasterise(sprite: Sprite, half: float) -> tuple[np.ndarray, np.ndarray]:
    """Sprite of half-size `half` px -> (RGB (P, P, 3), alpha (P, P)) float32, centred on the
    middle pixel. Drawn once per clip; frames only warp it (cheaper than re-evaluating shapes).
    Outside the shape RGB holds the base colour, so interpolated edges do not darken."""
    r = int(np.ceil(_REACH * half)) + 1
    d = np.arange(-r, r + 1, dtype=np.float32) / half
    u, v = d[None, :], d[:, None]
    base = np.asarray(sprite.colour, np.float32)
    shaded = TEXTURES[sprite.texture](u, v) & SHAPE_MASKS[sprite.shape](u, v)
    rgb = np.where(shaded[..., None], base * sprite.shade, base).astype(np.float32)
    return rgb, SHAPE_MASKS[sprite.shape](u, v).astype(np.float32)


def place(canvas: np.ndarray, patch: tuple[np.ndarray, np.ndarray], cx: float, cy: float,
          scale: float = 1.0, angle: float = 0.0) -> tuple[float, float, float, float] | None:
    """Composites `patch` onto `canvas` centred at (cx, cy) px (pixel i spans [i, i + 1]),
    scaled and rotated; returns the drawn mask's box (x1, y1, x2, y2) px, or None if off-canvas."""
    rgb, alpha = patch
    h, w = canvas.shape[:2]
    r = (alpha.shape[0] - 1) / 2
    reach = scale * r + 1.0
    x0, x1 = max(int(cx - reach), 0), min(int(np.ceil(cx + reach)) + 1, w)
    y0, y1 = max(int(cy - reach), 0), min(int(np.ceil(cy + reach)) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return None
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    tx = cx - 0.5 - x0 - (c * r - s * r)
    ty = cy - 0.5 - y0 - (s * r + c * r)
    m = np.array([[c, -s, tx], [s, c, ty]], np.float32)
    size = (x1 - x0, y1 - y0)
    # OpenCV calls on whole small arrays: numpy on strided windows is ~3x slower here.
    a = cv2.warpAffine(alpha, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                       borderValue=0)
    mask = a > 0.5
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return None
    colour = cv2.warpAffine(rgb, m, size, flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    canvas[y0:y1, x0:x1] = cv2.blendLinear(canvas[y0:y1, x0:x1], colour, 1.0 - a, a)
    return x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1.0, y0 + rows[-1] + 1.0


def _background(rng: np.random.Generator, size: int, k: Knobs) -> np.ndarray:
    base = np.asarray(act.NEUTRAL[rng.integers(len(act.NEUTRAL))], np.float32)
    grid = rng.normal(0.0, 1.0, (5, 5, 1)).astype(np.float32)
    tint = rng.normal(1.0, 0.15, (1, 1, 3)).astype(np.float32)
    pattern = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)[..., None]
    return np.clip(base + k.background_texture * pattern * tint, 0, 255).astype(np.float32)


def _sprite(rng: np.random.Generator, object_set: str, label: int, k: Knobs) -> tuple:
    """-> (Sprite, look): look is the object set whose palette was used, or "shared"."""
    oset = act.OBJECT_SETS[object_set]
    # Draw the same random numbers whatever the set, so that the standard and compositional
    # kinds hold identical clips apart from object appearance.
    shared, biased = rng.uniform() < k.shared_look, rng.uniform() < k.object_class_bias
    if shared:  # a look both sets use: appearance says nothing about the action group
        colours = sum((s.colours for s in act.OBJECT_SETS.values()), ())
        textures = sum((s.textures for s in act.OBJECT_SETS.values()), ())
    else:
        colours, textures = oset.colours, oset.textures
    picks = rng.integers(0, 1 << 30, 3)
    if biased and not shared:  # the class's preferred look inside this set
        picks = (label, 3 * label, label // 2)
    colour = colours[picks[0] % len(colours)]
    shape = act.SHAPES[picks[1] % len(act.SHAPES)]
    texture = textures[picks[2] % len(textures)]
    jitter = rng.integers(-15, 16, 3)
    colour = tuple(int(c) for c in np.clip(np.add(colour, jitter), 0, 255))
    return Sprite(shape, texture, colour), "shared" if shared else object_set


def _action_progress(rng: np.random.Generator, num_frames: int, k: Knobs) -> np.ndarray:
    span = max(2, int(round(num_frames * rng.uniform(*k.action_span))))
    start = int(rng.integers(0, num_frames - span + 1))
    return np.clip((np.arange(num_frames) - start) / (span - 1), 0.0, 1.0)


def _scene_offset(rng: np.random.Generator, tracks: motion.Tracks, r: float, rh: float) -> tuple:
    """Random offset that keeps every centre (plus its half-size) inside [0.1, 0.9]."""
    xs = [tracks.obj[:, 0] - r * tracks.obj[:, 2], tracks.obj[:, 0] + r * tracks.obj[:, 2],
          tracks.hand[:, 0] - rh, tracks.hand[:, 0] + rh]
    ys = [tracks.obj[:, 1] - r * tracks.obj[:, 2], tracks.obj[:, 1] + r * tracks.obj[:, 2],
          tracks.hand[:, 1] - rh, tracks.hand[:, 1] + rh]
    if tracks.cover is not None:
        rc = r * motion.COVER_SCALE
        xs += [tracks.cover[:, 0] - rc, tracks.cover[:, 0] + rc]
        ys += [tracks.cover[:, 1] - rc, tracks.cover[:, 1] + rc]
    out = []
    for lo, hi in ((min(a.min() for a in xs), max(a.max() for a in xs)),
                   (min(a.min() for a in ys), max(a.max() for a in ys))):
        a, b = 0.1 - lo, 0.9 - hi  # allowed offsets
        out.append(rng.uniform(a, b) if a <= b else (a + b) / 2)
    return tuple(out)


def _box_entry(box, scale: float, shift, noise, category: str, ident: str) -> dict:
    """A Something-Else label dict: the mask box in frame pixels, shifted and jittered."""
    x1, y1, x2, y2 = (float(b / scale + shift[i % 2] + noise[i]) for i, b in enumerate(box))
    return {"box2d": {"x1": x1, "y1": y1, "x2": x2, "y2": y2}, "category": category,
            "standard_category": "hand" if category == "hand" else "0000",
            "gt_annotation": ident}


def render_clip(rng: np.random.Generator, label: int, object_set: str, knobs: Knobs,
                frame_size: int = 48, num_frames: int = 16, video_id: str = "syn") -> Clip:
    """Draws one clip of class `label` with an object from `object_set` ('A' or 'B')."""
    k = knobs
    action = act.ACTIONS[label]
    ss = int(k.supersample)
    size = frame_size * ss
    r = rng.uniform(*k.object_size)
    rh = rng.uniform(*k.hand_size)
    angle = np.deg2rad(rng.uniform(-15, 15))
    u = _action_progress(rng, num_frames, k)
    tracks = motion.PROGRAMS[action.program](rng, u, k, r, rh, action.direction, angle)
    ox, oy = _scene_offset(rng, tracks, r, rh)
    sprite, look = _sprite(rng, object_set, label, k)
    cover_sprite = _sprite(rng, object_set, label, k)[0] if tracks.cover is not None else None

    background = _background(rng, size, k)
    clutter = []
    for _ in range(rng.integers(k.distractors[0], k.distractors[1] + 1)):
        clutter.append((Sprite(act.SHAPES[rng.integers(len(act.SHAPES))],
                               ("plain", "speckle")[rng.integers(2)],
                               act.NEUTRAL[rng.integers(len(act.NEUTRAL))]),
                        rng.uniform(0.1, 0.9, 2), rng.uniform(*k.object_size),
                        rng.uniform(0, np.pi), rng.normal(0.0, 1.0, 2)))
    clutter = [(rasterise(spr, half * size), pos, ang, vel)
               for spr, pos, half, ang, vel in clutter]
    if k.distractor_speed == 0:
        for patch, pos, ang, _ in clutter:
            place(background, patch, pos[0] * size, pos[1] * size, 1.0, ang)
    skin = np.clip(np.add(act.SKIN, rng.integers(-20, 21, 3)), 0, 255)
    hand = Sprite("hand", "hand", tuple(int(c) for c in skin), shade=0.75)
    sleeve = act.SLEEVES[rng.integers(len(act.SLEEVES))]
    shoulder = np.array([rng.choice([-0.3, 1.3]), 1.3]) * size
    # Rasterise at the largest size a sprite reaches, so warps only ever shrink it.
    obj_half = r * size * tracks.obj[:, 2].max()
    obj_patch = rasterise(sprite, obj_half)
    hand_half = rh * size * tracks.hand[:, 2].max()
    hand_patch = rasterise(hand, hand_half)
    cover_patch = (rasterise(cover_sprite, r * motion.COVER_SCALE * size)
                   if cover_sprite is not None else None)

    frames = np.empty((num_frames, frame_size, frame_size, 3), np.float32)
    annotations = []
    for t in range(num_frames):
        canvas = background.copy()
        for patch, pos, ang, vel in clutter if k.distractor_speed else ():
            p = (pos + vel * k.distractor_speed * t / frame_size) * size
            place(canvas, patch, p[0], p[1], 1.0, ang)
        hx, hy = (tracks.hand[t, 0] + ox) * size, (tracks.hand[t, 1] + oy) * size
        cv2.line(canvas, (int(hx), int(hy)), (int(shoulder[0]), int(shoulder[1])), sleeve,
                 thickness=max(1, int(1.2 * rh * size)))
        boxes = []
        o = tracks.obj[t]
        box = place(canvas, obj_patch, (o[0] + ox) * size, (o[1] + oy) * size,
                    r * o[2] * size / obj_half, o[3])
        if box is not None:
            boxes.append((box, "object", "object 0"))
        if cover_patch is not None:
            cx, cy = (tracks.cover[t] + (ox, oy)) * size
            box = place(canvas, cover_patch, cx, cy, 1.0, angle)
            if box is not None:
                boxes.append((box, "object", "object 1"))
        box = place(canvas, hand_patch, hx, hy, rh * tracks.hand[t, 2] * size / hand_half)
        if box is not None:
            boxes.append((box, "hand", "object hand"))

        frame = cv2.resize(canvas, (frame_size, frame_size), interpolation=cv2.INTER_AREA)
        shift = np.zeros(2)
        if k.camera_jitter:
            shift = rng.normal(0.0, k.camera_jitter, 2)
            m = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
            frame = cv2.warpAffine(frame, m, (frame_size, frame_size),
                                   borderMode=cv2.BORDER_REFLECT)
        frames[t] = frame

        if rng.uniform() < k.box_drop:
            continue
        noise = rng.normal(0.0, k.box_jitter * frame_size, (len(boxes), 4))
        labels = [_box_entry(box, ss, shift, noise[i], category, ident)
                  for i, (box, category, ident) in enumerate(boxes)]
        annotations.append({"name": f"{video_id}/{t + 1:04d}.jpg", "labels": labels,
                            "nr_instances": len(labels)})
    frames += k.pixel_noise * rng.standard_normal(frames.shape, dtype=np.float32)
    frames = np.clip(np.round(frames), 0, 255).astype(np.uint8)

    info = {"object_set": object_set, "look": look, "group": action.group, "shape": sprite.shape,
            "texture": sprite.texture, "colour": sprite.colour,
            "object_travel": float(np.abs(np.diff(tracks.obj[:, :2], axis=0)).sum()),
            "hand_travel": float(np.abs(np.diff(tracks.hand[:, :2], axis=0)).sum())}
    return Clip(frames=frames, annotations=annotations, info=info)
