"""The one trainer: baselines, omnivore and distillation differ only by config.

Read top to bottom: config, mesh, data, model & optimizer, teacher, checkpoint, step, loop.

`train_population` trains K runs of one architecture and one recipe at once (K seeds of a row,
the students that differ only in their teacher, the same row on two datasets): their parameters and
optimiser states are stacked on a leading member axis and one jitted, vmapped step updates them
all, with every distinct teacher member run once per batch. Each run keeps its own workdir,
written exactly as if it had been trained alone (`train_and_evaluate`, K = 1). The member axis
is replicated on the mesh like the parameters themselves (only the batch is sharded): it is
meant for models small enough that K copies fit on every device.
"""
from __future__ import annotations

import json
import math
import os
import signal
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from mmkd_jax import checkpoint_meta, convert, models
from mmkd_jax.data import pipeline
from mmkd_jax.train import (
    checkpoint,
    evaluate,
    metrics,
    optim,
    sharding,
    state,
    steps,
    validate,
    workdir_lock,
)
from mmkd_jax.train import members as members_lib

# Config keys in which the members of a population may differ; everything else (model, data,
# optimiser, schedule, batch, eval, logging) must be equal, except the dataset's name: members may
# read different datasets of one size and label set (the two splits of Table 1).
POPULATION_FREE_KEYS = ("seed", "teacher", "distill", "experiment", "preset", "analysis")
POPULATION_FREE_DATA_KEYS = ("name",)


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Fills what the dataset decides (class count) and fails early on a bad config."""
    config = ml_collections.ConfigDict(config.to_dict())  # an unlocked copy we may complete
    validate.check(config)
    if config.modality not in models.MODALITY_KEYS:
        raise ValueError(f"config.modality={config.modality!r}; choose one of "
                         f"{sorted(models.MODALITY_KEYS)}.")
    if config.model.get("num_classes", -1) <= 0:
        config.model.num_classes = len(pipeline.label_names(config.data))
    config.model.num_frames = config.data.num_frames  # the model sees what the pipeline emits
    if config.batch_size % config.accum_steps:
        raise ValueError(f"batch_size={config.batch_size} is not divisible by "
                         f"accum_steps={config.accum_steps}.")
    return config


def check_population(configs: list[ml_collections.ConfigDict], names: list[str],
                     workdirs: list[str]) -> None:
    """Members of one population share everything but POPULATION_FREE_KEYS (and the dataset
    name)."""
    def shared(c):
        out = {k: v for k, v in c.to_dict().items() if k not in POPULATION_FREE_KEYS}
        out["data"] = {k: v for k, v in out["data"].items() if k not in POPULATION_FREE_DATA_KEYS}
        return out

    first = shared(configs[0])
    for cfg, name in zip(configs[1:], names[1:]):
        other = shared(cfg)
        diff = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
        if diff:
            raise ValueError(f"Population member {name!r} differs from {names[0]!r} in "
                             f"{diff}; members may only differ in {POPULATION_FREE_KEYS}.")
    if len(set(workdirs)) != len(workdirs):
        raise ValueError(f"Population members need distinct workdirs, got {workdirs}")


def log_labels(names: list[str], workdirs: list[str]) -> list[str]:
    """What log lines call each member: its name, or where names repeat (a row on two splits
    or seeds) its workdir below the members' common folder."""
    if len(set(names)) == len(names):
        return names
    root = os.path.commonpath(workdirs)
    return [os.path.relpath(wd, root) for wd in workdirs]


def _save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    if jax.process_index() == 0:
        with open(os.path.join(workdir, members_lib.CONFIG_FILE), "w") as f:
            f.write(config.to_json_best_effort(indent=2))


class _Preemption:
    """SIGTERM (preemption, `kill`) asks the loop to checkpoint and stop at the next step."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def _member(tree, k: int):
    return jax.tree.map(lambda x: x[k], tree)


def _stack(trees: list):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains (or resumes) the run in `workdir`; returns the results written to results.json."""
    return train_population([(config, workdir)])[0]


