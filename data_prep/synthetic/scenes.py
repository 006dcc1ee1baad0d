"""Still scenes of the synthetic world, for pretraining: the miniature's ImageNet.

A scene is one frame drawn with the clip renderer's primitives (`render.py`): a textured
background with clutter, an object with a look pooled from both object sets, sometimes a second
object behind it, and sometimes a hand on its arm. Its labels say what is in the picture and
where (object shape, colour, texture, size, position; hand present and where; second object
present), never what happens: there are no actions in a still image, so pretraining on scenes
shares no label with the benchmark. Scenes use their own seed stream (`SCENE_STREAM`), apart
from every clip of `something_synthetic`.
"""
import dataclasses

import cv2
import numpy as np

from data_prep import records
from data_prep.synthetic import actions as act
from data_prep.synthetic.knobs import Knobs
from data_prep.synthetic.render import Sprite, _background, place, rasterise

# Entropy word that separates scene generators from the clip generators ([seed, split, index]).
SCENE_STREAM = 7_301
COLOURS = sum((s.colours for s in act.OBJECT_SETS.values()), ())
TEXTURES = sum((s.textures for s in act.OBJECT_SETS.values()), ())
# Object half-size range: wider than the clips' (0.10-0.14) so that the scale a "towards the
# camera" clip reaches is seen too.
OBJECT_SIZE = (0.07, 0.20)
SIZE_BINS = 4
P_HAND, P_SECOND = 0.75, 0.3
FRAME_SIZE = 48  # as the clips of something_synthetic, so crops match the video pipeline's


@dataclasses.dataclass
class Scene:
    image: np.ndarray  # (S, S, 3) uint8
    shape: int  # index into actions.SHAPES
    colour: int  # index into COLOURS (palettes of both object sets)
    texture: int  # index into TEXTURES
    size: int  # object half-size bin of OBJECT_SIZE, 0..SIZE_BINS-1
    object_box: np.ndarray  # (4,) float32 x1, y1, x2, y2 normalised (the records' box order)
    hand_box: np.ndarray  # (4,) float32, zeros when there is no hand
    has_hand: bool
    has_second: bool


def scene_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SCENE_STREAM, index])


def _box(px_box, size: float) -> np.ndarray:
    return np.array([float(v) / size for v in px_box], np.float32)


def render_scene(rng: np.random.Generator, frame_size: int = 48,
                 knobs: Knobs | None = None) -> Scene:
    """Draws one still scene; the same rng state gives the same scene."""
    k = knobs or Knobs()
    ss = int(k.supersample)
    size = frame_size * ss
    canvas = _background(rng, size, k)
    for _ in range(rng.integers(k.distractors[0], k.distractors[1] + 1)):
        clutter = Sprite(act.SHAPES[rng.integers(len(act.SHAPES))],
                         ("plain", "speckle")[rng.integers(2)],
                         act.NEUTRAL[rng.integers(len(act.NEUTRAL))])
        pos = rng.uniform(0.1, 0.9, 2) * size
        place(canvas, rasterise(clutter, rng.uniform(*k.object_size) * size), pos[0], pos[1],
              1.0, rng.uniform(0, np.pi))

    def look():
        shape, colour, texture = (int(rng.integers(n)) for n in
                                  (len(act.SHAPES), len(COLOURS), len(TEXTURES)))
        jittered = tuple(int(c) for c in np.clip(np.add(COLOURS[colour],
                                                        rng.integers(-15, 16, 3)), 0, 255))
        return Sprite(act.SHAPES[shape], TEXTURES[texture], jittered), (shape, colour, texture)

    has_second = bool(rng.uniform() < P_SECOND)
    if has_second:
        sprite, _ = look()
        pos = rng.uniform(0.15, 0.85, 2) * size
        place(canvas, rasterise(sprite, rng.uniform(*OBJECT_SIZE) * size), pos[0], pos[1], 1.0,
              rng.uniform(0, 2 * np.pi))
    sprite, (shape, colour, texture) = look()
    half_frac = rng.uniform(*OBJECT_SIZE)
    pos = rng.uniform(0.15, 0.85, 2) * size
    box = place(canvas, rasterise(sprite, half_frac * size), pos[0], pos[1], 1.0,
                rng.uniform(0, 2 * np.pi))
    object_box = _box(box, size) if box is not None else np.zeros(4, np.float32)

    has_hand = bool(rng.uniform() < P_HAND)
    hand_box = np.zeros(4, np.float32)
    if has_hand:
        rh = rng.uniform(*k.hand_size)
        skin = np.clip(np.add(act.SKIN, rng.integers(-20, 21, 3)), 0, 255)
        hand = Sprite("hand", "hand", tuple(int(c) for c in skin), shade=0.75)
        hx, hy = rng.uniform(0.1, 0.9, 2) * size
        shoulder = np.array([rng.choice([-0.3, 1.3]), 1.3]) * size
        sleeve = act.SLEEVES[rng.integers(len(act.SLEEVES))]
        cv2.line(canvas, (int(hx), int(hy)), (int(shoulder[0]), int(shoulder[1])), sleeve,
                 thickness=max(1, int(1.2 * rh * size)))
        box = place(canvas, rasterise(hand, rh * size), hx, hy, 1.0)
        has_hand = box is not None
        if has_hand:
            hand_box = _box(box, size)

    image = cv2.resize(canvas, (frame_size, frame_size), interpolation=cv2.INTER_AREA)
    image = image + k.pixel_noise * rng.standard_normal(image.shape, dtype=np.float32)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    lo, hi = OBJECT_SIZE
    size_bin = min(int((half_frac - lo) / (hi - lo) * SIZE_BINS), SIZE_BINS - 1)
    return Scene(image, shape, colour, texture, size_bin, object_box, hand_box, has_hand,
                 has_second)


@dataclasses.dataclass(frozen=True)
class SceneJob:
    index: int  # over all splits: train first, then validation
    seed: int
    frame_size: int = FRAME_SIZE


def make_record(job: SceneJob) -> tuple[dict, dict, list]:
    """-> (record, facts for the build statistics, problems: none can occur)."""
    s = render_scene(scene_rng(job.seed, job.index), job.frame_size)
    example = {
        "scene_id": f"scene_{job.index:07d}",
        "image": records.encode_jpeg(s.image),
        "shape": s.shape, "colour": s.colour, "texture": s.texture, "size": s.size,
        "object_box": s.object_box, "hand_box": s.hand_box,
        "has_hand": int(s.has_hand), "has_second": int(s.has_second),
    }
    return example, {"has_hand": s.has_hand, "has_second": s.has_second}, []
