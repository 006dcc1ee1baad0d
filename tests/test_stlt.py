"""STLT: frame types, masking, variants, and parity with a PyTorch reference in the authors'
parameter naming (gorjanradevski/revisiting-spatial-temporal-layouts)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmkd_jax.models import STLT, build_model
from mmkd_jax.models.stlt import frame_types

B, T, K = 2, 5, 3


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 0.5, size=(B, T, K, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0.1, 0.5, size=(B, T, K, 2))], -1)
    cats = rng.integers(1, 3, size=(B, T, K))
    cats[:, :, 2] = 0  # last slot always padding
    cats[0, 1] = 0  # an empty frame
    cats[1, 3:] = 0  # two empty frames at the end
    boxes = np.where(cats[..., None] > 0, boxes, 0.0).astype(np.float32)
    return boxes, cats.astype(np.int32)


def test_frame_types_regular_empty_extract():
    _, cats = _inputs()
    np.testing.assert_array_equal(frame_types(jnp.asarray(cats)),
                                  [[2, 3, 2, 2, 2, 4], [2, 2, 2, 3, 3, 4]])


def _fake_init(model, boxes, cats, seed=0, std=0.2):
    """Random params shaped like `model.init`, LayerNorm scales around 1; eval_shape + numpy
    avoids compiling every initialiser (seconds per model on CPU)."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), boxes, cats, train=False))
    rng = np.random.default_rng(seed)
    draw = lambda path, s: (jax.tree_util.keystr(path).endswith("['scale']")
                            + std * rng.normal(size=s.shape)).astype(np.float32)
    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def tiny():
    """The tiny STLT, random params and a jitted eval forward."""
    model = build_model({"name": "stlt", "variant": "tiny", "num_frames": T})
    params = _fake_init(model, *_inputs())
    apply = jax.jit(lambda b, c: model.apply(params, b, c, train=False))
    return model, params, apply


def test_padded_boxes_do_not_change_logits(tiny):
    _, _, apply = tiny
    boxes, cats = _inputs()
    noisy = np.where(cats[..., None] == 0, np.random.default_rng(1).uniform(size=boxes.shape),
                     boxes).astype(np.float32)
    np.testing.assert_allclose(apply(noisy, cats), apply(boxes, cats), atol=1e-6)
    # ...while a real box does change them.
    moved = boxes.copy()
    moved[0, 0, 0] += 0.1
    assert np.max(np.abs(apply(moved, cats) - apply(boxes, cats))) > 1e-3


def test_variants_layer_counts_and_param_count():
    d, f, c = 768, 3072, 174
    layer = 4 * d * d + 4 * d + 2 * d * f + f + d + 4 * d  # attn + mlp + 2 LayerNorms
    rest = 4 * d + 4 * d + d + 2 * d + 9 * d + 5 * d + 2 * d + (d * d + d) + 2 * d + d * c + c
    for variant, (s, t, heads) in {"bmvc21": (4, 8, 12), "iccv23": (6, 6, 8)}.items():
        model = build_model({"name": "stlt", "variant": variant})
        assert (model.spatial_layers, model.temporal_layers, model.num_heads) == (s, t, heads)
        shapes = jax.eval_shape(lambda m=model: m.init(
            jax.random.key(0), jnp.zeros((1, 8, 4, 4)), jnp.zeros((1, 8, 4), jnp.int32),
            train=False))
        count = sum(x.size for x in jax.tree.leaves(shapes))
        assert count == rest + (s + t) * layer, variant


def test_dropout_uses_the_dropout_stream_only():
    # One layer each: every distinct dropout shape costs seconds of RNG compilation on CPU.
    model = build_model({"name": "stlt", "variant": "tiny", "num_frames": T,
                         "spatial_layers": 1, "temporal_layers": 1})
    boxes, cats = _inputs()
    params = _fake_init(model, boxes, cats)
    # An "rbg" key compiles several times faster than threefry on CPU; semantics are the same.
    run = jax.jit(lambda key: model.apply(params, boxes, cats, train=True,
                                          rngs={"dropout": jax.random.key(key, impl="rbg")}))
    np.testing.assert_array_equal(run(1), run(1))
    assert np.max(np.abs(run(1) - run(2))) > 1e-3
    with pytest.raises(Exception, match="dropout"):
        model.apply(params, boxes, cats, train=True)


def test_bfloat16_compute_close_to_float32(tiny):
    model, params, apply = tiny
    boxes, cats = _inputs()
    f32 = apply(boxes, cats)
    bf16 = jax.jit(lambda: model.clone(dtype="bfloat16").apply(params, boxes, cats,
                                                               train=False))()
    assert bf16.dtype == jnp.float32 and jax.tree.leaves(params)[0].dtype == jnp.float32
    err = float(np.max(np.abs(bf16 - f32)))
    assert 0 < err < 0.03 * float(np.max(np.abs(f32))), err


