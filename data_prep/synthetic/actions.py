"""Classes, action groups and object sets of `something_synthetic` (docs/datasets.md).

Fourteen SSv2-like actions in two groups. Every action has a *partner* in the other group with
similar motion (push right / pretend-push right, move up / pick up, ...), so a model that reads
motion confuses across groups, while object appearance (set A warm colours with stripes/spots,
set B cool colours with checkers/dots) can only predict the group. Compositional split: train on
group 1 with set A and group 2 with set B, validate on 1B + 2A.
"""
import dataclasses

RGB = tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class Action:
    template: str
    group: int  # action group, 1 or 2
    program: str  # motion program in data_prep.synthetic.motion.PROGRAMS
    direction: int  # program-specific: +1 right/down/closer/cover, -1 left/up/away


ACTIONS: tuple[Action, ...] = (
    Action("Pushing something from left to right", 1, "push", +1),
    Action("Pretending to push something from right to left", 1, "pretend_push", -1),
    Action("Moving something up", 1, "move_vertical", -1),
    Action("Putting something on a surface", 1, "put_down", +1),
    Action("Moving something away from the camera", 1, "scale", -1),
    Action("Covering something with something", 1, "cover", +1),
    Action("Shaking something", 1, "shake", 0),
    Action("Pushing something from right to left", 2, "push", -1),
    Action("Pretending to push something from left to right", 2, "pretend_push", +1),
    Action("Moving something down", 2, "move_vertical", +1),
    Action("Picking something up", 2, "pick_up", -1),
    Action("Moving something towards the camera", 2, "scale", +1),
    Action("Uncovering something", 2, "cover", -1),
    Action("Spinning something", 2, "spin", 0),
)
NUM_CLASSES = len(ACTIONS)
LABEL_NAMES: tuple[str, ...] = tuple(a.template for a in ACTIONS)
GROUPS: tuple[int, ...] = tuple(a.group for a in ACTIONS)
# Class i of group 1 and class i + 7 of group 2 move alike (the confusions a motion reader makes).
PARTNER: tuple[int, ...] = tuple((i + NUM_CLASSES // 2) % NUM_CLASSES for i in range(NUM_CLASSES))

SHAPES = ("square", "circle", "triangle", "diamond", "bar")


@dataclasses.dataclass(frozen=True)
class ObjectSet:
    name: str
    colours: tuple[RGB, ...]
    textures: tuple[str, ...]  # keys of data_prep.synthetic.render.TEXTURES


OBJECT_SETS: dict[str, ObjectSet] = {
    "A": ObjectSet("A", ((220, 40, 40), (240, 140, 20), (235, 210, 30), (210, 40, 160)),
                   ("stripes", "spot")),
    "B": ObjectSet("B", ((40, 80, 220), (30, 190, 210), (40, 170, 60), (120, 60, 200)),
                   ("checker", "dots")),
}
# Background and clutter: greys and browns, so clutter never carries a set's colour.
NEUTRAL: tuple[RGB, ...] = ((128, 128, 128), (90, 90, 90), (170, 170, 165), (150, 120, 90),
                            (110, 85, 60), (200, 190, 170), (60, 60, 60), (120, 125, 100))
SKIN: RGB = (230, 180, 145)
SLEEVES: tuple[RGB, ...] = ((40, 40, 45), (70, 70, 80), (230, 230, 230), (100, 80, 60))

SPLIT_KINDS = ("standard", "compositional")


def object_set_for(kind: str, split: str, label: int, index: int) -> str:
    """Which object set a clip uses. Compositional: train 1A + 2B, validation 1B + 2A."""
    if kind == "compositional":
        first = "A" if split == "train" else "B"
        other = "B" if first == "A" else "A"
        return first if GROUPS[label] == 1 else other
    if kind == "standard":
        # Alternate per pass over the classes: every (class, set) pair equally often.
        return "AB"[(index // NUM_CLASSES) % 2]
    raise ValueError(f"unknown split kind {kind!r}; choose from {SPLIT_KINDS}")
