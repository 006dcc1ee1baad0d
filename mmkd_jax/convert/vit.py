"""ImageNet ViT checkpoints -> TimeSformer parameters.

Two layouts are read: big_vision / augreg `.npz` (flax names, e.g.
`Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel`; newer big_vision
names and scanned `encoderblock` stacks too) and timm state dicts (`blocks.0.attn.qkv.weight`)
as `.safetensors` or torch files. The ViT's spatial attention and `norm1` are copied into the
temporal branch; `temporal_fc` and `time_embed` start at zero, so at init every block's
temporal branch adds nothing and a clip of identical frames gives the ViT's features.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mmkd_jax.convert.naming import Rule, conv, linear, rename, strip_prefix
from mmkd_jax.convert.readers import load_file

_B = r"Transformer/encoderblock_(\d+)"
_ATTN = rf"{_B}/MultiHeadDotProductAttention_[01]"
# `#q`, `#k`, `#v` pieces are fused into one `qkv` Dense afterwards.
NPZ_RULES = [
    Rule("embedding/kernel", "patch_embed/kernel"),
    Rule("embedding/bias", "patch_embed/bias"),
    Rule("cls", "cls"),
    Rule("Transformer/posembed_input/pos_embedding|pos_embedding", "pos_embed"),
    Rule(rf"{_B}/LayerNorm_0/(scale|bias)", r"blocks_\1/norm1/\2"),
    Rule(rf"{_B}/LayerNorm_[12]/(scale|bias)", r"blocks_\1/norm2/\2"),
    Rule(rf"{_ATTN}/query/(kernel|bias)", r"blocks_\1/attn/qkv/\2#q"),
    Rule(rf"{_ATTN}/key/(kernel|bias)", r"blocks_\1/attn/qkv/\2#k"),
    Rule(rf"{_ATTN}/value/(kernel|bias)", r"blocks_\1/attn/qkv/\2#v"),
    Rule(rf"{_ATTN}/out/kernel", r"blocks_\1/attn/proj/kernel",
         lambda a: a.reshape(-1, a.shape[-1])),  # (H, Dh, D) -> (H*Dh, D)
    Rule(rf"{_ATTN}/out/bias", r"blocks_\1/attn/proj/bias"),
    Rule(rf"{_B}/MlpBlock_[03]/Dense_0/(kernel|bias)", r"blocks_\1/mlp/fc1/\2"),
    Rule(rf"{_B}/MlpBlock_[03]/Dense_1/(kernel|bias)", r"blocks_\1/mlp/fc2/\2"),
    Rule("Transformer/encoder_norm/(scale|bias)", r"norm/\1"),
    Rule("head/(kernel|bias)", r"head/\1"),
]

TIMM_RULES = [
    Rule(r"patch_embed\.proj\.weight", "patch_embed/kernel", conv),
    Rule(r"patch_embed\.proj\.bias", "patch_embed/bias"),
    Rule("cls_token", "cls"),
    Rule("pos_embed", "pos_embed"),
    Rule(r"blocks\.(\d+)\.(norm[12])\.weight", r"blocks_\1/\2/scale"),
    Rule(r"blocks\.(\d+)\.(norm[12])\.bias", r"blocks_\1/\2/bias"),
    Rule(r"blocks\.(\d+)\.attn\.(qkv|proj)\.weight", r"blocks_\1/attn/\2/kernel", linear),
    Rule(r"blocks\.(\d+)\.attn\.(qkv|proj)\.bias", r"blocks_\1/attn/\2/bias"),
    Rule(r"blocks\.(\d+)\.mlp\.(fc[12])\.weight", r"blocks_\1/mlp/\2/kernel", linear),
    Rule(r"blocks\.(\d+)\.mlp\.(fc[12])\.bias", r"blocks_\1/mlp/\2/bias"),
    Rule(r"norm\.weight", "norm/scale"),
    Rule(r"norm\.bias", "norm/bias"),
    Rule(r"head\.weight", "head/kernel", linear),
    Rule(r"head\.bias", "head/bias"),
]


def _unscan(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """big_vision `scan=True` stacks blocks as `Transformer/encoderblock/...` (depth first)."""
    out = {}
    for key, value in state.items():
        if key.startswith("Transformer/encoderblock/"):
            rest = key[len("Transformer/encoderblock/"):]
            for i in range(value.shape[0]):
                out[f"Transformer/encoderblock_{i}/{rest}"] = value[i]
        else:
            out[key] = value
    return out


def _fuse_qkv(ours: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Joins `#q/#k/#v` pieces: kernels (D, H, Dh) and biases (H, Dh) -> one qkv Dense."""
    out = {k: v for k, v in ours.items() if "#" not in k}
    for key in sorted({k.split("#")[0] for k in ours if "#" in k}):
        parts = [ours.get(f"{key}#{p}") for p in "qkv"]
        if any(p is None for p in parts):
            continue  # incomplete: left out, so the report shows qkv as missing
        lead = 1 if key.endswith("kernel") else 0
        parts = [p.reshape(p.shape[:lead] + (-1,)) for p in parts]
        out[key] = np.concatenate(parts, axis=-1)
    return out


def vit_from_npz(state: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
    """big_vision / augreg flat npz dict -> (our ViT-named params, unused keys)."""
    state = _unscan(strip_prefix(state, ["params/"]))
    ours, unused = rename(state, NPZ_RULES)
    return _fuse_qkv(ours), unused


def vit_from_timm(state: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
    """timm ViT state dict -> (our ViT-named params, unused keys)."""
    return rename(strip_prefix(state, ["module.", "model."]), TIMM_RULES)


def vit_to_timesformer(vit: Mapping[str, np.ndarray], num_frames: int) -> dict[str, np.ndarray]:
    """Adds the temporal branch: copies of `attn` / `norm1`, zero `temporal_fc`, `time_embed`."""
    out = dict(vit)
    blocks = sorted({k.split("/")[0] for k in vit if k.startswith("blocks_")})
    dims = [v.shape[-1] for k, v in vit.items() if k in ("cls", "patch_embed/bias", "norm/scale")]
    if not dims:
        raise ValueError("no ViT parameters recognised in the checkpoint")
    dim = dims[0]
    for b in blocks:
        for key, value in vit.items():
            if key.startswith(f"{b}/attn/"):
                out[key.replace("/attn/", "/temporal_attn/", 1)] = value.copy()
            elif key.startswith(f"{b}/norm1/"):
                out[key.replace("/norm1/", "/norm_temporal/", 1)] = value.copy()
        out[f"{b}/temporal_fc/kernel"] = np.zeros((dim, dim), np.float32)
        out[f"{b}/temporal_fc/bias"] = np.zeros((dim,), np.float32)
    out["time_embed"] = np.zeros((1, num_frames, dim), np.float32)
    return out


READERS = {"vit_npz": vit_from_npz, "vit_timm": vit_from_timm}


def load_vit(kind: str, path: str, num_frames: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """Reads a ViT checkpoint file of `kind` and returns TimeSformer-named params + unused."""
    vit, unused = READERS[kind](load_file(path))
    return vit_to_timesformer(vit, num_frames), unused
