"""Hugging Face TimeSformer -> JAX: logits parity with the PyTorch forward, param counts."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="parity tests need torch (pip install -e '.[parity]')")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers")

from mmkd_jax.convert import init_from, timesformer_from_hf  # noqa: E402
from mmkd_jax.models import TimeSformer  # noqa: E402

pytestmark = pytest.mark.torch

CONFIGS = {
    # Default geometry (8 x 224, patch 16, RGB), narrow and shallow so it runs on a CPU.
    "8x224": dict(image_size=224, patch_size=16, num_frames=8, num_channels=3, hidden_size=32,
                  num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  num_labels=7),
    # Everything else changed: T=3, 48 px, 2-channel input, no qkv bias, 3 heads.
    "3x48_c2_noqkvbias": dict(image_size=48, patch_size=16, num_frames=3, num_channels=2,
                              hidden_size=48, num_hidden_layers=3, num_attention_heads=3,
                              intermediate_size=96, qkv_bias=False, num_labels=5),
}


def _random_hf(cls, seed=0, **config):
    torch.manual_seed(seed)
    model = cls(transformers.TimesformerConfig(**config)).eval()
    with torch.no_grad():  # non-trivial values everywhere (HF leaves time/temporal parts ~0)
        for name, p in model.named_parameters():
            scale = 0.2 if p.ndim > 1 else 0.1
            p.copy_((1.0 if "layernorm" in name and name.endswith("weight") else 0.0)
                    + scale * torch.randn_like(p))
    return model


def _video(config, batch=2, seed=1):
    t, s, c = config["num_frames"], config["image_size"], config["num_channels"]
    return np.random.default_rng(seed).normal(size=(batch, t, s, s, c)).astype(np.float32)


def _torch_forward(model, video):
    with torch.no_grad():
        out = model(pixel_values=torch.from_numpy(video.transpose(0, 1, 4, 2, 3)))
    return out.logits.numpy() if hasattr(out, "logits") else out.last_hidden_state.numpy()


_apply = jax.jit(lambda module, params, video, features=False: module.apply(
    {"params": params}, video, train=False, return_features=features), static_argnums=(0, 3))


def _num_params(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_logits_match_pytorch(name, tmp_path):
    config = CONFIGS[name]
    hf = _random_hf(transformers.TimesformerForVideoClassification, **config)
    hf.save_pretrained(tmp_path)
    assert os.path.exists(tmp_path / "model.safetensors")
    video = _video(config)
    expected = _torch_forward(hf, video)

    module, params = timesformer_from_hf(str(tmp_path))
    assert isinstance(module, TimeSformer) and module.num_classes == config["num_labels"]
    got = np.asarray(_apply(module, params, video))
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) < 1e-4
    assert _num_params(params) == sum(p.numel() for p in hf.parameters())


def test_bin_and_state_dict_inputs_match_safetensors(tmp_path):
    config = CONFIGS["3x48_c2_noqkvbias"]
    hf = _random_hf(transformers.TimesformerForVideoClassification, seed=3, **config)
    expected = _torch_forward(hf, video := _video(config))
    # pytorch_model.bin directory (torch pickle) + config.json.
    hf.config.save_pretrained(tmp_path)
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    module, params = timesformer_from_hf(str(tmp_path))
    assert np.max(np.abs(np.asarray(_apply(module, params, video)) - expected)) < 1e-4
    # In-memory state dict: shapes give the sizes, heads must be named (48 / 3 != 64).
    module, params = timesformer_from_hf(hf.state_dict(), num_heads=3)
    assert (module.depth, module.num_frames, module.image_size, module.in_channels,
            module.qkv_bias) == (3, 3, 48, 2, False)
    assert np.max(np.abs(np.asarray(_apply(module, params, video)) - expected)) < 1e-4


def test_base_model_features_match_cls_hidden_state(tmp_path):
    config = {k: v for k, v in CONFIGS["3x48_c2_noqkvbias"].items() if k != "num_labels"}
    hf = _random_hf(transformers.TimesformerModel, seed=4, **config)
    hf.save_pretrained(tmp_path)
    expected = _torch_forward(hf, video := _video(config))[:, 0]  # final-norm cls token
    module, params = timesformer_from_hf(str(tmp_path))
    assert module.num_classes == 0
    got = _apply(module, params, video, True)
    assert np.max(np.abs(np.asarray(got) - expected)) < 1e-4
    assert _num_params(params) == sum(p.numel() for p in hf.parameters())


def test_strict_conversion_rejects_incomplete_checkpoints():
    config = CONFIGS["3x48_c2_noqkvbias"]
    state = _random_hf(transformers.TimesformerForVideoClassification, **config).state_dict()
    del state["timesformer.encoder.layer.1.temporal_dense.weight"]
    with pytest.raises(ValueError, match="blocks_1/temporal_fc/kernel"):
        timesformer_from_hf(state, num_heads=3)


def test_init_from_hf_resamples_and_keeps_new_head(tmp_path):
    config = CONFIGS["3x48_c2_noqkvbias"]
    hf = _random_hf(transformers.TimesformerForVideoClassification, **config)
    hf.save_pretrained(tmp_path)
    src_module, src = timesformer_from_hf(str(tmp_path))
    # Fine-tune target: 6 frames, 64 px (grid 4x4 instead of 3x3), 11 classes.
    target = TimeSformer(num_classes=11, num_frames=6, image_size=64, patch_size=16,
                         in_channels=2, hidden_size=48, depth=3, num_heads=3, mlp_dim=96,
                         qkv_bias=False)
    shapes = jax.eval_shape(lambda: target.init(jax.random.key(0), jnp.zeros((1, 6, 64, 64, 2)),
                                                train=False))
    rng = np.random.default_rng(0)  # stands in for a fresh init (without compiling one)
    fresh = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)
    params, report = init_from("hf_timesformer", str(tmp_path), target, fresh["params"])
    assert sorted(report.reshaped) == [
        "pos_embed: (1, 10, 48) -> (1, 17, 48)", "time_embed: (1, 3, 48) -> (1, 6, 48)"]
    assert [m.split(" ")[0] for m in report.missing] == ["head/bias", "head/kernel"]
    assert sorted(report.unused) == ["head/bias", "head/kernel"]
    np.testing.assert_array_equal(params["head"]["kernel"], fresh["params"]["head"]["kernel"])
    np.testing.assert_array_equal(params["blocks_2"]["temporal_fc"]["kernel"],
                                  src["blocks_2"]["temporal_fc"]["kernel"])
    # Nearest-in-time: frame i of 6 reads source frame floor(i * 3 / 6).
    np.testing.assert_array_equal(params["time_embed"][0],
                                  np.asarray(src["time_embed"])[0][[0, 0, 1, 1, 2, 2]])
    np.testing.assert_array_equal(params["pos_embed"][0, 0], src["pos_embed"][0, 0])
    assert "head" in str(report) and src_module.num_frames == 3


def test_safetensors_conversion_imports_neither_torch_nor_transformers(tmp_path):
    config = CONFIGS["3x48_c2_noqkvbias"]
    _random_hf(transformers.TimesformerForVideoClassification, **config).save_pretrained(tmp_path)
    code = ("import sys; sys.modules['torch'] = sys.modules['transformers'] = None\n"
            "from mmkd_jax.convert import timesformer_from_hf\n"
            f"m, p = timesformer_from_hf({str(tmp_path)!r}); print(m.depth, m.num_classes)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(__file__)), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["3", "5"]
