"""The jitted steps: frozen-teacher + student train step (with gradient accumulation), eval.

No TensorFlow here: the steps only see batches of arrays (docs/architecture.md §2).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from mmkd_jax import models
from mmkd_jax.train import losses


def topk_correct(logits: jnp.ndarray, labels: jnp.ndarray, mask: jnp.ndarray,
                 ks: tuple[int, ...] = (1, 5)) -> dict:
    """Masked counts of examples whose label is among the top-k logits (k capped at #classes)."""
    # Rank of the true class = number of classes with a strictly higher logit.
    true = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    rank = jnp.sum(logits > true, axis=-1)
    out = {f"top{k}": jnp.sum((rank < k) * mask) for k in ks}
    out["count"] = jnp.sum(mask)
    return out


def ensemble_logits_fn(members: list[tuple]):
    modules = [(m, mod) for m, _, mod in members]

    def logits_fn(params_list, batch):
        return models.ensemble_logits(
            [(m, p, mod) for (m, mod), p in zip(modules, params_list)], batch)

    return logits_fn


def member_keys(members: list[tuple]) -> tuple:
    keys = []
    for _, _, modality in members:
        keys += [k for k in models.MODALITY_KEYS[modality] if k not in keys]
    return tuple(keys)


def make_eval_step(logits_fn):
    """Jitted batch -> masked top-1/top-5 counts, summed over the global batch."""

    @jax.jit
    def step(params, batch):
        logits = logits_fn(params, batch)
        return topk_correct(logits, batch["label"], batch["mask"])

    return step


def make_train_step(module, modality: str, members: list[tuple], tx, lr_fn, config):
    """One jitted step: frozen teacher forward + student forward/backward/update, same batch."""
    w_kd = config.distill.w_kd if members else 0.0
    w_gt = config.distill.w_gt if members else 1.0
    tau, accum = config.distill.tau, config.accum_steps
    teacher_fn = ensemble_logits_fn(members) if members else None
    base_rng = jax.random.key(config.seed)

    def loss_fn(params, batch, teacher_params, rng):
        logits = module.apply({"params": params}, *models.model_inputs(modality, batch),
                              train=True, rngs={"dropout": rng})
        aux = {"ce": losses.cross_entropy(logits, batch["label"])}
        loss = w_gt * aux["ce"]
        if teacher_fn is not None:
            # Frozen teacher, run online on this very view (patient & consistent teaching).
            t_logits = jax.lax.stop_gradient(teacher_fn(teacher_params, batch))
            aux["kd"] = losses.kd_loss(logits, t_logits, tau)
            loss = loss + w_kd * aux["kd"]
        aux["accuracy"] = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
        return loss, aux

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step_fn(train_state, batch, teacher_params, step):
        params, opt_state = train_state["params"], train_state["opt_state"]
        rng = jax.random.fold_in(base_rng, step)
        if accum == 1:
            (loss, aux), grads = grad_fn(params, batch, teacher_params, rng)
        else:
            # Micro-batch i takes examples i, i+A, i+2A, ...: a reshape that keeps every
            # device's examples on that device. Equal sizes, so the mean of the micro-batch
            # means is the full-batch mean.
            micro = jax.tree.map(
                lambda x: x.reshape((x.shape[0] // accum, accum) + x.shape[1:]), batch)

            def body(carry, i):
                mb = jax.tree.map(lambda x: x[:, i], micro)
                (loss, aux), grads = grad_fn(params, mb, teacher_params,
                                             jax.random.fold_in(rng, i))
                return jax.tree.map(jnp.add, carry, (loss, aux, grads)), None

            zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(
                lambda: grad_fn(params, jax.tree.map(lambda x: x[:, 0], micro),
                                teacher_params, rng)))
            zeros = (zeros[0][0], zeros[0][1], zeros[1])
            (loss, aux, grads), _ = jax.lax.scan(body, zeros, jnp.arange(accum))
            loss, aux, grads = jax.tree.map(lambda x: x / accum, (loss, aux, grads))
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        out = {"loss": loss, **aux, "grad_norm": optax.global_norm(grads), "lr": lr_fn(step)}
        return {"params": params, "opt_state": opt_state}, out

    return step_fn
