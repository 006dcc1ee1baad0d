"""What bench/vs_pytorch.py measures: sizes, workloads, the shared batch and shared weights.

A case spec is a plain JSON-able dict, built once in the parent from the project's presets
(`mmkd_jax.recipes.base_config`) and handed to every worker, so JAX and PyTorch build the same
models, read the same weights (written once by `write_weights`, in PyTorch naming, loaded on the
JAX side through `mmkd_jax.convert`) and run on the same batch (`batch`, seeded NumPy).
"""
from __future__ import annotations

import os

import numpy as np

# Benchmark size -> project preset. "synthetic" is the CPU default everything else is tested on;
# "vitb" is the paper's ViT-B/16 at 8 x 224.
PRESETS = {"synthetic": "synthetic", "vitb": "ssv2"}
WORKLOADS = ("train", "distill", "infer")
SSV2_CLASSES = 174


def _num_classes(preset: str) -> int:
    if preset == "ssv2":
        return SSV2_CLASSES
    from data_prep.synthetic import actions  # pure NumPy: the synthetic dataset's label count

    return actions.NUM_CLASSES


def make_spec(size: str, workload: str, batch: int, *, steps_total: int = 10_000,
              population: int = 1) -> dict:
    """The case spec: model sizes from the preset, the recipe's optimiser, one workload, and
    `population`: how many models of that workload one step trains (JAX: one vmapped
    population step; PyTorch: the models one after another, or torch.func's vmap)."""
    from mmkd_jax import models, recipes

    preset = PRESETS[size]
    rgb = recipes.base_config(preset, "rgb")
    layout = recipes.base_config(preset, "layout")
    classes = _num_classes(preset)
    data = rgb.data

    def resolved(cfg, **extra):
        d = {k: v for k, v in cfg.model.to_dict().items() if k != "init_from"}
        d.update(num_classes=classes, num_frames=data.num_frames, **extra)
        return models.build_model(d)

    tsf = resolved(rgb)
    stlt = resolved(layout)
    hf = dict(image_size=int(tsf.image_size), patch_size=tsf.patch_size,
              num_frames=tsf.num_frames, num_channels=3, hidden_size=tsf.hidden_size,
              num_hidden_layers=tsf.depth, num_attention_heads=tsf.num_heads,
              intermediate_size=tsf.mlp_dim, num_labels=classes,
              drop_path_rate=float(tsf.drop_path_rate), hidden_dropout_prob=float(tsf.dropout),
              attention_probs_dropout_prob=0.0, layer_norm_eps=tsf.layer_norm_eps,
              qkv_bias=tsf.qkv_bias)
    optim = {k: v for k, v in rgb.optim.to_dict().items()}
    optim["wd_exclude"] = list(optim["wd_exclude"])
    optim["total_steps"] = steps_total
    return {
        "size": size, "workload": workload, "batch": batch, "seed": 0,
        "population": population,
        "frames": data.num_frames, "image_size": data.image_size,
        "flow_channels": data.flow_channels, "num_boxes": data.num_boxes,
        "num_classes": classes, "timesformer": hf,
        "stlt": dict(hidden_size=stlt.hidden_size, num_heads=stlt.num_heads,
                     mlp_dim=stlt.mlp_dim, spatial_layers=stlt.spatial_layers,
                     temporal_layers=stlt.temporal_layers, num_classes=classes,
                     max_positions=stlt.max_positions or data.num_frames + 1,
                     dropout=stlt.dropout),
        "optim": optim, "tau": 10.0,
    }


def hf_config(spec: dict, **overrides):
    """The Hugging Face config of the case's TimeSformer.

    transformers annotates `drop_path_rate` as int and rejects 0.1 at construction and load,
    so a float rate is set on the instance after validation.
    """
    import transformers

    fields = {**spec["timesformer"], **overrides}
    rate = fields.pop("drop_path_rate")
    config = transformers.TimesformerConfig(**fields)
    config.__dict__["drop_path_rate"] = rate
    return config


def stlt_torch_kwargs(spec: dict) -> dict:
    return dict(spec["stlt"])


def batch(spec: dict) -> dict[str, np.ndarray]:
    """The fixed batch of a case, channel-last like the JAX input pipeline (architecture §2)."""
    rng = np.random.default_rng(spec["seed"] + 100)
    b, t, s, k = spec["batch"], spec["frames"], spec["image_size"], spec["num_boxes"]
    xy = rng.uniform(0.0, 0.6, size=(b, t, k, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0.05, 0.4, size=(b, t, k, 2))], -1)
    cats = rng.integers(1, 3, size=(b, t, k))
    cats[:, :, k // 2:] = 0  # half the slots are padding, as on Something-Else
    cats[:, 1] = 0  # and one frame has no box
    return {
        "rgb": rng.normal(size=(b, t, s, s, 3)).astype(np.float32),
        "flow": rng.normal(size=(b, t, s, s, spec["flow_channels"])).astype(np.float32),
        "boxes": np.where(cats[..., None] > 0, np.clip(boxes, 0, 1), 0).astype(np.float32),
        "categories": cats.astype(np.int32),
        "label": rng.integers(0, spec["num_classes"], size=b).astype(np.int32),
    }


def write_weights(spec: dict, directory: str) -> None:
    """Random PyTorch weights for student and teachers (HF safetensors dirs, STLT npz)."""
    import torch
    import transformers
    from torch_stlt import Stlt

    def perturb(model, seed):
        # Non-trivial values everywhere: HF leaves time embeddings and some biases at zero.
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=gen))
        return model

    for seed, name, channels in ((0, "student", 3), (1, "teacher_rgb", 3),
                                 (2, "teacher_flow", spec["flow_channels"])):
        torch.manual_seed(seed)
        model = transformers.TimesformerForVideoClassification(
            hf_config(spec, num_channels=channels, drop_path_rate=0))
        perturb(model, seed).save_pretrained(os.path.join(directory, name))
    torch.manual_seed(3)
    stlt = perturb(Stlt(**stlt_torch_kwargs(spec)), 3)
    np.savez(os.path.join(directory, "teacher_layout.npz"),
             **{k: v.numpy() for k, v in stlt.state_dict().items()})

