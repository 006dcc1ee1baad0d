"""Teacher members: other runs' workdirs, validated, trained when missing, loaded frozen.

A member spec (an entry of `config.teacher.members`) names
  name      short name used in logs and tables, e.g. "rgb"
  config    path of the config file that trains it, e.g. configs/baseline_rgb.py
  arg       that config's preset (defaults to the parent run's preset)
  workdir   its workdir; relative paths are relative to the parent run's workdir
  overrides optional "key=value,a.b=value" overrides applied on top of that config
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
from collections.abc import Callable

import ml_collections
from absl import logging

from mmkd_jax import models
from mmkd_jax.train import checkpoint, state, workers

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"


def load_config_file(path: str, arg: str | None) -> ml_collections.ConfigDict:
    """Imports a config file by path and calls its `get_config(arg)`, as config_flags does."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"Teacher member config file not found: {path}")
    spec = importlib.util.spec_from_file_location(
        "_mmkd_member_config_" + os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg is not None else module.get_config()


def parse_overrides(text: str) -> dict:
    """"a.b=1,c=x" -> {"a.b": 1, "c": "x"} (values parsed as Python literals when possible)."""
    out = {}
    for pair in filter(None, (p.strip() for p in (text or "").split(","))):
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"config.overrides: expected key=value, got {pair!r}")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: str | dict) -> None:
    """Sets dotted keys of `cfg`; a key the config does not have is an error."""
    if isinstance(overrides, str):
        overrides = parse_overrides(overrides)
    for dotted, value in (overrides or {}).items():
        *parents, leaf = dotted.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        if leaf not in node:
            raise KeyError(f"Override {dotted!r}: no such key in the member config.")
        node[leaf] = value


def workdir_of(spec, parent_workdir: str) -> str:
    path = os.path.expanduser(spec.workdir)
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(parent_workdir, path))


def member_config(spec, parent: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The member's own config file, reading the student's data (a member must see the same
    clips), then the spec's overrides."""
    cfg = load_config_file(spec.config, spec.get("arg") or parent.preset)
    cfg.data = ml_collections.ConfigDict(parent.data.to_dict())
    apply_overrides(cfg, spec.get("overrides"))
    return cfg


def has_checkpoint(workdir: str) -> bool:
    ckpt_dir = os.path.join(workdir, "checkpoints")
    return os.path.isdir(ckpt_dir) and checkpoint.Checkpointer(
        ckpt_dir, read_only=True).latest_step() is not None


def train_command(spec, parent: ml_collections.ConfigDict, parent_workdir: str) -> str:
    arg = spec.get("arg") or parent.preset
    return (f"python -m mmkd_jax.main --config={spec.config}:{arg} "
            f"--workdir={workdir_of(spec, parent_workdir)}")


def check_compatible(name: str, cfg: ml_collections.ConfigDict,
                     parent: ml_collections.ConfigDict) -> None:
    """A member must read the same clip the student sees and predict the same classes."""
    if cfg.modality not in ("rgb", "flow", "layout"):
        raise ValueError(f"Teacher member {name!r}: modality {cfg.modality!r} is not one of "
                         "rgb, flow, layout.")
    problems = []
    if cfg.data.name != parent.data.name:
        problems.append(f"dataset {cfg.data.name!r} != student's {parent.data.name!r}")
    for key in ("num_frames", "image_size", "num_boxes", "flow_channels"):
        if cfg.data.get(key) != parent.data.get(key):
            problems.append(f"data.{key} {cfg.data.get(key)} != student's {parent.data.get(key)}")
    n_member, n_student = cfg.model.get("num_classes", -1), parent.model.get("num_classes", -1)
    if n_member > 0 and n_student > 0 and n_member != n_student:
        problems.append(f"num_classes {n_member} != student's {n_student}")
    if problems:
        raise ValueError(f"Teacher member {name!r} does not match the student: "
                         + "; ".join(problems))


def ensure_trained(parent: ml_collections.ConfigDict, parent_workdir: str,
                   train_fn: Callable[[ml_collections.ConfigDict, str], dict]) -> None:
    """Validates every member, then trains those without a checkpoint (or says how to)."""
    specs = list(parent.teacher.members)
    configs = {}
    for spec in specs:
        cfg_path = os.path.join(workdir_of(spec, parent_workdir), CONFIG_FILE)
        configs[spec.name] = (ml_collections.ConfigDict(json.load(open(cfg_path)))
                              if os.path.exists(cfg_path) else member_config(spec, parent))
        check_compatible(spec.name, configs[spec.name], parent)
    missing = [s for s in specs if not has_checkpoint(workdir_of(s, parent_workdir))]
    if missing and not parent.teacher.train_missing:
        cmds = "\n".join("  " + train_command(s, parent, parent_workdir) for s in missing)
        raise FileNotFoundError(
            "Teacher members have no trained checkpoint yet: "
            f"{', '.join(s.name for s in missing)}. Train them first:\n{cmds}")
    for spec in missing:
        logging.info("Teacher member %r has no checkpoint in %s: training it first (%s).",
                     spec.name, workdir_of(spec, parent_workdir),
                     train_command(spec, parent, parent_workdir))
    jobs = [[(configs[s.name], workdir_of(s, parent_workdir))] for s in missing]
    n = int(parent.teacher.get("train_workers", 0)) or workers.default_workers(len(jobs))
    if n > 1:
        logging.info("Training %d teacher members in %d worker processes.", len(jobs), n)
    pool = workers.pool(n)
    try:
        futures = [workers.submit(pool, job, lambda job: [train_fn(*job[0])]) for job in jobs]
        for future in futures:
            future.result()
    finally:
        if pool is not None:
            pool.shutdown()


# Which checkpoint of each member the teacher uses (`config.teacher.checkpoint`). "latest", the
# default, is the member's last step. "best" is the step with the highest top-1 on the eval
# split, which is also the split every result is reported on: choosing members by it would
# select the teacher on the test data.
TEACHER_CHECKPOINTS = ("latest", "best")


def member_step(ckpt: checkpoint.Checkpointer, choice: str) -> int:
    if choice not in TEACHER_CHECKPOINTS:
        raise ValueError(f"config.teacher.checkpoint={choice!r}; choose one of "
                         f"{TEACHER_CHECKPOINTS}")
    return ckpt.latest_step() if choice == "latest" else ckpt.best_step()


def load(parent: ml_collections.ConfigDict, parent_workdir: str, sharding
         ) -> tuple[list[tuple], list[dict]]:
    """Returns [(module, params, modality)] frozen on `sharding`, and per-member info dicts."""
    members, infos = [], []
    for spec in parent.teacher.members:
        wd = workdir_of(spec, parent_workdir)
        cfg = ml_collections.ConfigDict(json.load(open(os.path.join(wd, CONFIG_FILE))))
        check_compatible(spec.name, cfg, parent)
        module = models.build_model(cfg.model)
        ckpt = checkpoint.Checkpointer(os.path.join(wd, "checkpoints"), read_only=True)
        step = member_step(ckpt, parent.teacher.get("checkpoint", "latest"))
        params = ckpt.restore_params(
            step, state.abstract_params(module, cfg.modality, cfg.data, sharding))
        results_path = os.path.join(wd, RESULTS_FILE)
        results = json.load(open(results_path)) if os.path.exists(results_path) else {}
        logging.info("Teacher member %r: %s step %d (%s, %s)", spec.name, wd, step,
                     cfg.modality, cfg.model.name)
        members.append((module, params, cfg.modality))
        infos.append({"name": spec.name, "workdir": wd, "step": step,
                      "modality": cfg.modality, "results": results})
    return members, infos
