"""Motion programs: per-frame positions of the object(s) and the hand for each action.

Positions are in frame fractions relative to the object's start (0, 0); `render` later shifts the
whole scene to a random place that keeps it inside the frame. `u` is the eased action progress per
frame (0 before the action starts, 1 after it ends).
"""
import dataclasses
from collections.abc import Callable

import numpy as np

from data_prep.synthetic.knobs import Knobs


@dataclasses.dataclass
class Tracks:
    obj: np.ndarray  # (T, 4): x, y, scale, angle (rad)
    hand: np.ndarray  # (T, 3): x, y, scale
    cover: np.ndarray | None = None  # (T, 2): x, y of the covering object (cover/uncover only)


def ramp(u: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Eased progress of the sub-phase [lo, hi] of the action (smoothstep)."""
    v = np.clip((u - lo) / (hi - lo), 0.0, 1.0)
    return v * v * (3.0 - 2.0 * v)


def _uniform(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(rng.uniform(r[0], r[1]))


def _static_obj(u: np.ndarray, angle: float) -> np.ndarray:
    t = len(u)
    return np.stack([np.zeros(t), np.zeros(t), np.ones(t), np.full(t, angle)], axis=1)


def _hand_at(obj: np.ndarray, dx: np.ndarray | float, dy: np.ndarray | float) -> np.ndarray:
    return np.stack([obj[:, 0] + dx, obj[:, 1] + dy, obj[:, 2]], axis=1)


def push(rng, u, k: Knobs, r, rh, d, angle):
    travel = _uniform(rng, k.motion)
    obj = _static_obj(u, angle)
    obj[:, 0] = d * travel * ramp(u, 0.0, 1.0)
    return Tracks(obj, _hand_at(obj, -d * (r + 0.9 * rh), rng.uniform(-0.3, 0.3) * r))


def pretend_push(rng, u, k: Knobs, r, rh, d, angle):
    travel = _uniform(rng, k.motion)
    obj = _static_obj(u, angle)
    # The hand reaches the object at 70% of the action and pulls back half-way; the object is
    # at most nudged.
    obj[:, 0] = d * travel * rng.uniform(0.0, k.pretend_nudge) * ramp(u, 0.6, 0.8)
    hand_x = -d * (r + 0.9 * rh + travel) + d * travel * (ramp(u, 0.0, 0.7)
                                                           - 0.5 * ramp(u, 0.7, 1.0))
    hand = np.stack([hand_x, np.full(len(u), rng.uniform(-0.3, 0.3) * r), np.ones(len(u))], 1)
    return Tracks(obj, hand)


def _holding_offset(rng, r, rh) -> tuple[float, float]:
    side = rng.choice([-1.0, 1.0])
    return side * (r + 0.7 * rh), 0.35 * r


def move_vertical(rng, u, k: Knobs, r, rh, d, angle):
    obj = _static_obj(u, angle)
    obj[:, 1] = d * _uniform(rng, k.motion) * ramp(u, 0.0, 1.0)
    return Tracks(obj, _hand_at(obj, *_holding_offset(rng, r, rh)))


def pick_up(rng, u, k: Knobs, r, rh, d, angle):
    # Hand comes down onto the object (first 40%), then both go up.
    obj = _static_obj(u, angle)
    obj[:, 1] = d * _uniform(rng, k.motion) * ramp(u, 0.4, 1.0)
    dx, dy = _holding_offset(rng, r, rh)
    hand = _hand_at(obj, dx, dy)
    hand[:, 1] += d * _uniform(rng, k.approach) * (1.0 - ramp(u, 0.0, 0.4))
    return Tracks(obj, hand)


def put_down(rng, u, k: Knobs, r, rh, d, angle):
    # Both go down (first 60%), then the hand lets go and leaves upwards.
    obj = _static_obj(u, angle)
    obj[:, 1] = d * _uniform(rng, k.motion) * ramp(u, 0.0, 0.6)
    dx, dy = _holding_offset(rng, r, rh)
    hand = _hand_at(obj, dx, dy)
    hand[:, 1] -= _uniform(rng, k.approach) * ramp(u, 0.6, 1.0)
    return Tracks(obj, hand)


def scale(rng, u, k: Knobs, r, rh, d, angle):
    s = 1.0 + _uniform(rng, k.scale_change)
    final = s if d > 0 else 1.0 / s
    obj = _static_obj(u, angle)
    obj[:, 2] = 1.0 + (final - 1.0) * ramp(u, 0.0, 1.0)
    obj[:, 1] = 0.5 * r * (obj[:, 2] - 1.0)  # perspective: nearer objects sit lower
    dx, dy = _holding_offset(rng, r, rh)
    hand = _hand_at(obj, dx * obj[:, 2], dy * obj[:, 2])
    return Tracks(obj, hand)


COVER_SCALE = 1.35  # the covering object is this much larger than the covered one


def cover(rng, u, k: Knobs, r, rh, d, angle):
    # d = +1 covers (cover object slides onto the target), -1 uncovers (slides off).
    side = rng.choice([-1.0, 1.0])
    travel = max(_uniform(rng, k.motion), (1.0 + COVER_SCALE) * r + 0.04)
    progress = ramp(u, 0.0, 1.0)
    off = side * travel * ((1.0 - progress) if d > 0 else progress)
    cov = np.stack([off, np.full(len(u), -0.1 * r)], axis=1)
    hand = np.stack([cov[:, 0] + side * (COVER_SCALE * r + 0.7 * rh), cov[:, 1] + 0.2 * r,
                     np.ones(len(u))], axis=1)
    return Tracks(_static_obj(u, angle), hand, cov)


def shake(rng, u, k: Knobs, r, rh, d, angle):
    amp = _uniform(rng, k.shake_amplitude)
    cycles = _uniform(rng, k.shake_cycles)
    active = (u > 0) & (u < 1)
    obj = _static_obj(u, angle)
    obj[:, 0] = amp * np.sin(2 * np.pi * cycles * u) * active
    return Tracks(obj, _hand_at(obj, *_holding_offset(rng, r, rh)))


def spin(rng, u, k: Knobs, r, rh, d, angle):
    turn = np.deg2rad(_uniform(rng, k.spin_degrees)) * rng.choice([-1.0, 1.0])
    obj = _static_obj(u, angle)
    obj[:, 3] = angle + turn * ramp(u, 0.0, 1.0)
    # The hand flicks the object at the start and stays beside it.
    dx, dy = _holding_offset(rng, r, rh)
    dx = dx + 0.5 * rh * np.sign(dx) * (1.0 - ramp(u, 0.0, 0.3))
    return Tracks(obj, _hand_at(obj, dx, dy))


# program name -> fn(rng, u, knobs, object half-size, hand half-size, direction, angle) -> Tracks
PROGRAMS: dict[str, Callable[..., Tracks]] = {
    "push": push, "pretend_push": pretend_push, "move_vertical": move_vertical,
    "pick_up": pick_up, "put_down": put_down, "scale": scale, "cover": cover,
    "shake": shake, "spin": spin,
}
