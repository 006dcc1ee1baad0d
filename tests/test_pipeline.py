"""End-to-end input pipeline on tiny records with known content (tests/fixtures_records.py)."""
import itertools

import fixtures_records as fr
import numpy as np
import pytest

from mmkd_jax.data import color, pipeline

MEAN, STD = np.array(color.IMAGENET_MEAN), np.array(color.IMAGENET_STD)
ALL_KEYS = ("rgb", "flow", "boxes", "categories")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("records"))
    name = fr.build(data_dir, "toy")

    def make(**overrides):
        cfg = pipeline.default_data_config()
        cfg.name, cfg.data_dir = name, data_dir
        cfg.num_frames, cfg.image_size = 4, 32
        cfg.update(overrides)
        return cfg

    return make


def take(iterator, n):
    return list(itertools.islice(iterator, n))


def pixels(x):
    """Normalised image(s) -> [0, 255]."""
    c = x.shape[-1]
    return (x * STD[:c] + MEAN[:c]) * 255.0


def segment_bounds(length, num_frames):
    seg = (length - 1) / num_frames
    edges = np.array([int(np.round(seg * i)) for i in range(num_frames + 1)])
    return edges[:-1], edges[1:]


def frame_index(img):
    """The toy frame index from the grey background level 30 + 10 t."""
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    grey = (np.abs(r - g) < 12) & (np.abs(g - b) < 12)
    return int(np.round((np.median(g[grey]) - 30) / 10))


def video_of(flow_img):
    """(video index, flow frame index); (None, None) for the single-frame video (zero flow)."""
    fx, fy = pixels(flow_img).reshape(-1, 2).mean(0)
    if abs(fx - 128) < 2 and abs(fy - 128) < 2:
        return None, None
    return int(np.round((fy - 20) / 20)), int(np.round((fx - 10) / 10))


def object_mask(img):
    """The green square: green the largest channel (hue jitter is at most 36 degrees) and
    chroma above half the square's (jittered) chroma; background and hand fail one of them."""
    chroma = np.where(img.argmax(-1) == 1, img.max(-1) - img.min(-1), 0.0)
    return chroma > (0.5 * chroma.max() if chroma.max() > 50 else np.inf)


def box_mask(box, size):
    centres = (np.arange(size) + 0.5) / size
    cols = (centres >= box[0]) & (centres < box[2])
    rows = (centres >= box[1]) & (centres < box[3])
    return rows[:, None] & cols[None, :]


@pytest.mark.parametrize("jitter", [False, True])
def test_train_views_are_consistent_across_modalities(toy, jitter):
    cfg = toy(num_frames=8, image_size=64, color_jitter=jitter)
    batches = take(pipeline.train_iterator(cfg, ALL_KEYS, 2, seed=0), 5)  # one epoch
    ious, seen = [], set()
    for batch in batches:
        for b in range(2):
            video, _ = video_of(batch["flow"][b, 0])
            video = 2 if video is None else video  # the single-frame video
            seen.add(video)
            length = fr.TOY_VIDEOS["train"][video][0]
            lo, hi = segment_bounds(length, 8)
            for t in range(8):
                img = pixels(batch["rgb"][b, t])
                if not jitter:
                    i = frame_index(img)
                    assert lo[t] <= i <= hi[t]
                    flow_video, j = video_of(batch["flow"][b, t])
                    assert (flow_video, j) == ((None, None) if length == 1
                                               else (video, min(i, length - 2)))
                cat, box = batch["categories"][b, t, 1], batch["boxes"][b, t, 1]
                green = object_mask(img)
                if cat == 0:
                    assert green.sum() <= 3
                    continue
                drawn = box_mask(box, 64)
                if drawn.sum() < 100:  # slivers at the crop border: IoU is all edge
                    continue
                ious.append((green & drawn).sum() / (green | drawn).sum())
    assert seen == set(range(10))  # one epoch = every example once (10 // 2 batches of 2)
    assert len(ious) > 60 and min(ious) > 0.9, (len(ious), min(ious))


def test_train_boxes_leaving_the_crop_are_dropped(toy):
    cfg = toy(num_frames=4, image_size=32, scale_range=(1.4, 1.43))
    batch = next(pipeline.train_iterator(cfg, ("boxes", "categories"), 10, seed=3))
    cats, boxes = batch["categories"], batch["boxes"]
    assert (cats[..., 3:] == 0).all() and (boxes[..., 3:, :] == 0).all()  # padded slots
    dropped = cats[..., :3] == 0
    assert dropped.any() and (boxes[..., :3, :][dropped] == 0).all()
    kept = boxes[..., :3, :][~dropped]
    assert (kept[:, 2] > kept[:, 0]).all() and (kept[:, 3] > kept[:, 1]).all()
    assert kept.min() >= 0 and kept.max() <= 1


