"""The tf.data input pipeline (docs/architecture.md §2): train and eval iterators of NumPy dicts.

Training order and augmentation are a pure function of (seed, step, num_shards): the train split
is cut into `num_shards` contiguous shards, each with its own epoch loop (a file-order permutation
and a block shuffle seeded by (seed, shard, epoch)), and per-example augmentation seeded by
(seed, shard, epoch, position). The global batch is one `B / num_shards` sub-batch per shard, in
shard order; process p of n reads the shards j with j % n == p. See docs/pipeline.md.
"""
import math
from collections.abc import Callable, Iterable, Iterator, Sequence

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mmkd_jax.data import cache, records, seeds, views

_FOREVER = 2**62
# tf_example_spec -> map function (serialized record, example seed int32[2]) -> dict of tensors.
ExampleFn = Callable[[dict], Callable[[tf.Tensor, tf.Tensor], dict]]


def default_data_config() -> ml_collections.ConfigDict:
    """Defaults every config starts from (paper values; small variants override sizes)."""
    c = ml_collections.ConfigDict()
    c.name = "something_synthetic/standard"  # TFDS name incl. config
    c.data_dir = ""  # "" = TFDS default ($TFDS_DATA_DIR or ~/tensorflow_datasets)
    c.train_split = "train"
    c.eval_split = "validation"
    c.num_frames = 8
    c.image_size = 224
    c.num_boxes = 8  # K box slots the models see (records are padded/truncated to it)
    c.flow_channels = 2  # 2: (x, y); 3: adds 0.5 * (x + y)
    c.scale_range = (1.15, 1.43)  # short side -> int(image_size * U(scale_range)) in training
    c.color_jitter = True
    c.jit_photometric = True  # XLA-fuse jitter + normalisation (~4x less CPU for that step)
    # Training order is a function of (seed, step, num_shards): set it explicitly (a multiple of
    # every process count you will run with) to keep the order when the host count changes.
    c.num_shards = 0  # 0 = process count
    c.shuffle_buffer = 1024  # records per shuffled block, per shard (memory: ~1 GB at SSv2 size)
    c.file_cycle_length = 16  # record files read round-robin per shard
    c.num_parallel_calls = -1  # -1 = tf.data.AUTOTUNE
    c.prefetch = 2  # batches; -1 = AUTOTUNE
    c.threads = 0  # private tf.data thread pool size; 0 = TF's shared pool
    # Splits whose decoded records fit in this many GB are decoded once per run and held in
    # memory (data/cache.py; the same batches as decoding every epoch); 0 turns it off.
    c.cache_decoded_gb = 2.0
    return c


def _parallelism(value: int) -> int:
    return tf.data.AUTOTUNE if value is None or value < 0 else int(value)


def _builder(data_cfg) -> tfds.core.DatasetBuilder:
    return records.load_builder(data_cfg.name, data_cfg.get("data_dir") or None)


def _options(data_cfg) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    # Parallelism comes from tf.data's map; one thread per op avoids oversubscribing the cores.
    options.threading.max_intra_op_parallelism = 1
    if data_cfg.get("threads", 0):
        options.threading.private_threadpool_size = int(data_cfg.threads)
    return options


def num_shards(data_cfg, process_count: int) -> int:
    shards = int(data_cfg.get("num_shards", 0)) or process_count
    if shards % process_count:
        raise ValueError(f"data.num_shards={shards} must be a multiple of the process count "
                         f"{process_count} (each process reads whole shards)")
    return shards


def _shard_batch(global_batch_size: int, shards: int) -> int:
    if global_batch_size % shards:
        raise ValueError(f"global batch {global_batch_size} is not divisible by "
                         f"data.num_shards={shards}")
    return global_batch_size // shards


def steps_per_epoch(data_cfg, global_batch_size: int, process_count: int | None = None) -> int:
    """(examples in the smallest train shard) // (B / num_shards); the remainder is dropped.

    `process_count` only matters when `data_cfg.num_shards` is 0 (default: jax.process_count()).
    """
    if process_count is None:
        import jax  # only to resolve num_shards = 0; the pipeline itself is TF-only
        process_count = jax.process_count()
    shards = num_shards(data_cfg, process_count)
    parts = records.even_parts(_builder(data_cfg), data_cfg.train_split, shards)
    return min(records.count(p) for p in parts) // _shard_batch(global_batch_size, shards)


def num_examples(data_cfg, split: str | None = None) -> int:
    """Examples in `split` (default: the eval split); slices like "train[:10%]" work."""
    return _builder(data_cfg).info.splits[split or data_cfg.eval_split].num_examples


def label_names(data_cfg) -> list[str]:
    """Class names ordered by class id (`builder.info.metadata["label_names"]`)."""
    return records.label_names(_builder(data_cfg))


