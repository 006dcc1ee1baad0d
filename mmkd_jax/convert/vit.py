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

from mmkd_jax.convert.naming import Rule, conv, flatten, linear, rename, strip_prefix
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


def vit_to_npz(params: Mapping, num_heads: int) -> dict[str, np.ndarray]:
    """Our ViT params (mmkd_jax/models/vit.py) -> a flat dict in the augreg / big_vision npz
    layout that `vit_from_npz` reads (`np.savez(path, **result)` writes the file).

    The fused `qkv` Dense is cut into `query` / `key` / `value` kernels (D, H, Dh), `proj`
    becomes `out` (H, Dh, D); `pos_embed` keeps its cls entry, as augreg files do.
    """
    flat = {k: np.asarray(v, np.float32) for k, v in flatten(params).items()}
    out, used = {}, set()

    def put(ours: str, theirs: str, fn=lambda a: a) -> None:
        out[theirs] = fn(flat[ours])
        used.add(ours)

    put("patch_embed/kernel", "embedding/kernel")
    put("patch_embed/bias", "embedding/bias")
    put("cls", "cls")
    put("pos_embed", "Transformer/posembed_input/pos_embedding")
    put("norm/scale", "Transformer/encoder_norm/scale")
    put("norm/bias", "Transformer/encoder_norm/bias")
    for key in ("head/kernel", "head/bias"):
        if key in flat:
            put(key, key)
    blocks = sorted({int(k.split("/")[0][len("blocks_"):]) for k in flat
                     if k.startswith("blocks_")})
    for i in blocks:
        ours, theirs = f"blocks_{i}", f"Transformer/encoderblock_{i}"
        attn = f"{theirs}/MultiHeadDotProductAttention_1"
        for norm, ln in (("norm1", "LayerNorm_0"), ("norm2", "LayerNorm_2")):
            for leaf in ("scale", "bias"):
                put(f"{ours}/{norm}/{leaf}", f"{theirs}/{ln}/{leaf}")
        for j, fc in enumerate(("fc1", "fc2")):
            for leaf in ("kernel", "bias"):
                put(f"{ours}/mlp/{fc}/{leaf}", f"{theirs}/MlpBlock_3/Dense_{j}/{leaf}")
        kernel, bias = flat[f"{ours}/attn/qkv/kernel"], flat[f"{ours}/attn/qkv/bias"]
        dim = kernel.shape[0]
        head_dim = dim // num_heads
        for j, name in enumerate(("query", "key", "value")):
            part = slice(j * dim, (j + 1) * dim)
            out[f"{attn}/{name}/kernel"] = kernel[:, part].reshape(dim, num_heads, head_dim)
            out[f"{attn}/{name}/bias"] = bias[part].reshape(num_heads, head_dim)
        used |= {f"{ours}/attn/qkv/kernel", f"{ours}/attn/qkv/bias"}
        proj = flat[f"{ours}/attn/proj/kernel"]
        out[f"{attn}/out/kernel"] = proj.reshape(num_heads, head_dim, proj.shape[-1])
        used.add(f"{ours}/attn/proj/kernel")
        put(f"{ours}/attn/proj/bias", f"{attn}/out/bias")
    left = sorted(set(flat) - used)
    if left:
        raise ValueError(f"ViT params with no place in the npz layout: {left}")
    return out


READERS = {"vit_npz": vit_from_npz, "vit_timm": vit_from_timm}


def load_vit(kind: str, path: str, num_frames: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """Reads a ViT checkpoint file of `kind` and returns TimeSformer-named params + unused."""
    vit, unused = READERS[kind](load_file(path))
    return vit_to_timesformer(vit, num_frames), unused
