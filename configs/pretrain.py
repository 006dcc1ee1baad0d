r"""Pretraining for the synthetic world: an image ViT on still scenes, the miniature's ImageNet.

  python -m mmkd_jax.main --config=configs/pretrain.py --workdir=/tmp/mmkd/pretrain
  python -m mmkd_jax.main --config=configs/pretrain.py:tiny --workdir=/tmp/mmkd/pretrain_tiny

Trains a ViT as wide as the synthetic presets' TimeSformer on `something_synthetic_images`
(object shape, colour, texture, size, object and hand position, second object: no action
labels) and writes WORKDIR/vit.npz in the big_vision layout. Every RGB and flow TimeSformer of
the synthetic presets starts from such a file (`model.init_from`, kind `vit_npz`), as the
paper's start from ImageNet ViT-B/16; the one they use by default ships with the package
(mmkd_jax/pretrained/README.md says which command and commit made it).
"""
import ml_collections

from mmkd_jax import recipes

# Model fields copied from the synthetic TimeSformer, so the image model inflates into it.
ARCH_FIELDS = ("variant", "hidden_size", "depth", "num_heads", "mlp_dim", "patch_size",
               "image_size", "in_channels")


def get_config(arg: str | None = None):
    size = arg or "synthetic"
    if size not in ("synthetic", "tiny"):
        raise ValueError(f"configs/pretrain.py:{size}: choose synthetic or tiny.")
    video = recipes.base_config(size, modality="rgb")
    c = ml_collections.ConfigDict()
    c.trainer = "pretrain"
    c.seed = 0
    c.data = ml_collections.ConfigDict({
        "name": "something_synthetic_images/" + ("tiny" if size == "tiny" else "default"),
        "data_dir": video.data.data_dir, "train_split": "train", "eval_split": "validation",
        "image_size": video.data.image_size, "scale_range": video.data.scale_range,
        "color_jitter": False, "num_shards": 0, "shuffle_buffer": 4096,
        "file_cycle_length": 16, "num_parallel_calls": -1, "prefetch": 2, "threads": 0})
    c.model = ml_collections.ConfigDict({"name": "vit", "dtype": "float32",
                                         **{k: video.model[k] for k in ARCH_FIELDS}})
    c.optim = ml_collections.ConfigDict(video.optim.to_dict())
    c.optim.lr, c.optim.weight_decay, c.optim.warmup_frac = 1e-3, 0.05, 0.05
    c.optim.wd_exclude = ("pos_embed", r"(^|/)cls")
    c.batch_size = 128
    c.epochs = 25.6  # 20,000 steps of 128 over 100,000 scenes
    c.total_steps = 0  # > 0 overrides epochs
    c.log_every_steps = 200
    c.eval_every_steps = 5000
    c.checkpoint_every_steps = 0  # 0: at each eval
    c.keep_checkpoints = 1
    if size == "tiny":
        c.batch_size, c.total_steps, c.log_every_steps, c.eval_every_steps = 16, 20, 5, 10
    return c
