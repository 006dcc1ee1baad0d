"""orbax checkpoints: async saves, the latest k plus the best by eval top-1, automatic resume.

A checkpoint holds three items so that each reader restores only what it needs:
  params     the model parameters (a teacher member or `predict` restores only this)
  opt_state  optimiser state (resume only)
  meta       JSON: step, model/data config, label names — enough to use the checkpoint alone;
             the run's eval history and train-time segments up to that step

Faults: a step that does not restore whole is moved to `<directory>.damaged/` (never deleted)
and resume takes the newest intact one (`restore_latest_intact`); a write that fails (a full
disk, a read-only folder) raises CheckpointError naming the path, from the main thread, at the
next step (`check`); params with a NaN or an infinity are never read as a model
(`restore_params`).
"""
from __future__ import annotations

import logging as std_logging
import os
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers as policies

BEST_METRIC = "top1"
DAMAGED_SUFFIX = ".damaged"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written, or no step of it can be read; the message names it."""


def _write_failed(directory: str, e: Exception, when: str = "") -> CheckpointError:
    return CheckpointError(f"writing checkpoints in {directory} failed{when}: "
                           f"{type(e).__name__}: {e}")


class NonFiniteParamsError(ValueError):
    """A checkpoint whose params hold NaN or infinity (a diverged run); names the leaves."""


def _quiet_failed_restore():
    """After a failed restore, orbax's abandoned reads fail again on their own: tensorstore
    reports ~100 'Event loop is closed' tracebacks, each read coroutine is reported as an
    ignored exception when collected, and asyncio logs 'Task exception was never retrieved'.
    The failure itself is logged once by the caller; these echoes of it are dropped (any other
    unraisable exception or log record passes through).

    Installed before a restore that may fail (the first echoes can come from tensorstore's
    threads before the exception reaches the caller); returns a function that removes the
    filter again, for when the restore succeeded. After a failure it stays: echoes come later.
    """
    previous = sys.unraisablehook
    if getattr(previous, "mmkd_quiet", False):
        return lambda: None

    def echo(unraisable) -> bool:
        e, tb = unraisable.exc_value, unraisable.exc_traceback
        if isinstance(e, RuntimeError) and str(e) == "Event loop is closed":
            return True
        while tb is not None:
            if "/orbax/checkpoint/" in tb.tb_frame.f_code.co_filename:
                return True
            tb = tb.tb_next
        return False

    def hook(unraisable):
        if not echo(unraisable):
            previous(unraisable)

    def never_retrieved(record) -> bool:
        return not record.getMessage().startswith("Task exception was never retrieved")

    def remove():
        if sys.unraisablehook is hook:
            sys.unraisablehook = previous
        std_logging.getLogger("asyncio").removeFilter(never_retrieved)

    hook.mmkd_quiet = True
    sys.unraisablehook = hook
    std_logging.getLogger("asyncio").addFilter(never_retrieved)
    return remove


def _by_path(tree) -> dict:
    """{"a/b/c": leaf} of a nested tree (params, or orbax's metadata of them)."""
    return {jax.tree_util.keystr(path, simple=True, separator="/"): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_finite(params, where: str) -> None:
    """Raises NonFiniteParamsError naming the first non-finite leaves of `params`."""
    bad = [path for path, x in _by_path(jax.device_get(params)).items()
           if np.issubdtype(np.asarray(x).dtype, np.floating) and not np.all(np.isfinite(x))]
    if bad:
        raise NonFiniteParamsError(
            f"{where} holds non-finite params (NaN or inf) in {len(bad)} arrays, e.g. "
            f"{', '.join(bad[:3])}: the run that wrote it diverged; use an earlier step.")


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` with this project's items and policy."""

    def __init__(self, directory: str, keep: int = 2, async_save: bool = True,
                 read_only: bool = False):
        self.directory = os.path.abspath(directory)
        self.read_only = read_only
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
        try:
            self.manager = ocp.CheckpointManager(
                self.directory, options=options,
                item_handlers={"params": ocp.StandardCheckpointHandler(),
                               "opt_state": ocp.StandardCheckpointHandler(),
                               "meta": ocp.JsonCheckpointHandler()})
        except OSError as e:
            raise CheckpointError(f"cannot open checkpoints in {self.directory}: {e}") from e

    def check_writable(self) -> None:
        """Fails now, naming the folder, if checkpoints cannot be written there; orbax would
        only fail in its background thread at the first save."""
        probe = os.path.join(self.directory, f".write-probe-{os.getpid()}")
        try:
            with open(probe, "w") as f:
                f.write("probe")
            os.remove(probe)
        except OSError as e:
            raise CheckpointError(f"cannot write checkpoints to {self.directory}: "
                                  f"{e.strerror or e}") from e

    def check(self) -> None:
        """Raises CheckpointError if an asynchronous save has failed (cheap, non-blocking)."""
        try:
            self.manager.check_for_errors()
        except Exception as e:  # orbax re-raises whatever its commit thread hit
            raise _write_failed(self.directory, e) from e

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the highest eval top-1; the latest step if none was evaluated."""
        scored = [(m[BEST_METRIC], s) for s in self.manager.all_steps()
                  if (m := self.manager.metrics(s)) and BEST_METRIC in m]
        return max(scored)[1] if scored else self.latest_step()

    def save(self, step: int, params, opt_state, meta: dict, metrics: dict | None = None,
             force: bool = False) -> bool:
        try:
            return self.manager.save(
                step, metrics=metrics, force=force,
                args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                        opt_state=ocp.args.StandardSave(opt_state),
                                        meta=ocp.args.JsonSave(meta)))
        except Exception as e:  # a failed earlier commit surfaces here too
            raise _write_failed(self.directory, e, f" (saving step {step})") from e

    def restore(self, step: int, abstract_params, abstract_opt_state):
        """Restores (params, opt_state, meta) onto the shardings of the abstract trees."""
        out = self.manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_params),
            opt_state=ocp.args.StandardRestore(abstract_opt_state),
            meta=ocp.args.JsonRestore()))
        return out["params"], out["opt_state"], out["meta"]

    def restore_latest_intact(self, abstract_params, abstract_opt_state,
                              at_most: int | None = None):
        """(step, params, opt_state, meta) of the newest step (at most `at_most`) that restores
        whole, or None when the folder has no steps at all.

        A newer step that fails to restore (truncated array files, a lost manifest or meta) is
        moved aside with one warning line; CheckpointError when no step is left.
        """
        steps = sorted(self.manager.all_steps(), reverse=True)
        if not steps:
            return None
        candidates = [s for s in steps if at_most is None or s <= at_most]
        if not candidates:
            raise CheckpointError(f"{self.directory} has no step at or before {at_most} to "
                                  f"resume from (it has {sorted(steps)}).")
        # The filter goes in before the first read and stays only once a read has failed.
        unquiet, failed = _quiet_failed_restore(), False
        try:
            for step in candidates:
                mismatch = self.mismatch(step, abstract_params)
                if mismatch:  # intact, but another model's: never moved aside for that
                    raise CheckpointError(
                        f"{os.path.join(self.directory, str(step))} was written by another "
                        f"model config ({mismatch}); resume with the config that wrote it, or "
                        "give this run another --workdir.")
                try:
                    return (step, *self.restore(step, abstract_params, abstract_opt_state))
                except Exception as e:  # orbax/tensorstore raise many types for one broken file
                    failed = True
                    self.move_aside(step, e)
        finally:
            if not failed:
                unquiet()
        raise CheckpointError(f"no intact checkpoint in {self.directory}: steps "
                              f"{sorted(candidates)} all failed to restore and were moved to "
                              f"{self.directory}{DAMAGED_SUFFIX}.")

    def mismatch(self, step: int, abstract_params) -> str | None:
        """What differs between the params saved at `step` and `abstract_params` (paths,
        shapes), or None when they match or the saved metadata cannot be read (then the
        restore decides whether the step is damaged)."""
        try:
            saved = {k: tuple(m.shape) for k, m in
                     _by_path(self.manager.item_metadata(step)["params"]).items()}
        except Exception:  # unreadable metadata: a damaged step
            return None
        want = {k: tuple(x.shape) for k, x in _by_path(abstract_params).items()}
        if not saved:
            return None
        if set(saved) != set(want):
            diff = sorted(set(saved) ^ set(want))
            return f"{len(diff)} params differ by name, e.g. {', '.join(diff[:3])}"
        shapes = [k for k in sorted(want) if saved[k] != want[k]]
        if shapes:
            k = shapes[0]
            return f"{len(shapes)} params differ in shape, e.g. {k} {saved[k]} vs {want[k]}"
        return None

    def move_aside(self, step: int, error: Exception) -> str:
        """Moves step `step` to `<directory>.damaged/<step>` (process 0; the others wait)."""
        target_root = self.directory + DAMAGED_SUFFIX
        target = os.path.join(target_root, str(step))
        n = 1
        while os.path.exists(target):
            target, n = os.path.join(target_root, f"{step}-{n}"), n + 1
        if jax.process_index() == 0:
            os.makedirs(target_root, exist_ok=True)
            os.rename(os.path.join(self.directory, str(step)), target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"checkpoint_moved_aside_{step}")
        first_line = (str(error).strip().splitlines() or [""])[0]
        first_line = first_line.split(" See full TensorStore")[0][:200]
        logging.warning("Checkpoint step %d in %s is damaged (%s: %s); moved to %s, resuming "
                        "from an earlier step.", step, self.directory, type(error).__name__,
                        first_line, target)
        self.manager.reload()
        return target

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
        params = self.manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_params)))["params"]
        check_finite(params, os.path.join(self.directory, str(step)))
        return params

    def restore_meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"]

    def wait(self) -> None:
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            raise _write_failed(self.directory, e) from e

    def close(self, quiet: bool = False) -> None:
        """Waits for pending saves and closes; `quiet` (on an error path already) logs a failed
        save instead of raising over the error being handled."""
        try:
            self.wait()
        except CheckpointError as e:
            if not quiet:
                raise
            logging.error("%s", e)
        finally:
            self.manager.close()


def abstract_like(tree, sharding):
    """ShapeDtypeStructs placing every leaf on `sharding` (restore target)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