def crop_ref(px_boxes, height, width):
    """Eval centre crop of normalised boxes, NumPy."""
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    offset = np.array([left / width, top / height] * 2)
    scale = np.array([side / width, side / height] * 2)
    b = np.clip((px_boxes / [width, height, width, height] - offset) / scale, 0, 1)
    keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    return np.where(keep[:, None], b, 0), keep


@pytest.mark.parametrize("flow_channels", [2, 3])
def test_eval_view_exact_values(toy, flow_channels):
    cfg = toy(num_frames=8, image_size=48, flow_channels=flow_channels)
    batches = list(pipeline.eval_iterator(cfg, ALL_KEYS + ("omni",), 4))
    assert [len(b["mask"]) for b in batches] == [4, 4]
    np.testing.assert_array_equal(np.concatenate([b["mask"] for b in batches]), [1] * 7 + [0])
    for batch in batches:
        np.testing.assert_array_equal(batch["omni"], batch["rgb"])  # eval omni = RGB view
        for b in np.flatnonzero(batch["mask"]):
            video = int(batch["video_id"][b].decode().split("_")[1])
            length, height, width = fr.TOY_VIDEOS["validation"][video]
            lo, hi = segment_bounds(length, 8)
            mid = (lo + hi) // 2
            assert batch["label"][b] == video % 3
            for t in range(8):
                img = pixels(batch["rgb"][b, t])
                assert frame_index(img) == mid[t]
                # Normalisation: the background level through /255 and ImageNet mean/std.
                bg = batch["rgb"][b, t, 0, -1]  # top-right corner: background in every video
                want = (fr.background_level(mid[t]) / 255 - MEAN) / STD
                np.testing.assert_allclose(bg, want, atol=2.0 / 255 / STD.min())
                fx, fy = fr.flow_values(video, min(mid[t], length - 2))
                if length == 1:
                    fx = fy = 128
                want = (np.array([fx, fy, (fx + fy) / 2])[:flow_channels] / 255
                        - MEAN[:flow_channels]) / STD[:flow_channels]
                np.testing.assert_allclose(batch["flow"][b, t].reshape(-1, flow_channels),
                                           np.broadcast_to(want, (48 * 48, flow_channels)),
                                           atol=1.5 / 255 / STD.min())
                want_boxes, keep = crop_ref(fr.toy_boxes(mid[t], height, width), height, width)
                np.testing.assert_allclose(batch["boxes"][b, t, :3], want_boxes, atol=1e-5)
                np.testing.assert_array_equal(batch["categories"][b, t, :3],
                                              np.where(keep, [1, 2, 2], 0))
            # The top-right corner box is cut by the centre crop of 4:3 frames only.
            assert (batch["categories"][b, :, 2] == 0).all() == (height != width)


@pytest.mark.parametrize("process_count,global_batch", [(1, 3), (2, 6), (3, 6)])
def test_eval_padding_covers_split_once(toy, process_count, global_batch):
    cfg = toy()
    per_process = [list(pipeline.eval_iterator(cfg, ("boxes", "categories"), global_batch,
                                               process_index=p, process_count=process_count))
                   for p in range(process_count)]
    assert len({len(batches) for batches in per_process}) == 1  # same number of batches
    masks = np.concatenate([b["mask"] for batches in per_process for b in batches])
    ids = np.concatenate([b["video_id"] for batches in per_process for b in batches])
    assert masks.sum() == 7 == pipeline.num_examples(cfg)
    real = sorted(ids[masks == 1])
    assert real == sorted(f"validation_{i:03d}".encode() for i in range(7))
    assert set(ids[masks == 0]) <= {b""}
    assert all(len(b["mask"]) == global_batch // process_count
               for batches in per_process for b in batches)


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_train_order_is_a_function_of_seed_step_and_shards(toy):
    cfg = toy()  # 10 examples, batch 4 -> 2 steps per epoch, 6 steps = 3 epochs
    keys = ("rgb", "boxes", "categories")
    run = lambda **kw: take(pipeline.train_iterator(cfg, keys, 4, **kw), 6 - kw.get(
        "start_step", 0))
    ref = run(seed=0)
    assert_batches_equal(ref, run(seed=0))
    assert_batches_equal(ref[3:], run(seed=0, start_step=3))  # resume mid-epoch
    other = run(seed=1)
    assert not np.array_equal(ref[0]["rgb"], other[0]["rgb"])
    assert not np.array_equal(ref[0]["rgb"], ref[2]["rgb"])  # epochs are reshuffled
    # The view does not depend on which keys are asked for (teacher and student agree).
    rgb_only = take(pipeline.train_iterator(cfg, ("rgb",), 4, seed=0), 2)
    np.testing.assert_array_equal(rgb_only[1]["rgb"], ref[1]["rgb"])
    assert set(rgb_only[0]) == {"rgb", "label", "mask"}

    cfg.num_shards = 2  # shards of 5: per-shard batch 2 -> 2 steps per epoch
    single = take(pipeline.train_iterator(cfg, keys, 4, seed=0), 4)
    procs = [take(pipeline.train_iterator(cfg, keys, 4, seed=0, process_index=p,
                                          process_count=2), 4) for p in range(2)]
    joined = [{k: np.concatenate([p0[k], p1[k]]) for k in p0} for p0, p1 in zip(*procs)]
    assert_batches_equal(single, joined)
    resumed = take(pipeline.train_iterator(cfg, keys, 4, seed=0, start_step=3, process_index=1,
                                           process_count=2), 1)
    assert_batches_equal(procs[1][3:], resumed)


