"""The frozen teacher: average of member logits, each member reading its own modality."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmkd_jax.models import MODALITY_KEYS, build_model, ensemble_logits, model_inputs

B, T, S, K, NC = 2, 4, 16, 3, 10


def _fake_init(module, inputs, seed):
    """Random params shaped like `module.init` (no initialiser compilation)."""
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *inputs, train=False))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (0.3 * rng.normal(size=s.shape)).astype(np.float32),
                        shapes["params"])


@pytest.fixture(scope="module")
def members_and_batch():
    rng = np.random.default_rng(0)
    batch = {"rgb": rng.normal(size=(B, T, S, S, 3)).astype(np.float32),
             "flow": rng.normal(size=(B, T, S, S, 2)).astype(np.float32),
             "boxes": rng.uniform(size=(B, T, K, 4)).astype(np.float32),
             "categories": rng.integers(0, 3, size=(B, T, K)).astype(np.int32),
             "label": np.zeros(B, np.int32)}
    small = {"name": "timesformer", "variant": "tiny", "depth": 1, "image_size": S}
    specs = [(small, "rgb"), ({**small, "in_channels": 2}, "flow"),
             ({"name": "stlt", "variant": "tiny", "spatial_layers": 1, "temporal_layers": 1},
              "layout")]
    members = []
    for i, (cfg, modality) in enumerate(specs):
        module = build_model(cfg)
        members.append((module, _fake_init(module, model_inputs(modality, batch), i), modality))
    return members, batch


def test_model_inputs_follow_modality_keys():
    batch = {"rgb": 1, "flow": 2, "boxes": 3, "categories": 4, "omni": 5}
    assert MODALITY_KEYS == {"rgb": ("rgb",), "flow": ("flow",),
                             "layout": ("boxes", "categories"), "omni": ("omni",)}
    assert model_inputs("layout", batch) == (3, 4)
    assert model_inputs("flow", batch) == (2,)
    with pytest.raises(ValueError, match="'audio'"):
        model_inputs("audio", batch)


def test_average_of_member_logits(members_and_batch):
    members, batch = members_and_batch
    modules = [(m, mod) for m, _, mod in members]

    @jax.jit
    def run(ps, b):  # one program: the ensemble and each member alone
        each = [m.apply({"params": p}, *model_inputs(mod, b), train=False)
                for (m, mod), p in zip(modules, ps)]
        return ensemble_logits([(m, p, mod) for (m, mod), p in zip(modules, ps)], b), each

    got, each = run([p for _, p, _ in members], batch)
    assert got.shape == (B, NC) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, np.mean(each, axis=0), atol=1e-5)
    # A single member is that member; variables dicts ({"params": ...}) are accepted too.
    m, p, mod = members[2]
    single = jax.jit(lambda v: ensemble_logits([(m, v, mod)], batch))({"params": p})
    np.testing.assert_allclose(single, each[2], atol=1e-5)
    with pytest.raises(ValueError, match="at least one member"):
        ensemble_logits([], batch)


def test_teacher_is_frozen(members_and_batch):
    members, batch = members_and_batch
    m0, p0, mod0 = members[0]

    def loss(p):
        return jnp.sum(ensemble_logits([(m0, p, mod0)] + members[1:], batch) ** 2)

    grads = jax.jit(jax.grad(loss))(p0)
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) == 0.0