def _block_shuffle(ds: tf.data.Dataset, block: int, seed: tf.Tensor) -> tf.data.Dataset:
    """Permutes each run of `block` consecutive records with its own stateless seed."""
    shuffle = lambda i, b: tf.random.experimental.stateless_shuffle(b, seeds.fold(seed, i))
    return ds.batch(block).enumerate().map(shuffle).unbatch()


def _shard_stream(data_cfg, instructions: list, shard: int, seed: int, per_epoch: int,
                  start: int, read=records.read_serialized) -> tf.data.Dataset:
    """(record, example seed) of one shard, forever, from record number `start`; records are
    serialized, or their positions in a decoded store (`read=records.read_indices`): the order
    is the same."""
    root = seeds.fold(seeds.base_seed(seed), shard)
    first_epoch, skip = divmod(start, per_epoch)
    block = max(1, int(data_cfg.shuffle_buffer))

    def epoch(e):
        file_seed, block_seed, example_seed = tf.unstack(
            tf.random.experimental.stateless_split(seeds.fold(root, e), 3))
        order = tf.random.experimental.stateless_shuffle(tf.range(len(instructions)), file_seed)
        recs = read(instructions, order, int(data_cfg.file_cycle_length))
        recs = _block_shuffle(recs, block, block_seed).take(per_epoch)
        ds = tf.data.Dataset.zip(recs, tf.data.Dataset.range(per_epoch))
        # Resume: drop already-seen records while still serialized (no parse, no decode).
        ds = ds.skip(tf.where(e == first_epoch, tf.constant(skip, tf.int64), 0))
        return ds.map(lambda rec, pos: (rec, seeds.fold(example_seed, pos)))

    return tf.data.Dataset.range(first_epoch, _FOREVER).flat_map(epoch)


def _store(data_cfg, tf_spec: dict, part: list, keys: Sequence[str], with_id: bool,
           what: str) -> dict | None:
    """The decoded store of `part` when it fits in `data_cfg.cache_decoded_gb` (data/cache.py)."""
    fields = views.record_features(tuple(keys), with_id)
    return cache.decoded_store(tf_spec, part, fields, float(data_cfg.get("cache_decoded_gb", 0)),
                               name=f"{data_cfg.name} {what}")


def _concat_batches(*batches: dict) -> dict:
    return {k: tf.concat([b[k] for b in batches], 0) for k in batches[0]}


def train_dataset(data_cfg, keys: Sequence[str], global_batch_size: int, *, seed: int,
                  start_step: int = 0, process_index: int = 0, process_count: int = 1,
                  example_fn: ExampleFn | None = None) -> tf.data.Dataset:
    """This process's part of every global training batch from `start_step` on (infinite).

    `example_fn(tf_example_spec)` makes the map function (serialized record, example seed) ->
    dict for records that are not videos (pretraining scenes); default: the video views of
    `keys`."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    builder = _builder(data_cfg)
    shards = num_shards(data_cfg, process_count)
    batch = _shard_batch(global_batch_size, shards)
    parts = records.even_parts(builder, data_cfg.train_split, shards)
    spe = min(records.count(p) for p in parts) // batch
    if spe == 0:
        raise ValueError(f"{data_cfg.train_split} of {data_cfg.name}: the smallest of {shards} "
                         f"shards has {min(records.count(p) for p in parts)} examples, fewer "
                         f"than one per-shard batch of {batch}")
    tf_spec = builder.info.features.tf_example_spec
    parallel = _parallelism(data_cfg.num_parallel_calls)
    per_shard = []
    for shard in range(process_index, shards, process_count):
        store = None
        if example_fn is None:
            store = _store(data_cfg, tf_spec, parts[shard], keys, False,
                           f"{data_cfg.train_split} shard {shard}")
            fn = views.example_fn(tf_spec, views.ViewSpec.from_config(data_cfg), tuple(keys),
                                  train=True, store=store)
        else:
            fn = example_fn(tf_spec)
        read = records.read_serialized if store is None else records.read_indices
        ds = _shard_stream(data_cfg, parts[shard], shard, seed, spe * batch, start_step * batch,
                           read)
        per_shard.append(ds.map(fn, num_parallel_calls=parallel).batch(batch, drop_remainder=True))
    ds = per_shard[0] if len(per_shard) == 1 else tf.data.Dataset.zip(
        tuple(per_shard)).map(_concat_batches)
    return ds.prefetch(_parallelism(data_cfg.prefetch)).with_options(_options(data_cfg))


def train_iterator(data_cfg, keys: Sequence[str], global_batch_size: int, *, seed: int,
                   start_step: int = 0, process_index: int = 0, process_count: int = 1,
                   example_fn: ExampleFn | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Infinite iterator of host-local training batches (dicts of NumPy arrays).

    Batch `k` of an iterator started at `start_step` equals batch `start_step + k` of one started
    at 0, and the concatenation over processes of the local batches is the same for any process
    count that divides `data_cfg.num_shards`.
    """
    return iter(tfds.as_numpy(train_dataset(
        data_cfg, keys, global_batch_size, seed=seed, start_step=start_step,
        process_index=process_index, process_count=process_count, example_fn=example_fn)))


