"""Entry point for every experiment: `python -m mmkd_jax.main --config=FILE[:ARG] --workdir=DIR`.

The config decides what runs (`config.trainer`): `train` for baselines, omnivore and
distillation, `evaluate` for a teacher ensemble, `table1` for the paper's table in miniature,
`pretrain` for the image model the synthetic presets start from.
`--config.mode=predict` instead writes per-video predictions and pooled features of the run's
checkpoint (mmkd_jax/analysis.py).
Override any field with `--config.field=value`. The same command runs on one CPU, several GPUs,
or a TPU pod slice (each host runs it; `jax.distributed` joins them).
"""
from __future__ import annotations

import os
import sys

from mmkd_jax import host_memory, logs, xla_cpu

# Before any thread exists: CPU-only runs reuse freed host memory instead of page-faulting
# through a fresh mmap on every XLA:CPU step (mmkd_jax/host_memory.py).
_HOST_MALLOC = host_memory.keep_freed_memory()
# Before JAX starts its CPU backend: small models' steps run faster (mmkd_jax/xla_cpu.py).
_XLA_CPU = xla_cpu.single_threaded_eigen()

# TF's C++ INFO lines (tf.data, XLA service) are noise next to the progress lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/distill.py "
                                          "or configs/distill.py:ssv2.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and results go; a run "
                               "resumes from the latest checkpoint found here.")
_MULTIPROCESS = flags.DEFINE_bool(
    "multiprocess", None, "Call jax.distributed.initialize() (default: when "
    "JAX_COORDINATOR_ADDRESS is set). TPU pods and SLURM are auto-detected.")
flags.mark_flags_as_required(["config", "workdir"])


def trainers() -> dict:
    # Imported here so `--help` and flag errors do not pay for importing TF and JAX.
    from mmkd_jax import table1
    from mmkd_jax.train import evaluate, pretrain, trainer
    return {"train": trainer.train_and_evaluate, "evaluate": evaluate.run, "table1": table1.run,
            "pretrain": pretrain.run}


def modes() -> dict:
    """`config.mode` -> what runs; "train" runs `config.trainer`."""
    from mmkd_jax import analysis
    return {"predict": analysis.run}


def faults() -> tuple:
    """Errors that mean "this run cannot go on" and say why in their message: logged as one
    line, exit status 1, no traceback."""
    from mmkd_jax.train import checkpoint, validate, workdir_lock
    return (FloatingPointError, checkpoint.CheckpointError, checkpoint.NonFiniteParamsError,
            workdir_lock.WorkdirBusyError, validate.ConfigError)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from mmkd_jax.train import validate
    config = _CONFIG.value
    try:  # before JAX, data or models are touched
        validate.check(config)
    except validate.ConfigError as e:
        sys.exit(f"error: {e}")
    from mmkd_jax.train import checkpoint, sharding, workdir_lock
    sharding.maybe_initialize_distributed(_MULTIPROCESS.value)
    workdir = os.path.abspath(os.path.expanduser(_WORKDIR.value))
    mode = config.get("mode", "train")
    if mode == "train":
        runners, key = trainers(), config.trainer
        if key not in runners:
            raise app.UsageError(f"config.trainer={key!r}; choose one of {sorted(runners)}.")
    else:
        runners, key = modes(), mode
        if key not in runners:
            raise app.UsageError(f"config.mode={key!r}; choose one of "
                                 f"{sorted(['train', *runners])}.")
    locked = mode == "train"  # one training run per workdir; `predict` only reads
    if locked:
        try:  # before the log file: a refused run must not write into the other's log
            workdir_lock.hold(workdir)
        except workdir_lock.WorkdirBusyError as e:
            sys.exit(f"error: {e}")
    try:
        fault = _run(runners[key], config, workdir)
    finally:
        if locked:
            workdir_lock.let_go(workdir)
    if fault is not None:
        logging.error("%s", fault)
        if isinstance(fault, checkpoint.CheckpointError):
            # orbax's commit threads may still wait on the failed write and would keep the
            # interpreter from exiting: leave now, the message and the logs flushed.
            logging.flush()
            sys.stderr.flush()
            os._exit(1)
        sys.exit(1)


def _run(runner, config, workdir):
    """Runs the experiment; returns the fault that stopped it (see `faults`), or None."""
    logs.log_to_file(workdir)
    if _HOST_MALLOC:
        logging.info("Host memory: freed memory is reused, not returned to the OS (CPU run; "
                     "%s=default turns this off).", host_memory.ENV)
    if _XLA_CPU:
        logging.info("XLA:CPU: Eigen kernels single-threaded (%s; %s=default turns this off).",
                     xla_cpu.FLAG, xla_cpu.ENV)
    try:
        runner(config, workdir)
    except faults() as e:
        return e
    return None


def run() -> None:
    logging.set_verbosity(logging.INFO)
    app.run(main, argv=sys.argv)


if __name__ == "__main__":
    run()
