"""Every setting that decides how hard `something_synthetic` is, with its default and why.

Lengths are fractions of the frame side (so they scale with `frame_size`), pixel values are in
0..255 units, ranges `(lo, hi)` are sampled uniformly per clip. Change a default -> bump the
builder VERSION (prepared data is keyed by config name and version only).
"""
import dataclasses
import hashlib
import json

Range = tuple[float, float]


@dataclasses.dataclass(frozen=True)
class Knobs:
    # Appearance: what an RGB model can latch onto.
    object_size: Range = (0.10, 0.14)  # object half-size; 0.12 -> ~12 px objects in 48 px frames
    hand_size: Range = (0.09, 0.12)  # hand half-size
    # Probability that a clip's object takes a look shared by both sets (colour and texture from
    # A and B pooled): how often appearance says nothing about the action group. At 0 a tiny
    # 3D-CNN trained on RGB of the compositional split scored 3% on its validation split.
    shared_look: float = 0.4
    # Probability that a clip's object (colour, shape) is its class's "preferred" one inside its
    # object set, i.e. how strongly appearance predicts the class on top of the action group.
    object_class_bias: float = 0.3
    distractors: tuple[int, int] = (1, 3)  # static clutter shapes (neutral colours, no boxes)
    distractor_speed: float = 0.0  # per-frame drift of the clutter (0: static, invisible to flow)
    background_texture: float = 40.0  # amplitude of the low-frequency background pattern
    pixel_noise: float = 6.0  # std of per-frame Gaussian pixel noise
    camera_jitter: float = 0.0  # std of a per-frame global shift, px of the final frame
    # Motion: what flow and layout read.
    motion: Range = (0.14, 0.40)  # displacement of translating actions
    approach: Range = (0.10, 0.25)  # hand travel before picking up / after putting down
    scale_change: Range = (0.35, 0.70)  # towards/away from camera: size x (1 + s) or / (1 + s)
    spin_degrees: Range = (90.0, 270.0)
    shake_amplitude: Range = (0.05, 0.10)
    shake_cycles: Range = (1.5, 3.0)
    # Pretend-push: the object may still be nudged by up to this fraction of the hand's travel;
    # with small real pushes this makes push/pretend genuinely ambiguous near the boundary.
    pretend_nudge: float = 0.2
    # Timing: the action fills this fraction of the clip, starting at a random frame.
    action_span: Range = (0.5, 0.9)
    # Layout annotation noise, like human-drawn Something-Else boxes.
    box_jitter: float = 0.01  # std of each box edge
    box_drop: float = 0.05  # probability that a frame has no annotation at all
    supersample: int = 2  # render at this factor, then area-downsample (anti-aliasing)

    @classmethod
    def from_dict(cls, d: dict | None) -> "Knobs":
        d = dict(d or {})
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown synthetic knobs {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def overrides(self) -> dict:
        """The knobs that differ from the defaults (what a config name has to encode)."""
        default = Knobs()
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(default, f.name)}

    def digest(self) -> str:
        """Short stable hash of the overrides ('' for the defaults)."""
        o = self.overrides()
        if not o:
            return ""
        return hashlib.sha1(json.dumps(o, sort_keys=True).encode()).hexdigest()[:8]
