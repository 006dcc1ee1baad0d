"""Boxes under the example's view: pad/truncate to K slots, shift/scale/clip by the crop."""
import tensorflow as tf


def fit_slots(boxes: tf.Tensor, categories: tf.Tensor, num_valid: tf.Tensor,
              num_slots: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Pads or truncates the record's K box slots to `num_slots`; slots >= num_valid -> pad.

    boxes float32[T,K,4], categories int32[T,K], num_valid int32[T].
    """
    boxes, categories = tf.convert_to_tensor(boxes), tf.convert_to_tensor(categories)
    k = boxes.shape[1]
    categories = tf.where(tf.range(k)[None, :] < num_valid[:, None], categories, 0)
    if num_slots <= k:
        return boxes[:, :num_slots], categories[:, :num_slots]
    pad = num_slots - k
    return (tf.pad(boxes, [[0, 0], [0, pad], [0, 0]]), tf.pad(categories, [[0, 0], [0, pad]]))


def crop_boxes(boxes: tf.Tensor, categories: tf.Tensor,
               window: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Maps normalised x1,y1,x2,y2 boxes into a crop window (top, left, height, width).

    Returns (boxes clipped to [0, 1], categories with 0 where a box has zero area after clipping
    or is padding, unclipped boxes in crop coordinates). Dropped boxes are zeroed, like padding.
    """
    offset = tf.stack([window[1], window[0], window[1], window[0]])
    scale = tf.stack([window[3], window[2], window[3], window[2]])
    unclipped = (boxes - offset) / scale
    clipped = tf.clip_by_value(unclipped, 0.0, 1.0)
    keep = ((categories > 0) & (clipped[..., 2] > clipped[..., 0])
            & (clipped[..., 3] > clipped[..., 1]))
    clipped = tf.where(keep[..., None], clipped, 0.0)
    return clipped, tf.where(keep, categories, 0), unclipped