def test_omni_view_samples_modalities_and_renders_layout(toy):
    cfg = toy(num_frames=4, image_size=48)
    batches = take(pipeline.train_iterator(cfg, ("omni", "boxes", "categories"), 5, seed=0), 4)
    kinds = {"rgb": 0, "flow": 0, "layout": 0}
    for batch in batches:
        for b in range(5):
            img = pixels(batch["omni"][b])  # [T, S, S, 3]
            white = (np.abs(img - 255) < 1e-2).all(-1)
            if white.mean() > 0.3:
                kinds["layout"] += 1
                check_layout(img, white, batch["boxes"][b], batch["categories"][b])
            elif img.std(axis=(1, 2)).max() < 2.0:  # constant toy flow frames
                kinds["flow"] += 1
                np.testing.assert_allclose(img[..., 2], (img[..., 0] + img[..., 1]) / 2, atol=1.5)
            else:
                kinds["rgb"] += 1
    assert min(kinds.values()) >= 2, kinds


def check_layout(img, white, boxes, categories):
    size = img.shape[1]
    red = np.isclose(img, [255, 0, 0], atol=1e-2).all(-1)
    blue = np.isclose(img, [0, 0, 255], atol=1e-2).all(-1)
    assert (white | red | blue).all()
    for t in range(img.shape[0]):
        inside_any = np.zeros((size, size), bool)
        for box, cat in zip(boxes[t], categories[t]):
            if cat == 0:
                continue
            x1, y1, x2, y2 = np.round(box * size).astype(int)
            inside_any[y1:y2, x1:x2] = True
            colour = blue if cat == 1 else red | blue  # hands are drawn over objects
            if 0 < box[0] and 0 < box[1] and box[2] < 1 and box[3] < 1 and x2 - x1 > 4:
                assert colour[t, y1:y1 + 2, x1:x2].all() and colour[t, y2 - 2:y2, x1:x2].all()
                assert colour[t, y1:y2, x1:x1 + 2].all() and colour[t, y1:y2, x2 - 2:x2].all()
                if cat == 2 and y2 - y1 > 6 and x2 - x1 > 6:
                    cy, cx = (y1 + y2) // 2, (x1 + x2) // 2
                    assert not red[t, cy, cx]  # hollow
        assert white[t][~inside_any].all()  # nothing drawn outside the boxes


def test_metadata_and_config_errors(toy):
    cfg = toy()
    assert pipeline.num_examples(cfg, "train") == 10 and pipeline.num_examples(cfg) == 7
    assert pipeline.label_names(cfg) == fr.LABEL_NAMES
    assert pipeline.steps_per_epoch(cfg, 4, process_count=1) == 2
    cfg.num_shards = 2
    assert pipeline.steps_per_epoch(cfg, 2, process_count=1) == 5
    with pytest.raises(ValueError, match="multiple of the process count"):
        pipeline.train_iterator(cfg, ("rgb",), 6, seed=0, process_count=3)
    with pytest.raises(ValueError, match="not divisible"):
        pipeline.train_iterator(cfg, ("rgb",), 5, seed=0)
    with pytest.raises(ValueError, match="fewer than one per-shard batch"):
        pipeline.train_iterator(cfg, ("rgb",), 12, seed=0)
    with pytest.raises(ValueError, match="unknown batch keys"):
        pipeline.train_iterator(cfg, ("depth",), 4, seed=0)
