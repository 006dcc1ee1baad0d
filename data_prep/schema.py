"""The record layout every builder writes and `mmkd_jax.data` reads (docs/architecture.md §1)."""
import numpy as np
import tensorflow_datasets as tfds

# Something-Else frames hold at most a few hands and objects; 8 leaves headroom (extra boxes are
# dropped and counted in the build report).
MAX_BOXES = 8

# STLT categories (Radevski et al., BMVC 2021): 0 is padding, 3 is reserved for the frame-cls
# box the model adds.
CATEGORY_PAD, CATEGORY_HAND, CATEGORY_OBJECT = 0, 1, 2


def features(max_boxes: int = MAX_BOXES) -> tfds.features.FeaturesDict:
    """One example per video, all modalities aligned by frame index."""

    def image(channels: int) -> tfds.features.Image:
        return tfds.features.Image(shape=(None, None, channels), encoding_format="jpeg")

    return tfds.features.FeaturesDict({
        "video_id": tfds.features.Text(),
        "label": np.int64,
        "template": tfds.features.Text(),
        "frames": tfds.features.Sequence(image(3)),
        "flow_x": tfds.features.Sequence(image(1)),
        "flow_y": tfds.features.Sequence(image(1)),
        "boxes": tfds.features.Tensor(shape=(None, max_boxes, 4), dtype=np.float32),
        "box_categories": tfds.features.Tensor(shape=(None, max_boxes), dtype=np.int32),
        "num_boxes": tfds.features.Tensor(shape=(None,), dtype=np.int32),
        "frame_size": tfds.features.Tensor(shape=(2,), dtype=np.int32),
    })
