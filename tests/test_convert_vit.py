"""ImageNet ViT (big_vision/augreg npz, timm safetensors) -> TimeSformer initialisation."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from mmkd_jax.convert import init_from
from mmkd_jax.convert.surgery import adapt_patch_kernel, resample_grid
from mmkd_jax.models import TimeSformer

D, H, P, S, DEPTH, MLP = 32, 2, 8, 32, 2, 64  # a tiny ViT: 32 px, 4x4 grid of 8-px patches


def _target(**kw):
    args = dict(num_classes=13, num_frames=4, image_size=S, patch_size=P, in_channels=3,
                hidden_size=D, depth=DEPTH, num_heads=H, mlp_dim=MLP)
    return TimeSformer(**{**args, **kw})


def _fake_init(module, seed=0):
    """Random params shaped like `module.init` (a real init compiles each initialiser)."""
    h = w = module.image_size
    video = jnp.zeros((1, module.num_frames, h, w, module.in_channels))
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), video, train=False))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes["params"])


def _random_vit_hf(rng):
    """A random ViT in Hugging Face `ViTModel` naming (numpy), the layout our tests convert."""
    n = lambda *shape: (0.2 * rng.normal(size=shape)).astype(np.float32)
    sd = {"embeddings.cls_token": n(1, 1, D), "embeddings.position_embeddings": n(1, 17, D),
          "embeddings.patch_embeddings.projection.weight": n(D, 3, P, P),
          "embeddings.patch_embeddings.projection.bias": n(D),
          "layernorm.weight": 1 + n(D), "layernorm.bias": n(D)}
    for i in range(DEPTH):
        pre = f"encoder.layer.{i}."
        for name in ("attention.attention.query", "attention.attention.key",
                     "attention.attention.value", "attention.output.dense"):
            sd[pre + name + ".weight"], sd[pre + name + ".bias"] = n(D, D), n(D)
        sd[pre + "intermediate.dense.weight"] = n(MLP, D)
        sd[pre + "intermediate.dense.bias"] = n(MLP)
        sd[pre + "output.dense.weight"], sd[pre + "output.dense.bias"] = n(D, MLP), n(D)
        for ln in ("layernorm_before", "layernorm_after"):
            sd[pre + ln + ".weight"], sd[pre + ln + ".bias"] = 1 + n(D), n(D)
    return sd


def _to_timm(sd, rng):
    out = {"cls_token": sd["embeddings.cls_token"],
           "pos_embed": sd["embeddings.position_embeddings"],
           "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
           "norm.weight": sd["layernorm.weight"], "norm.bias": sd["layernorm.bias"],
           "head.weight": rng.normal(size=(13, D)).astype(np.float32),
           "head.bias": rng.normal(size=(13,)).astype(np.float32)}
    for i in range(DEPTH):
        pre, b = f"encoder.layer.{i}.", f"blocks.{i}."
        for suffix in ("weight", "bias"):
            out[b + "attn.qkv." + suffix] = np.concatenate(
                [sd[f"{pre}attention.attention.{x}.{suffix}"] for x in ("query", "key", "value")])
            out[b + "attn.proj." + suffix] = sd[pre + "attention.output.dense." + suffix]
            out[b + "norm1." + suffix] = sd[pre + "layernorm_before." + suffix]
            out[b + "norm2." + suffix] = sd[pre + "layernorm_after." + suffix]
            out[b + "mlp.fc1." + suffix] = sd[pre + "intermediate.dense." + suffix]
            out[b + "mlp.fc2." + suffix] = sd[pre + "output.dense." + suffix]
    return out


def _to_augreg_npz(sd, rng):
    """Real augreg key names (vision_transformer layout) incl. a `pre_logits` we must skip."""
    dh = D // H
    out = {"cls": sd["embeddings.cls_token"],
           "Transformer/posembed_input/pos_embedding": sd["embeddings.position_embeddings"],
           "embedding/kernel": sd["embeddings.patch_embeddings.projection.weight"]
           .transpose(2, 3, 1, 0),
           "embedding/bias": sd["embeddings.patch_embeddings.projection.bias"],
           "Transformer/encoder_norm/scale": sd["layernorm.weight"],
           "Transformer/encoder_norm/bias": sd["layernorm.bias"],
           "pre_logits/kernel": rng.normal(size=(D, D)).astype(np.float32),
           "pre_logits/bias": np.zeros(D, np.float32),
           "head/kernel": rng.normal(size=(D, 13)).astype(np.float32),
           "head/bias": np.zeros(13, np.float32)}
    for i in range(DEPTH):
        pre, b = f"encoder.layer.{i}.", f"Transformer/encoderblock_{i}/"
        mha = b + "MultiHeadDotProductAttention_1/"
        for x in ("query", "key", "value"):
            out[f"{mha}{x}/kernel"] = sd[f"{pre}attention.attention.{x}.weight"].T.reshape(D, H, dh)
            out[f"{mha}{x}/bias"] = sd[f"{pre}attention.attention.{x}.bias"].reshape(H, dh)
        out[mha + "out/kernel"] = sd[pre + "attention.output.dense.weight"].T.reshape(H, dh, D)
        out[mha + "out/bias"] = sd[pre + "attention.output.dense.bias"]
        for ln, src in (("LayerNorm_0", "layernorm_before"), ("LayerNorm_2", "layernorm_after")):
            out[f"{b}{ln}/scale"], out[f"{b}{ln}/bias"] = sd[pre + src + ".weight"], sd[
                pre + src + ".bias"]
        for dense, src in (("Dense_0", "intermediate.dense"), ("Dense_1", "output.dense")):
            out[f"{b}MlpBlock_3/{dense}/kernel"] = sd[f"{pre}{src}.weight"].T
            out[f"{b}MlpBlock_3/{dense}/bias"] = sd[f"{pre}{src}.bias"]
    return out


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    rng = np.random.default_rng(0)
    sd = _random_vit_hf(rng)
    root = tmp_path_factory.mktemp("vit")
    npz, st = root / "vit.npz", root / "vit.safetensors"
    np.savez(npz, **_to_augreg_npz(sd, rng))
    save_file(_to_timm(sd, rng), str(st))
    return {"hf": sd, "vit_npz": str(npz), "vit_timm": str(st)}


@pytest.mark.parametrize("kind", ["vit_npz", "vit_timm"])
def test_report_and_temporal_branch_at_init(kind, checkpoints):
    module = _target()
    params, report = init_from(kind, checkpoints[kind], module, _fake_init(module))
    assert report.missing == [] and report.reshaped == []
    assert report.unused == (["pre_logits/bias", "pre_logits/kernel"] if kind == "vit_npz" else [])
    for i in range(DEPTH):
        blk = params[f"blocks_{i}"]
        np.testing.assert_array_equal(blk["temporal_fc"]["kernel"], 0.0)
        np.testing.assert_array_equal(blk["temporal_fc"]["bias"], 0.0)
        for name in ("qkv", "proj"):
            np.testing.assert_array_equal(blk["temporal_attn"][name]["kernel"],
                                          blk["attn"][name]["kernel"])
        np.testing.assert_array_equal(blk["norm_temporal"]["scale"], blk["norm1"]["scale"])
    np.testing.assert_array_equal(params["time_embed"], 0.0)
    # Fused qkv follows (q | k | v), each head-major: the query kernel is the first D columns.
    q = checkpoints["hf"]["encoder.layer.1.attention.attention.query.weight"].T
    np.testing.assert_allclose(params["blocks_1"]["attn"]["qkv"]["kernel"][:, :D], q)


def _big_vision_name(key):
    return (key.replace("MultiHeadDotProductAttention_1", "MultiHeadDotProductAttention_0")
            .replace("LayerNorm_2", "LayerNorm_1").replace("MlpBlock_3", "MlpBlock_0")
            .replace("Transformer/posembed_input/pos_embedding", "pos_embedding"))


def test_scanned_big_vision_names_give_the_same_params(checkpoints, tmp_path):
    """Newer big_vision layout: `params/` prefix, top-level pos_embedding, scanned blocks."""
    with np.load(checkpoints["vit_npz"]) as f:
        old = dict(f)
    new = {}
    for key, value in old.items():
        m = re.fullmatch(r"Transformer/encoderblock_(\d+)/(.*)", key)
        if m is None:
            new["params/" + _big_vision_name(key)] = value
        elif m.group(1) == "0":  # stack all blocks along a leading depth axis
            stacked = np.stack([old[f"Transformer/encoderblock_{i}/{m.group(2)}"]
                                for i in range(DEPTH)])
            new["params/Transformer/encoderblock/" + _big_vision_name(m.group(2))] = stacked
    np.savez(tmp_path / "bv.npz", **new)
    module = _target()
    fresh = _fake_init(module)
    a, _ = init_from("vit_npz", checkpoints["vit_npz"], module, fresh)
    b, report = init_from("vit_npz", str(tmp_path / "bv.npz"), module, fresh)
    assert report.missing == [] and report.unused == ["pre_logits/bias", "pre_logits/kernel"]
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_resample_grid_and_channel_adaptation_numbers():
    rng = np.random.default_rng(0)
    pos = rng.normal(size=(16, 5)).astype(np.float32)
    np.testing.assert_array_equal(resample_grid(pos, (4, 4)), pos)  # same grid: untouched
    const = np.tile(rng.normal(size=(1, 5)), (16, 1)).astype(np.float32)
    np.testing.assert_allclose(resample_grid(const, (7, 3)), np.tile(const[:1], (21, 1)),
                               atol=1e-6)
    # Half-pixel centres: row i of 8 samples source row i/2 - 1/4 of a 0..3 ramp.
    ramp = np.repeat(np.arange(4.0)[:, None], 4, 1).reshape(16, 1).astype(np.float32)
    up = resample_grid(ramp, (8, 4)).reshape(8, 4)
    np.testing.assert_allclose(up[1:-1, 0], np.arange(1, 7) / 2 - 0.25, atol=1e-6)
    kernel = rng.normal(size=(2, 2, 3, 4)).astype(np.float32)
    two = adapt_patch_kernel(kernel, (2, 2, 2, 4))
    # Equal channels in -> the RGB kernel's response to equal channels.
    np.testing.assert_allclose(two.sum(axis=2), kernel.sum(axis=2), rtol=1e-6)


def _hf_vit(sd, tmp_path):
    """The Hugging Face ViT with these weights: the reference forward.

    Loaded through `from_pretrained` from a file in the saved (v4) naming, which transformers
    4.x and 5.x both read (5.x renames modules in memory).
    """
    pytest.importorskip("torch", reason="needs torch for the ViT reference")
    transformers = pytest.importorskip("transformers", reason="needs transformers")
    transformers.ViTConfig(image_size=S, patch_size=P, hidden_size=D, num_hidden_layers=DEPTH,
                           num_attention_heads=H, intermediate_size=MLP,
                           layer_norm_eps=1e-6).save_pretrained(tmp_path)
    save_file(sd, str(tmp_path / "model.safetensors"))
    return transformers.ViTModel.from_pretrained(str(tmp_path), add_pooling_layer=False).eval()


def _vit_cls(model, images):  # images (B, S, S, 3) -> final-norm cls features
    import torch

    with torch.no_grad():
        out = model(pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2)))
    return out.last_hidden_state[:, 0].numpy()


@pytest.mark.torch
@pytest.mark.parametrize("kind", ["vit_npz", "vit_timm"])
def test_identical_frames_give_the_vit_features(kind, checkpoints, tmp_path):
    vit = _hf_vit(checkpoints["hf"], tmp_path)
    images = np.random.default_rng(1).normal(size=(2, S, S, 3)).astype(np.float32)
    expected = _vit_cls(vit, images)
    module = _target()
    params, _ = init_from(kind, checkpoints[kind], module, _fake_init(module))
    video = np.repeat(images[:, None], module.num_frames, axis=1)
    features = jax.jit(lambda m, p, x: m.apply({"params": p}, x, train=False,
                                               return_features=True), static_argnums=0)
    assert np.max(np.abs(np.asarray(features(module, params, video)) - expected)) < 1e-5
    # Flow-like input: 2 channels, both equal to a grey image -> the ViT on grey RGB.
    grey = images.mean(-1, keepdims=True)
    expected_grey = _vit_cls(vit, np.repeat(grey, 3, axis=-1))
    flow = _target(in_channels=2)
    params, report = init_from(kind, checkpoints[kind], flow, _fake_init(flow))
    assert report.reshaped == ["patch_embed/kernel: (8, 8, 3, 32) -> (8, 8, 2, 32)"]
    got = features(flow, params, np.repeat(grey[:, None], 4, 1).repeat(2, -1))
    assert np.max(np.abs(np.asarray(got) - expected_grey)) < 1e-5
