"""The jitted steps: frozen-teacher + student train step (with gradient accumulation), eval.

No TensorFlow here: the steps only see batches of arrays (docs/architecture.md §2).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmkd_jax import models
from mmkd_jax.train import losses, mixup


def topk_correct(logits: jnp.ndarray, labels: jnp.ndarray, mask: jnp.ndarray,
                 ks: tuple[int, ...] = (1, 5)) -> dict:
    """Masked counts of examples whose label is among the top-k logits (k capped at #classes).

    An example with any non-finite logit is wrong at every k: a NaN compares false, so its rank
    would be 0 (a diverged model would score 100%).
    """
    # Rank of the true class = number of classes with a strictly higher logit.
    true = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    rank = jnp.sum(logits > true, axis=-1)
    finite = jnp.all(jnp.isfinite(logits), axis=-1)
    out = {f"top{k}": jnp.sum(((rank < k) & finite) * mask) for k in ks}
    out["count"] = jnp.sum(mask)
    return out


def accuracy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Top-1 accuracy of a batch; non-finite logits count as wrong (as in topk_correct)."""
    finite = jnp.all(jnp.isfinite(logits), axis=-1)
    return jnp.mean((jnp.argmax(logits, -1) == labels) & finite)


def all_finite(tree) -> jnp.ndarray:
    """True when every float in `tree` is finite: one pass over the leaves, a scalar out."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


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
    alpha = float(config.distill.get("mixup", 0.0)) if members else 0.0

    def loss_fn(params, batch, teacher_params, rng):
        logits = module.apply({"params": params}, *models.model_inputs(modality, batch),
                              train=True, rngs={"dropout": rng})
        aux = {"ce": mixup.cross_entropy(logits, batch)}
        loss = w_gt * aux["ce"]
        if teacher_fn is not None:
            # Frozen teacher, run online on this very view (patient & consistent teaching).
            t_logits = jax.lax.stop_gradient(teacher_fn(teacher_params, batch))
            aux["kd"] = losses.kd_loss(logits, t_logits, tau)
            loss = loss + w_kd * aux["kd"]
        aux["accuracy"] = accuracy(logits, batch["label"])
        return loss, aux

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step_fn(train_state, batch, teacher_params, step):
        params, opt_state = train_state["params"], train_state["opt_state"]
        rng = jax.random.fold_in(base_rng, step)
        if alpha > 0:  # teacher and student see the same mixed clip (train/mixup.py)
            batch = mixup.mix(batch, mixup.rng(config.seed, step), alpha)
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
        # `finite`: the loss and the updated params, checked by the trainer at every step
        # before anything is saved.
        out = {"loss": loss, **aux, "grad_norm": optax.global_norm(grads), "lr": lr_fn(step),
               "finite": jnp.isfinite(loss) & all_finite(params)}
        return {"params": params, "opt_state": opt_state}, out

    return step_fn


@dataclasses.dataclass(frozen=True)
class Population:
    """What differs between the K members of a population (mmkd_jax/train/trainer.py), all
    NumPy arrays with a leading member axis.

    seeds     (K,)   each member's `config.seed` (dropout stream)
    w_kd, w_gt, tau  (K,) its distillation weights (w_kd 0 for a member without teacher)
    teacher   (K, M) weights of the M teacher slots in each member's logit average (rows of a
                     member without teacher are 0)
    streams   (K,)   the data stream (index into the step's batches) each member reads
    slot_streams (M,) the data stream each teacher slot runs on
    stream_seeds (S,) the seed of each stream (its mixing key, train/mixup.py)
    mixup     alpha of the mixed views of every member with a teacher (0: none); members
              without teacher read the plain batches
    """

    seeds: np.ndarray
    w_kd: np.ndarray
    w_gt: np.ndarray
    tau: np.ndarray
    teacher: np.ndarray
    streams: np.ndarray
    slot_streams: np.ndarray
    stream_seeds: np.ndarray
    mixup: float = 0.0

    @property
    def size(self) -> int:
        return len(self.seeds)

    @property
    def num_streams(self) -> int:
        return int(self.streams.max()) + 1


def make_population_step(module, modality: str, slots: list[tuple], tx, lr_fn,
                         population: Population, accum: int = 1):
    """One jitted step for K models of one architecture, vmapped over a leading member axis.

    `slots` are the distinct frozen teacher members [(module, params, modality)]: each runs
    once per batch of its stream, and member k's teacher is the `population.teacher[k]`-weighted
    sum of their logits (a logit average), so students sharing members share their forward pass.
    The step takes `(train_state, batches, slot_params, step)` with every leaf of the state
    stacked over members and `batches` one batch per data stream; it returns per-member metrics
    (K,). Each member sees exactly what its solo `make_train_step` would: its stream's batch,
    its teacher, its weights and its own dropout stream.
    """
    p = population
    slot_modules = [(m, mod) for m, _, mod in slots]
    weights = jnp.asarray(p.teacher, jnp.float32)
    base_rngs = [jax.random.key(int(s)) for s in p.seeds]
    w_kd, w_gt, tau = (jnp.asarray(x, jnp.float32) for x in (p.w_kd, p.w_gt, p.tau))
    with_kd = bool(np.any(p.w_kd != 0))
    # Views: the S plain stream batches, then (mixup) their S mixed versions. Members with a
    # teacher and the teacher slots read the mixed ones.
    num_streams = len(p.stream_seeds)
    mixes = (p.mixup > 0) & np.any(p.teacher != 0, axis=1)
    member_views = np.asarray(p.streams) + num_streams * mixes
    slot_views = np.asarray(p.slot_streams) + num_streams * int(p.mixup > 0)
    member_keys = (*models.MODALITY_KEYS[modality], "label") + (
        ("mix_lam", "mix_label") if mixes.any() else ())

    def member_view(batch: dict) -> dict:
        """What a member reads of a view; plain views get the fields of an unmixed batch."""
        batch = {"mix_lam": jnp.ones(batch["label"].shape, jnp.float32),
                 "mix_label": batch["label"], **batch}
        return {k: batch[k] for k in member_keys}

    def teacher_logits(slot_params, batches, num_classes: int) -> jnp.ndarray:
        """(K, B, C) teacher logits of every member (zeros for members without teacher)."""
        b = batches[0]["label"].shape[0]
        if not slot_modules:
            return jnp.zeros((p.size, b, num_classes), jnp.float32)
        per_slot = jnp.stack([
            module_j.apply({"params": params_j}, *models.model_inputs(mod_j, batches[s]),
                           train=False).astype(jnp.float32)
            for (module_j, mod_j), params_j, s in zip(slot_modules, slot_params, slot_views)])
        return jax.lax.stop_gradient(jnp.einsum("km,mbc->kbc", weights, per_slot))

    def member_loss(params, batch, t_logits, rng, w_kd, w_gt, tau):
        logits = module.apply({"params": params}, *models.model_inputs(modality, batch),
                              train=True, rngs={"dropout": rng})
        aux = {"ce": mixup.cross_entropy(logits, batch)}
        loss = w_gt * aux["ce"]
        if with_kd:
            aux["kd"] = losses.kd_loss(logits, t_logits, tau)
            loss = loss + w_kd * aux["kd"]
        aux["accuracy"] = accuracy(logits, batch["label"])
        return loss, aux

    grad_fn = jax.value_and_grad(member_loss, has_aux=True)

    def grads_on(params, batches, slot_params, rngs):
        num_classes = module.num_classes
        t = teacher_logits(slot_params, batches, num_classes)
        if len(set(member_views.tolist())) == 1:
            member_batches, batch_axis = member_view(batches[member_views[0]]), None
        else:
            stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *map(member_view, batches))
            member_batches, batch_axis = jax.tree.map(lambda x: x[member_views], stacked), 0
        return jax.vmap(grad_fn, in_axes=(0, batch_axis, 0, 0, 0, 0, 0))(
            params, member_batches, t, rngs, w_kd, w_gt, tau)

    def step_fn(train_state, batches, slot_params, step):
        params, opt_state = train_state["params"], train_state["opt_state"]
        rngs = jnp.stack([jax.random.fold_in(r, step) for r in base_rngs])
        if p.mixup > 0:
            batches = list(batches) + [mixup.mix(b, mixup.rng(int(seed), step), p.mixup)
                                       for b, seed in zip(batches, p.stream_seeds)]
        if accum == 1:
            (loss, aux), grads = grads_on(params, batches, slot_params, rngs)
        else:
            # As make_train_step: micro-batch i takes examples i, i+A, ... of every stream.
            micro = [jax.tree.map(lambda x: x.reshape((x.shape[0] // accum, accum)
                                                      + x.shape[1:]), b) for b in batches]

            def body(carry, i):
                mbs = [jax.tree.map(lambda x: x[:, i], m) for m in micro]
                keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(rngs, i)
                (loss, aux), grads = grads_on(params, mbs, slot_params, keys)
                return jax.tree.map(jnp.add, carry, (loss, aux, grads)), None

            shapes = jax.eval_shape(lambda: grads_on(
                params, [jax.tree.map(lambda x: x[:, 0], m) for m in micro], slot_params,
                rngs))
            zeros = jax.tree.map(jnp.zeros_like, (shapes[0][0], shapes[0][1], shapes[1]))
            (loss, aux, grads), _ = jax.lax.scan(body, zeros, jnp.arange(accum))
            loss, aux, grads = jax.tree.map(lambda x: x / accum, (loss, aux, grads))
        updates, opt_state = jax.vmap(tx.update)(grads, opt_state, params)
        params = jax.vmap(optax.apply_updates)(params, updates)
        out = {"loss": loss, **aux, "grad_norm": jax.vmap(optax.global_norm)(grads),
               "lr": jnp.broadcast_to(lr_fn(step), loss.shape),
               "finite": jnp.isfinite(loss) & jax.vmap(all_finite)(params)}
        return {"params": params, "opt_state": opt_state}, out

    return step_fn


def make_population_eval_step(logits_fn, size: int):
    """Jitted (params stacked over `size` members, batch) -> masked top-1/top-5 counts (K,)."""
    counts = lambda p, batch: topk_correct(logits_fn(p, batch), batch["label"], batch["mask"])

    @jax.jit
    def step(params, batch):
        if size == 1:  # a solo run evaluates exactly as make_eval_step does
            return jax.tree.map(lambda x: x[None], counts(jax.tree.map(lambda x: x[0], params),
                                                          batch))
        return jax.vmap(counts, in_axes=(0, None))(params, batch)

    return step