def eval_dataset(data_cfg, keys: Sequence[str], global_batch_size: int, *,
                 split: str | None = None, process_index: int = 0, process_count: int = 1,
                 num_clips: int = 1, num_crops: int = 1,
                 example_fn: ExampleFn | None = None,
                 padding: dict | None = None) -> tf.data.Dataset:
    """This process's eval batches: a contiguous part of the split, padded with mask-0 examples
    so that every process runs the same number of batches.

    With `num_clips` x `num_crops` > 1 views, every model key gets a view axis after the batch
    axis, (B, V, ...) (`views.multiview_example_fn`); 1 x 1 is the paper's single view, without
    that axis. `example_fn` and `padding` (its mask-0 example) replace the video views, as in
    `train_dataset`."""
    if global_batch_size % process_count:
        raise ValueError(f"eval batch {global_batch_size} not divisible by {process_count} "
                         "processes")
    builder = _builder(data_cfg)
    batch = global_batch_size // process_count
    parts = records.even_parts(builder, split or data_cfg.eval_split, process_count)
    counts = [records.count(p) for p in parts]
    num_batches = math.ceil(max(counts) / batch)
    num_views = num_clips * num_crops
    spec = views.ViewSpec.from_config(data_cfg) if example_fn is None else None
    tf_spec = builder.info.features.tf_example_spec
    part, store = parts[process_index], None
    if example_fn is not None:
        fn = example_fn(tf_spec)
    else:
        store = _store(data_cfg, tf_spec, part, keys, True, split or data_cfg.eval_split)
        if num_views == 1:
            fn = views.example_fn(tf_spec, spec, tuple(keys), train=False, with_id=True,
                                  store=store)
        else:
            fn = views.multiview_example_fn(tf_spec, spec, tuple(keys), num_clips, num_crops,
                                            with_id=True, store=store)
    if padding is None:
        padding = views.padding_example(spec, tuple(keys), True,
                                        num_views if num_views > 1 else 0)
    no_seed = tf.zeros([2], tf.int32)
    read = records.read_serialized if store is None else records.read_indices
    ds = read(part).map(lambda rec: fn(rec, no_seed),
                        num_parallel_calls=_parallelism(data_cfg.num_parallel_calls))
    padding = tf.data.Dataset.from_tensors(padding)
    ds = ds.concatenate(padding.repeat(num_batches * batch - counts[process_index]))
    ds = ds.batch(batch).prefetch(_parallelism(data_cfg.prefetch))
    return ds.with_options(_options(data_cfg))


def eval_positions(data_cfg, split: str | None = None, process_index: int = 0,
                   process_count: int = 1) -> np.ndarray:
    """int64[n]: where each real example this process's eval iterator yields (in its order,
    padding excluded) stands in the one-process order of `split`, so that per-example outputs
    gathered from several processes can be put back in one order."""
    builder = _builder(data_cfg)
    split = split or data_cfg.eval_split
    position, n = {}, 0
    for fi in records.file_instructions(builder, split):
        for r in range(fi.skip, fi.skip + fi.take):
            position[(fi.filename, r)] = n
            n += 1
    part = records.even_parts(builder, split, process_count)[process_index]
    return np.array([position[(fi.filename, r)] for fi in part
                     for r in range(fi.skip, fi.skip + fi.take)], np.int64)


def eval_iterator(data_cfg, keys: Sequence[str], global_batch_size: int, *,
                  split: str | None = None, process_index: int = 0, process_count: int = 1,
                  num_clips: int = 1, num_crops: int = 1, example_fn: ExampleFn | None = None,
                  padding: dict | None = None) -> Iterable[dict[str, np.ndarray]]:
    """Finite, re-iterable eval batches with `mask` (1 real, 0 padding) and host-side
    `video_id` (bytes; strip it before device_put). Every example appears exactly once.
    `num_clips` x `num_crops` > 1 adds a view axis, see `eval_dataset`."""
    return tfds.as_numpy(eval_dataset(data_cfg, keys, global_batch_size, split=split,
                                      process_index=process_index, process_count=process_count,
                                      num_clips=num_clips, num_crops=num_crops,
                                      example_fn=example_fn, padding=padding))