def train_population(runs: list[tuple[ml_collections.ConfigDict, str]]) -> list[dict]:
    """Trains (or resumes) every (config, workdir) run together; returns their results.

    Each workdir is locked for the run (train/workdir_lock.py): a second run there refuses.
    """
    workdirs = [os.path.abspath(wd) for _, wd in runs]
    held = []
    try:
        for wd in workdirs:
            workdir_lock.hold(wd)
            held.append(wd)
        return _train_population([c for c, _ in runs], workdirs)
    finally:
        for wd in held:
            workdir_lock.let_go(wd)


def _resume(ckpts: list[checkpoint.Checkpointer], abstract_params, abstract_opt_state,
            labels: list[str]) -> tuple[int, list]:
    """The step every member resumes from (0: fresh) and each member's restored
    (step, params, opt_state, meta), or None. Damaged newest steps are moved aside; members
    that stopped at different steps resume together from the newest step all of them have."""
    at_most = None
    while True:
        got = [c.restore_latest_intact(abstract_params, abstract_opt_state, at_most)
               for c in ckpts]
        found = [g[0] if g else 0 for g in got]
        if len(set(found)) == 1:
            return found[0], got
        if min(found) == 0:
            logging.warning("Population members %s stopped at steps %s: some have no "
                            "checkpoint, so all start from step 0.", labels, found)
            return 0, [None] * len(ckpts)
        logging.warning("Population members stopped at steps %s: resuming all from %d.",
                        found, min(found))
        at_most = min(found)


