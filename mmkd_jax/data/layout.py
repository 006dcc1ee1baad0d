"""Layout rendering for the omnivore view: 2-px box outlines on a white canvas.

The view is described in docs/pipeline.md.
"""
import tensorflow as tf

from data_prep.schema import CATEGORY_HAND, CATEGORY_OBJECT

HAND_RGB = (0.0, 0.0, 255.0)  # blue
OBJECT_RGB = (255.0, 0.0, 0.0)  # red


def _outline(boxes: tf.Tensor, size: int, thickness: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-axis membership of pixel rows/columns: (inside, on an edge), float32[..., 2, S]."""
    px = tf.round(boxes * size)  # x1, y1, x2, y2 in pixels; a box covers [lo, hi)
    lo, hi = tf.stack([px[..., 1], px[..., 0]], -1), tf.stack([px[..., 3], px[..., 2]], -1)
    lo, hi = lo[..., None], hi[..., None]  # [..., axis (rows, cols), 1]
    pos = tf.range(size, dtype=tf.float32)
    inside = (pos >= lo) & (pos < hi)
    edge = inside & ((pos < lo + thickness) | (pos >= hi - thickness))
    return tf.cast(inside, tf.float32), tf.cast(edge, tf.float32)


def render_layout(boxes: tf.Tensor, categories: tf.Tensor, size: int,
                  thickness: int = 2) -> tf.Tensor:
    """Draws boxes (float32[T,K,4] in crop coordinates, may extend past [0, 1]) -> [T,S,S,3].

    Values in [0, 255]; hands are drawn over objects. Unclipped boxes render like boxes drawn on
    the full frame and then cropped: an edge outside the crop stays invisible.
    """
    inside, edge = _outline(boxes, size, thickness)
    canvas = tf.fill([boxes.shape[0], size, size, 3], 255.0)
    for category, color in ((CATEGORY_OBJECT, OBJECT_RGB), (CATEGORY_HAND, HAND_RGB)):
        sel = tf.cast(categories == category, tf.float32)[..., None]  # [T,K,1]
        # outline = rows_edge x cols_inside + rows_inside x cols_edge, summed over the boxes
        # as a matrix product so no [T,K,S,S] tensor is materialised.
        rows_in, cols_in = inside[..., 0, :] * sel, inside[..., 1, :]
        rows_edge, cols_edge = edge[..., 0, :] * sel, edge[..., 1, :]
        hits = (tf.einsum("tkh,tkw->thw", rows_edge, cols_in)
                + tf.einsum("tkh,tkw->thw", rows_in, cols_edge))
        canvas = tf.where((hits > 0)[..., None], tf.constant(color), canvas)
    return canvas