# ---------------------------------------------------------------- PyTorch reference (authors')
def _reference_stlt(torch, d, heads, spatial, temporal, classes, positions):
    """STLT written from the BMVC'21 paper with the authors' module names."""
    nn = torch.nn

    def encoder(layers):
        return nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.1, activation="gelu"), layers,
            enable_nested_tensor=False)

    class CategoryBoxEmbeddings(nn.Module):
        def __init__(self):
            super().__init__()
            self.category_embeddings = nn.Embedding(4, d, padding_idx=0)
            self.box_embedding = nn.Linear(4, d)
            self.score_embeddings = nn.Linear(1, d)  # Action Genome only: unused
            self.layer_norm = nn.LayerNorm(d, eps=1e-12)

        def forward(self, boxes, cats):
            return self.layer_norm(self.category_embeddings(cats) + self.box_embedding(boxes))

    class SpatialTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.category_box_embeddings = CategoryBoxEmbeddings()
            self.encoder_layer = nn.TransformerEncoderLayer(d, heads, 4 * d, activation="gelu")
            self.transformer = encoder(spatial)

        def forward(self, boxes, cats):  # (B, F, 1+K, ...) -> (B, F, D)
            b, f, n = cats.shape
            x = self.category_box_embeddings(boxes, cats).flatten(0, 1).transpose(0, 1)
            x = self.transformer(x, src_key_padding_mask=(cats == 0).flatten(0, 1))
            return x.transpose(0, 1).reshape(b, f, n, d)[:, :, 0]

    class FramesEmbeddings(nn.Module):
        def __init__(self):
            super().__init__()
            self.layout_embedding = SpatialTransformer()
            self.position_embeddings = nn.Embedding(positions, d)
            self.frame_type_embedding = nn.Embedding(5, d, padding_idx=0)
            self.layer_norm = nn.LayerNorm(d, eps=1e-12)
            self.register_buffer("position_ids", torch.arange(positions)[None])

        def forward(self, boxes, cats, types):
            x = self.layout_embedding(boxes, cats)
            x = x + self.position_embeddings(self.position_ids[:, :x.shape[1]])
            return self.layer_norm(x + self.frame_type_embedding(types))

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.frames_embeddings = FramesEmbeddings()
            self.transformer = encoder(temporal)

        def forward(self, boxes, cats, types):
            x = self.frames_embeddings(boxes, cats, types).transpose(0, 1)
            n = x.shape[0]
            causal = torch.triu(torch.full((n, n), float("-inf")), diagonal=1)
            return self.transformer(x, mask=causal)  # (F, B, D)

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.layer_norm = nn.Linear(d, d), nn.LayerNorm(d, eps=1e-12)
            self.fc2 = nn.Linear(d, classes)

        def forward(self, x):
            return self.fc2(self.layer_norm(nn.functional.gelu(self.fc1(x))))

    class Stlt(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone, self.prediction_head = Backbone(), Head()

        def forward(self, boxes, cats):
            """Objects (B, T, K, 4) / (B, T, K): adds cls boxes, frame types, extract frame."""
            b, t, k = cats.shape
            cls_box = torch.tensor([0.0, 0.0, 1.0, 1.0]).expand(b, t + 1, 1, 4)
            boxes = torch.cat([cls_box, torch.cat([boxes, torch.zeros(b, 1, k, 4)], 1)], 2)
            types = torch.where((cats > 0).any(-1), 2, 3)
            types = torch.cat([types, torch.full((b, 1), 4)], 1)
            cats = torch.cat([cats, torch.zeros(b, 1, k, dtype=cats.dtype)], 1)
            cats = torch.cat([torch.full((b, t + 1, 1), 3, dtype=cats.dtype), cats], 2)
            out = self.backbone(boxes, cats, types)
            return self.prediction_head(out[t])  # lengths - 1: the extract frame

    return Stlt()


@pytest.mark.torch
def test_matches_pytorch_reference_in_authors_naming():
    torch = pytest.importorskip("torch", reason="needs torch for the reference STLT")
    from mmkd_jax.convert import stlt_from_torch

    torch.manual_seed(0)
    ref = _reference_stlt(torch, d=32, heads=4, spatial=2, temporal=2, classes=7,
                          positions=16).eval()
    with torch.no_grad():  # LayerNorm affine params away from (1, 0) so they matter
        for name, p in ref.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    boxes, cats = _inputs()
    with torch.no_grad():
        expected = ref(torch.from_numpy(boxes), torch.from_numpy(cats).long()).numpy()

    module, params = stlt_from_torch(ref.state_dict(), num_heads=4, num_frames=T)
    assert (module.hidden_size, module.spatial_layers, module.temporal_layers,
            module.max_positions, module.num_classes, module.mlp_dim) == (32, 2, 2, 16, 7, 128)
    got = np.asarray(jax.jit(lambda p: module.apply({"params": p}, boxes, cats, train=False))(
        params))
    assert np.max(np.abs(got - expected)) < 1e-4
    # Every reference weight is used except the score embedding and the unused layer template.
    ours = sum(x.size for x in jax.tree.leaves(params))
    skip = ("score_embeddings", "layout_embedding.encoder_layer.")
    theirs = sum(p.numel() for n, p in ref.named_parameters() if not any(s in n for s in skip))
    assert ours == theirs


@pytest.mark.torch
def test_stlt_from_torch_reports_unused_keys(caplog):
    torch = pytest.importorskip("torch", reason="needs torch for the reference STLT")
    from mmkd_jax.convert import stlt_from_torch

    ref = _reference_stlt(torch, d=32, heads=4, spatial=1, temporal=1, classes=3, positions=9)
    state = {"module." + k: v for k, v in ref.state_dict().items()}  # DataParallel prefix
    with caplog.at_level("INFO"):
        module, _ = stlt_from_torch(state)
    assert isinstance(module, STLT) and module.num_heads == 1  # 32 // 64 -> at least 1
    unused = caplog.text.split("unused (")[1].split("reshaped")[0]
    assert "score_embeddings.weight" in unused and "position_ids" in unused
    assert "layout_embedding.encoder_layer.linear1.weight" in unused
    assert "missing (0)" in caplog.text