def _train_population(configs: list[ml_collections.ConfigDict],
                      workdirs: list[str]) -> list[dict]:
    # --- config
    for wd in workdirs:
        os.makedirs(wd, exist_ok=True)
    configs = [resolve_config(c) for c in configs]
    names = [c.get("experiment", os.path.basename(os.path.normpath(wd)))
             for c, wd in zip(configs, workdirs)]
    check_population(configs, names, workdirs)
    labels = log_labels(names, workdirs)
    config, num = configs[0], len(configs)
    train_modality = config.modality
    eval_modality = checkpoint_meta.eval_modality(train_modality)  # omnivore: RGB at test
    for cfg, wd in zip(configs, workdirs):
        if cfg.teacher.members:
            # Members first (they may need training), before this run takes any resources.
            members_lib.ensure_trained(cfg, wd, train_and_evaluate)
        _save_config(cfg, wd)

    # --- mesh
    mesh = sharding.make_mesh()
    repl = sharding.replicated(mesh)
    sharding.check_batch_size(config.batch_size // config.accum_steps, mesh)

    # --- data: members with the same dataset and seed read the same stream of batches
    datasets = sorted({c.data.name for c in configs})
    data_cfgs = {c.data.name: c.data for c in configs}
    per_dataset = {d: pipeline.steps_per_epoch(data_cfgs[d], config.batch_size) for d in datasets}
    if len(set(per_dataset.values())) > 1:
        raise ValueError(f"Population members read datasets of different sizes ({per_dataset} "
                         "steps per epoch); train them apart.")
    steps_per_epoch = per_dataset[datasets[0]]
    total_steps = config.total_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    eval_every = max(1, int(round(config.eval_every_epochs * steps_per_epoch)))
    ckpt_every = config.checkpoint_every_steps or eval_every
    stream_keys = sorted({(c.data.name, int(c.seed)) for c in configs})
    member_stream = np.array([stream_keys.index((c.data.name, int(c.seed))) for c in configs])

    # --- model & optimizer
    module = models.build_model(config.model)
    init_kind = config.model.init_from.get("kind", "")
    tx, lr_fn = optim.make_optimizer(config.optim, total_steps)

    # --- teacher (frozen: a separate, non-donated argument of the step; never checkpointed).
    # Slots are the distinct (member run, stream) pairs: students sharing a member share its
    # forward pass.
    slots, slot_keys, slot_streams, member_infos = [], [], [], []
    teacher = np.zeros((num, 0), np.float32)
    for k, (cfg, wd) in enumerate(zip(configs, workdirs)):
        loaded, infos = (members_lib.load(cfg, wd, repl) if cfg.teacher.members else ([], []))
        member_infos.append(infos)
        for member, info in zip(loaded, infos):
            key = (info["workdir"], int(member_stream[k]))
            if key not in slot_keys:
                slot_keys.append(key)
                slots.append(member)
                slot_streams.append(key[1])
                teacher = np.concatenate([teacher, np.zeros((num, 1), np.float32)], 1)
            teacher[k, slot_keys.index(key)] = 1.0 / len(loaded)
    member_sets = [[slots[j] for j in np.flatnonzero(teacher[k])] for k in range(num)]
    keys = tuple(models.MODALITY_KEYS[train_modality]) + tuple(
        k for k in steps.member_keys(slots) if k not in models.MODALITY_KEYS[train_modality])

    # --- checkpoint: resume from the newest intact step of every member
    ckpts = [checkpoint.Checkpointer(os.path.join(wd, "checkpoints"),
                                     keep=config.keep_checkpoints) for wd in workdirs]
    for ckpt in ckpts:
        ckpt.check_writable()  # fail now, not in orbax's thread at the first save
    label_names = {d: pipeline.label_names(data_cfgs[d]) for d in datasets}
    if any(label_names[d] != label_names[datasets[0]] for d in datasets):
        raise ValueError(f"Population members read datasets with different classes: {datasets}")
    label_names = label_names[datasets[0]]
    abstract_params = state.abstract_params(module, train_modality, config.data, repl)
    abstract_opt = checkpoint.abstract_like(jax.eval_shape(tx.init, abstract_params), repl)
    start_step, restored = _resume(ckpts, abstract_params, abstract_opt, labels)
    member_params, member_opt, histories, segments = [], [], [], []
    for cfg, ckpt, name, got in zip(configs, ckpts, labels, restored):
        if got:
            _, params, opt_state, meta = got
            # What the run did before: evals and train-time segments up to this step.
            histories.append([h for h in meta.get("history", []) if h["step"] <= start_step])
            segments.append(list(meta.get("train_segments", [])))
            logging.info("Resuming %s from its own checkpoint at step %d (%s).", name,
                         start_step, ckpt.directory)
            if init_kind:
                logging.info("Ignoring config.model.init_from (%s %s): it only initialises a "
                             "fresh run; this workdir resumes its own.", init_kind,
                             config.model.init_from.path)
        else:
            histories.append([])
            segments.append([])
            params = state.init_params(module, train_modality, cfg.data,
                                       jax.random.key(cfg.seed), repl)
            if init_kind:
                params, report = convert.init_from(init_kind, cfg.model.init_from.path, module,
                                                   params, label_names=label_names)
                params = jax.device_put(params, repl)
                logging.info("%s: fine-tuning from %s %s (fresh optimiser, step 0):\n%s", name,
                             init_kind, config.model.init_from.path, report)
            else:
                logging.info("Training %s from scratch (random init).", name)
            opt_state = jax.jit(tx.init, out_shardings=repl)(params)
        member_params.append(params)
        member_opt.append(opt_state)
    del restored
    metas = [checkpoint_meta.build(cfg, label_names, name) for cfg, name in zip(configs, names)]

    n_params = sum(x.size for x in jax.tree.leaves(member_params[0]))
    logging.info(
        "%s: %s on %s | %d params | global batch %d (%d devices x %d, accum %d) | "
        "%d steps/epoch, %d steps, peak lr %g | %d processes",
        ", ".join(labels), config.model.name, " + ".join(datasets), n_params, config.batch_size,
        mesh.devices.size, config.batch_size // config.accum_steps // mesh.devices.size,
        config.accum_steps, steps_per_epoch, total_steps, config.optim.lr, jax.process_count())
    if num > 1:
        logging.info("Population of %d members in one step (%d data streams, %d teacher slots "
                     "for %d teacher members).", num, len(stream_keys), len(slots),
                     sum(len(i) for i in member_infos))

    # --- step
    alphas = {float(c.distill.get("mixup", 0.0)) for c in configs if c.teacher.members}
    if len(alphas) > 1:
        raise ValueError(f"Population students mix views with different alphas {alphas}; one "
                         "population has one mixed stream per data stream.")
    mixup_alpha = alphas.pop() if alphas else 0.0
    if num == 1:
        solo = steps.make_train_step(module, train_modality, member_sets[0], tx, lr_fn, config)

        def step_fn(train_state, batches, slot_params, step):
            new, out = solo(_member(train_state, 0), batches[0], slot_params, step)
            return jax.tree.map(lambda x: x[None], (new, out))
    else:
        population = steps.Population(
            seeds=np.array([int(c.seed) for c in configs]),
            w_kd=np.array([c.distill.w_kd if c.teacher.members else 0.0 for c in configs]),
            w_gt=np.array([c.distill.w_gt if c.teacher.members else 1.0 for c in configs]),
            tau=np.array([c.distill.tau for c in configs]), teacher=teacher,
            streams=member_stream, slot_streams=np.array(slot_streams, np.int64),
            stream_seeds=np.array([seed for _, seed in stream_keys]), mixup=mixup_alpha)
        step_fn = steps.make_population_step(module, train_modality, slots, tx, lr_fn,
                                             population, config.accum_steps)
    train_step = jax.jit(step_fn, donate_argnums=(0,))
    logits_fn = evaluate.view_averaged(
        lambda p, b: module.apply({"params": p}, *models.model_inputs(eval_modality, b),
                                  train=False))
    eval_step = steps.make_population_eval_step(logits_fn, num)
    eval_steps = {}
    eval_keys = tuple(models.MODALITY_KEYS[eval_modality])
    views = evaluate.views_of(config)  # (clips, crops); (1, 1) = the paper's single view

    by_dataset = [np.flatnonzero([c.data.name == d for c in configs]) for d in datasets]
    pick = jax.jit(lambda tree, idx: jax.tree.map(lambda x: x[idx], tree))

    def run_eval(params) -> list[dict]:
        """Each member on its own dataset's eval split; one pass per dataset."""
        out = [None] * num
        for d, idx in zip(datasets, by_dataset):
            subset = params if len(idx) == num else pick(params, idx)
            step = eval_step if len(idx) == num else eval_steps.setdefault(
                len(idx), steps.make_population_eval_step(logits_fn, len(idx)))
            for k, result in zip(idx, evaluate.population_eval_loop(
                    step, subset, data_cfgs[d], eval_keys, evaluate.eval_batch_size(config),
                    mesh, views)):
                out[k] = result
        return out

    # --- loop
    writers = [metrics.Writer(wd) for wd in workdirs]
    progress = metrics.Progress(total_steps, config.batch_size, start_step)
    preemption = _Preemption()
    train_state = {"params": _stack(member_params), "opt_state": _stack(member_opt)}
    del member_params, member_opt
    slot_params = [p for _, p, _ in slots]
    streams = [pipeline.train_iterator(
        data_cfgs[dataset], keys, config.batch_size, seed=seed, start_step=start_step,
        process_index=jax.process_index(), process_count=jax.process_count())
        for dataset, seed in stream_keys]
    has_kd = [bool(c.teacher.members) for c in configs]
    pending, unchecked, last_eval = [], [], None
    train_start = time.time()

    def segment(step: int) -> dict:
        """This process's part of the training: steps and wall seconds (evals included)."""
        return {"start_step": start_step, "end_step": step,
                "seconds": round(time.time() - train_start, 3)}

    def check_finite(wait: bool) -> None:
        """Reads the finiteness flag of every step dispatched so far, oldest first. Between
        logs, evals and saves only flags already computed are read (`is_ready`), so the host
        never waits on the device and keeps running ahead; before a log, an eval or a save
        (`wait`) every flag is read."""
        while unchecked and (wait or unchecked[0][1].is_ready()):
            s, flags = unchecked.pop(0)
            ok = np.asarray(flags)
            if not ok.all():
                k = int(np.flatnonzero(~ok)[0])
                for ckpt in ckpts:
                    ckpt.wait()
                good = ckpts[k].latest_step()
                raise FloatingPointError(
                    f"Non-finite loss or params at step {s} of {labels[k]}; stopping. "
                    + (f"Last good checkpoint: step {good} in {ckpts[k].directory}."
                       if good else "No checkpoint was written before it.")
                    + " Nothing non-finite is saved.")

    failed = True
    try:
        for step in range(start_step + 1, total_steps + 1):
            batches = [sharding.to_global(next(s), mesh) for s in streams]
            train_state, step_metrics = train_step(train_state, batches, slot_params,
                                                   jnp.asarray(step - 1, jnp.int32))
            pending.append(step_metrics)  # fetched at log time
            unchecked.append((step, step_metrics["finite"]))
            check_finite(wait=False)
            for ckpt in ckpts:
                ckpt.check()  # a failed background save stops the run here, naming the path

            is_log = step % config.log_every_steps == 0 or step == total_steps
            is_eval = step % eval_every == 0 or step == total_steps
            is_save = is_eval or step % ckpt_every == 0 or preemption.requested
            if is_log or is_eval or is_save:
                check_finite(wait=True)
            if is_log:
                fetched = jax.device_get(pending)
                pending = []
                speed = progress.update(step)
                for k in range(num):
                    scalars = {key: np.mean([m[key][k] for m in fetched]) for key in fetched[0]
                               if key != "finite" and (key != "kd" or has_kd[k])}
                    scalars.update(speed)
                    metrics.log_progress(labels[k], step, total_steps, scalars)
                    writers[k].write(step, {f"train/{key}": v for key, v in scalars.items()})

            if is_eval:
                last_eval = run_eval(train_state["params"])
                for k, result in enumerate(last_eval):
                    histories[k].append({"step": step, "epoch": step / steps_per_epoch,
                                         **result})
                    logging.info("%s eval at step %d (epoch %.2f): top-1 %.2f top-5 %.2f (%s)",
                                 labels[k], step, step / steps_per_epoch, result["top1"],
                                 result["top5"], evaluate.protocol(views))
                    writers[k].write(step, {"eval/top1": result["top1"],
                                            "eval/top5": result["top5"]})
            if is_save:
                for k, ckpt in enumerate(ckpts):
                    meta = metas[k] | {"step": step, "history": histories[k],
                                       "train_segments": segments[k] + [segment(step)]}
                    ckpt.save(step, _member(train_state["params"], k),
                              _member(train_state["opt_state"], k), meta,
                              metrics={"top1": last_eval[k]["top1"]} if is_eval else None,
                              force=preemption.requested)
            if preemption.requested:
                for ckpt in ckpts:
                    ckpt.wait()
                logging.warning("SIGTERM: checkpoint saved at step %d in %s; rerun the same "
                                "command to resume.", step,
                                ", ".join(c.directory for c in ckpts))
                failed = False
                raise SystemExit(128 + signal.SIGTERM)
        failed = False
    finally:
        preemption.restore()
        for ckpt in ckpts:
            ckpt.close(quiet=failed)  # on an error path, never raise over the first error
        for writer in writers:
            writer.close()

    # --- results
    finals = last_eval if last_eval is not None else run_eval(train_state["params"])
    out = []
    for k, (cfg, wd, name) in enumerate(zip(configs, workdirs, names)):
        best_step = checkpoint.Checkpointer(os.path.join(wd, "checkpoints"),
                                            read_only=True).best_step()
        results = {"experiment": name, "kind": "train", "modality": train_modality,
                   "eval_modality": eval_modality, "dataset": cfg.data.name,
                   "split": cfg.data.eval_split, "protocol": evaluate.protocol(views),
                   "eval": evaluate.protocol_dict(views), "final": finals[k],
                   "best_step": best_step, "steps": total_steps,
                   "epochs": total_steps / steps_per_epoch, "num_params": int(n_params),
                   "history": histories[k]}
        # Every segment of a resumed run (each start of the command), this one last.
        results["train_segments"] = segments[k] + (
            [segment(total_steps)] if total_steps > start_step else [])
        results["train_time_s"] = sum(g["seconds"] for g in results["train_segments"])
        rows = evaluate.results_rows(member_infos[k], views=views)
        if member_sets[k]:
            results["teacher"] = evaluate.evaluate_teacher(
                member_sets[k], cfg.data, evaluate.eval_batch_size(cfg), mesh, views)
            results["members"] = [{key: i[key] for key in ("name", "workdir", "step", "modality")}
                                  | {"final": (i["results"] or {}).get("final")}
                                  for i in member_infos[k]]
            rows.append(("teacher (logit average)", results["teacher"]))
        if jax.process_index() == 0:
            with open(os.path.join(wd, members_lib.RESULTS_FILE), "w") as f:
                json.dump(results, f, indent=2)
        rows.append((f"{name} ({eval_modality})", finals[k]))
        evaluate.print_table(rows, evaluate.protocol(views))
        out.append(results)
    return out
