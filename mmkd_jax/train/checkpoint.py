"""orbax checkpoints: async saves, the latest k plus the best by eval top-1, automatic resume.

A checkpoint holds three items so that each reader restores only what it needs:
  params     the model parameters (a teacher member or `predict` restores only this)
  opt_state  optimiser state (resume only)
  meta       JSON: step, model/data config, label names — enough to use the checkpoint alone
"""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

BEST_METRIC = "top1"


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` with this project's items and policy."""

    def __init__(self, directory: str, keep: int = 2, async_save: bool = True,
                 read_only: bool = False):
        self.directory = os.path.abspath(directory)
        preserve = policies.AnyPreservationPolicy([
            policies.LatestN(n=keep),
            policies.BestN(get_metric_fn=lambda m: m[BEST_METRIC], reverse=False, n=1,
                           keep_checkpoints_without_metrics=False),
        ])
        options = ocp.CheckpointManagerOptions(
            preservation_policy=preserve, enable_async_checkpointing=async_save,
            # best_fn only makes orbax write the metrics next to each step (read by best_step).
            best_fn=lambda m: m[BEST_METRIC], best_mode="max",
            read_only=read_only, create=not read_only)
        # Explicit handlers (not just item names) let a reader see an item's metadata (shapes,
        # dtypes) before restoring it, so params restore onto any topology without a model.
        self.manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"params": ocp.StandardCheckpointHandler(),
                           "opt_state": ocp.StandardCheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler()})

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the highest eval top-1; the latest step if none was evaluated."""
        scored = [(m[BEST_METRIC], s) for s in self.manager.all_steps()
                  if (m := self.manager.metrics(s)) and BEST_METRIC in m]
        return max(scored)[1] if scored else self.latest_step()

    def save(self, step: int, params, opt_state, meta: dict, metrics: dict | None = None,
             force: bool = False) -> bool:
        return self.manager.save(
            step, metrics=metrics, force=force,
            args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                    opt_state=ocp.args.StandardSave(opt_state),
                                    meta=ocp.args.JsonSave(meta)))

    def restore(self, step: int, abstract_params, abstract_opt_state):
        """Restores (params, opt_state, meta) onto the shardings of the abstract trees."""
        out = self.manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_params),
            opt_state=ocp.args.StandardRestore(abstract_opt_state),
            meta=ocp.args.JsonRestore()))
        return out["params"], out["opt_state"], out["meta"]

    def restore_params(self, step: int, abstract_params=None):
        """Params only (teacher members, predict, export).

        Without a target, the saved shapes and dtypes are restored onto this process's first
        device, whatever topology wrote the checkpoint.
        """
        if abstract_params is None:
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            saved = self.manager.item_metadata(step)["params"]
            abstract_params = jax.tree.map(
                lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), saved)
        return self.manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_params)))["params"]

    def restore_meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(tree, sharding):
    """ShapeDtypeStructs placing every leaf on `sharding` (restore target)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
