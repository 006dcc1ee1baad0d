"""Train-step throughput of the project's own jitted step, built from the configs as the trainer.

    python bench/train_step.py                                  # tiny + ssv2, ~5 min on 2 CPUs
    python bench/train_step.py --presets ssv2 --batch ssv2=16 --steps ssv2=10 \
        --set model.dtype=bfloat16 --member_set model.dtype=bfloat16 --json /tmp/step.json
    python bench/train_step.py --presets synthetic --configs baseline_rgb \
        --batch synthetic=32 --profile_top 15          # where the step's time goes, per op

For each preset (`tiny`: CI size; `ssv2`: ViT-B/16 8x224) and each config (`baseline_rgb`: the
student's cross-entropy step; `distill`: frozen RGB + flow + STLT teacher and student in one
step), the step is `mmkd_jax.train.steps.make_train_step` jitted with the train state donated,
on the trainer's mesh, with the trainer's optimiser, parameter initialisation and config
resolution; teacher members come from their own config files (`members.member_config`) with
random weights. Inputs are random, one host batch put on the mesh every step
(`sharding.to_global`, as the trainer's loop does), no host sync inside a repetition.

Reported per case: trace+lower and compile time, first step, the median over `--reps`
repetitions of the per-step time (each repetition times `--steps` steps and syncs once),
clips/s, XLA's FLOPs per step (cost analysis) as GFLOP/s and MFU (GPU table of
bench/vs_pytorch.py, or `--peak_tflops`), XLA's per-step allocation and peak memory.
Runs on `jax.devices()`: set JAX_PLATFORMS to choose.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]

from mmkd_jax import host_memory, xla_cpu  # noqa: E402

if __name__ == "__main__":  # as mmkd_jax.main does, before any thread and before JAX starts
    host_memory.keep_freed_memory()
    xla_cpu.single_threaded_eigen()  # the trainer's XLA:CPU flag (MMKD_XLA_CPU=default: off)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import op_profile  # noqa: E402
from vs_pytorch import machine, peak_for  # noqa: E402

from mmkd_jax import models, recipes  # noqa: E402
from mmkd_jax.train import members as members_lib  # noqa: E402
from mmkd_jax.train import optim, sharding, state, steps, trainer  # noqa: E402

CONFIGS = {"baseline_rgb": "baseline_rgb.py", "distill": "distill.py"}
# Per preset: batch (None = the config's) and steps per repetition. ViT-B/16 8x224 takes ~20 s
# per clip for a train step on 2 CPU cores: batch 1 keeps the default run under ~5 min there;
# on an accelerator pass e.g. --batch ssv2=16 --steps ssv2=10.
DEFAULT_BATCH = {"ssv2": 1}
DEFAULT_STEPS = {"ssv2": 1}
FALLBACK_STEPS = 10
LR_STEPS = 10_000  # length of the lr schedule: its values do not change the cost of a step


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="tiny,ssv2", help="recipes presets, e.g. tiny,ssv2")
    p.add_argument("--configs", default="baseline_rgb,distill", help=f"of {sorted(CONFIGS)}")
    p.add_argument("--batch", default="", help="global batch per preset, e.g. ssv2=2,tiny=8")
    p.add_argument("--steps", default="", help="steps per repetition, e.g. ssv2=1,tiny=10")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions (median reported)")
    p.add_argument("--set", default="", help="overrides of the run's config, 'a.b=v,c=w'")
    p.add_argument("--member_set", default="",
                   help="overrides appended to every teacher member's (config.teacher.members)")
    p.add_argument("--peak_tflops", type=float, default=0.0,
                   help="device peak for MFU (default: bench/vs_pytorch.py's GPU table)")
    p.add_argument("--profile_top", type=int, default=0,
                   help="> 0: also trace one repetition and report the op time per step by "
                        "HLO op kind, by source layer, and this many top ops (op_profile.py)")
    p.add_argument("--population", type=int, default=0,
                   help="> 0: also time a population step of this many members (the trainer's "
                        "vmapped step for K runs: K seeds of the config, one data stream, the "
                        "same teacher members) and its speed-up over K single-model steps")
    p.add_argument("--json", default="", help="write the results here")
    return p.parse_args(argv)


def per_preset(text: str) -> dict[str, int]:
    """'ssv2=2,tiny=8' -> {'ssv2': 2, 'tiny': 8}."""
    out = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        out[key] = int(value)
    return out


def num_classes(preset: str) -> int:
    """The label count the trainer would read from the dataset (none is loaded here)."""
    classes = recipes.DATASETS[preset][1]
    if classes is None:
        from data_prep.synthetic import actions  # pure NumPy

        classes = actions.NUM_CLASSES
    return classes


def load_config(name: str, preset: str, batch: int | None, overrides: str
                ) -> ml_collections.ConfigDict:
    config = members_lib.load_config_file(os.path.join(ROOT, "configs", CONFIGS[name]), preset)
    members_lib.apply_overrides(config, overrides)
    config.model.num_classes = num_classes(preset)
    if batch:
        config.batch_size = batch
    return trainer.resolve_config(config)


def random_members(config: ml_collections.ConfigDict, overrides: str, repl) -> list[tuple]:
    """[(module, params, modality)] as `members.load` returns them, with random weights."""
    out = []
    for i, spec in enumerate(config.teacher.members):
        spec = ml_collections.ConfigDict(spec.to_dict())
        spec.overrides = ",".join(filter(None, [spec.get("overrides", ""), overrides]))
        cfg = members_lib.member_config(spec, config)
        cfg.model.num_classes = config.model.num_classes
        cfg = trainer.resolve_config(cfg)
        members_lib.check_compatible(spec.name, cfg, config)
        module = models.build_model(cfg.model)
        params = state.init_params(module, cfg.modality, cfg.data,
                                   jax.random.key(config.seed + 1 + i), repl)
        out.append((module, params, cfg.modality))
    return out


def random_batch(config: ml_collections.ConfigDict, keys: tuple, seed: int) -> dict:
    """Host batch with the pipeline's keys, shapes and dtypes (docs/architecture.md §2)."""
    shapes = jax.eval_shape(lambda: state.dummy_batch(config.data, config.batch_size))
    rng = np.random.default_rng(seed)
    out = {}
    for key in (*keys, "label"):
        shape = shapes[key].shape
        if key == "boxes":
            xy = rng.uniform(0.0, 0.6, shape[:-1] + (2,))
            value = np.concatenate([xy, xy + rng.uniform(0.05, 0.4, xy.shape)], -1).clip(0, 1)
        elif key == "categories":
            value = rng.integers(0, 3, shape)  # pad, hand, object
        elif key == "label":
            value = rng.integers(0, config.model.num_classes, shape)
        else:
            value = rng.normal(size=shape)
        out[key] = value.astype(shapes[key].dtype)
    return out


def _tree_size(tree) -> int:
    return int(sum(x.size for x in jax.tree.leaves(tree)))


def bench_case(name: str, preset: str, args: argparse.Namespace) -> dict:
    batch = per_preset(args.batch).get(preset, DEFAULT_BATCH.get(preset))
    n_steps = per_preset(args.steps).get(preset, DEFAULT_STEPS.get(preset, FALLBACK_STEPS))
    config = load_config(name, preset, batch, args.set)

    # The trainer's "mesh", "model & optimizer", "teacher" and "step" sections, random weights.
    mesh = sharding.make_mesh()
    repl = sharding.replicated(mesh)
    sharding.check_batch_size(config.batch_size // config.accum_steps, mesh)
    module = models.build_model(config.model)
    params = state.init_params(module, config.modality, config.data,
                               jax.random.key(config.seed), repl)
    tx, lr_fn = optim.make_optimizer(config.optim, config.total_steps or LR_STEPS)
    opt_state = jax.jit(tx.init, out_shardings=repl)(params)
    members = random_members(config, args.member_set, repl) if config.teacher.members else []
    keys = tuple(models.MODALITY_KEYS[config.modality]) + tuple(
        k for k in steps.member_keys(members) if k not in models.MODALITY_KEYS[config.modality])
    train_step = jax.jit(steps.make_train_step(module, config.modality, members, tx, lr_fn,
                                               config), donate_argnums=(0,))

    host_batch = random_batch(config, keys, config.seed)
    train_state = {"params": params, "opt_state": opt_state}
    teacher_params = [p for _, p, _ in members]
    step_no = lambda i: jnp.asarray(i, jnp.int32)
    start = time.perf_counter()
    lowered = train_step.lower(train_state, sharding.to_global(host_batch, mesh),
                               teacher_params, step_no(0))
    traced = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - traced

    def run(first: int, count: int) -> tuple[float, dict]:
        nonlocal train_state
        t0 = time.perf_counter()
        for i in range(first, first + count):
            train_state, out = compiled(train_state, sharding.to_global(host_batch, mesh),
                                        teacher_params, step_no(i))
        jax.block_until_ready((train_state, out))
        return time.perf_counter() - t0, out

    first_s, _ = run(0, 1)
    # A population step is timed in repetitions alternating with the solo ones, so that both
    # see the same machine (the ratio moves by tens of percent between separate runs).
    run_population = None
    if args.population > 0:
        population, run_population = bench_population(
            config, module, members, tx, lr_fn, host_batch, mesh, repl, args.population)
    times, pop_times = [], []
    for r in range(args.reps):
        seconds, out = run(1 + r * n_steps, n_steps)
        times.append(seconds / n_steps)
        if run_population is not None:
            pop_times.append(run_population(1 + r * n_steps, n_steps) / n_steps)
    loss = float(out["loss"])
    if not np.isfinite(loss):
        raise FloatingPointError(f"{name}:{preset}: non-finite loss {loss}")

    prof = None
    if args.profile_top > 0:  # after the timed repetitions: tracing adds its own overhead
        first = 1 + args.reps * n_steps
        prof = op_profile.profile(lambda: run(first, n_steps), compiled.as_text(), n_steps,
                                  args.profile_top)
        print(f"{name}:{preset}\n{op_profile.markdown(prof)}", flush=True)

    if run_population is None:
        population = None
    else:
        median = float(np.median(pop_times))
        population.update(step_s=median, step_s_all=pop_times,
                          clips_per_s=population["size"] * config.batch_size / median,
                          speedup_vs_solo=population["size"] * float(np.median(times)) / median)
        print(f"{name}:{preset} population of {population['size']}: "
              f"{population['step_s'] * 1e3:.1f} ms/step, "
              f"{population['clips_per_s']:.0f} member-clips/s, "
              f"{population['speedup_vs_solo']:.2f}x {population['size']} solo steps", flush=True)

    median = float(np.median(times))
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost["flops"]) if cost and "flops" in cost else None
    device = jax.devices()[0]
    dtype = str(config.model.get("dtype", "float32"))
    matmul_dtype = str(config.model.get("matmul_dtype", "") or dtype)
    # MFU against the matmul dtype's peak: that is where the FLOPs are.
    peak = args.peak_tflops or peak_for(device.device_kind, matmul_dtype)
    if matmul_dtype != dtype:
        dtype = f"{dtype}, {matmul_dtype} matmuls"
    mem = compiled.memory_analysis()
    stats = device.memory_stats() or {}
    return {
        "config": name, "preset": preset, "model": f"{config.model.name} {config.model.variant}",
        "dtype": dtype, "batch": config.batch_size, "steps_per_rep": n_steps,
        "members": [m for _, _, m in members],
        "params": _tree_size(params), "teacher_params": _tree_size(teacher_params),
        "trace_lower_s": traced - start, "compile_s": compile_s, "first_step_s": first_s,
        "step_s": median, "step_s_all": times, "clips_per_s": config.batch_size / median,
        "flops_per_step": flops,
        "gflops_per_s": flops / median / 1e9 if flops else None,
        "mfu": flops / median / (peak * 1e12) if flops and peak else None,
        # Live arguments, outputs not aliased to the donated state, and temporaries.
        "xla_step_bytes": None if mem is None else int(
            mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
            + mem.temp_size_in_bytes),
        "device_peak_bytes": stats.get("peak_bytes_in_use"),
        "host_rss_peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "final_loss": loss,
        "profile": prof,
        "population": population,
    }


def bench_population(config, module, members, tx, lr_fn, host_batch: dict, mesh, repl,
                     size: int) -> tuple[dict, Callable[[int, int], float]]:
    """The trainer's population step (steps.make_population_step) for `size` runs of `config`
    with seeds seed..seed+size-1 on one data stream, compiled and run once; -> ({size,
    compile_s}, run(first_step, count) -> seconds)."""
    seeds = [config.seed + k for k in range(size)]
    params = [state.init_params(module, config.modality, config.data, jax.random.key(s), repl)
              for s in seeds]
    stack = lambda trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees)
    train_state = {"params": stack(params), "opt_state": stack([jax.jit(tx.init)(p)
                                                                for p in params])}
    has_teacher = bool(members)
    population = steps.Population(
        seeds=np.array(seeds), w_kd=np.full(size, config.distill.w_kd if has_teacher else 0.0),
        w_gt=np.full(size, config.distill.w_gt if has_teacher else 1.0),
        tau=np.full(size, config.distill.tau),
        teacher=np.full((size, len(members)), 1.0 / max(1, len(members)), np.float32),
        streams=np.zeros(size, np.int64), slot_streams=np.zeros(len(members), np.int64),
        stream_seeds=np.array([config.seed]),
        mixup=float(config.distill.get("mixup", 0.0)) if has_teacher else 0.0)
    step = jax.jit(steps.make_population_step(module, config.modality, members, tx, lr_fn,
                                              population, config.accum_steps),
                   donate_argnums=(0,))
    slot_params = [p for _, p, _ in members]
    batch = lambda: [sharding.to_global(host_batch, mesh)]
    start = time.perf_counter()
    compiled = step.lower(train_state, batch(), slot_params, jnp.asarray(0, jnp.int32)).compile()
    compile_s = time.perf_counter() - start

    def run(first: int, count: int) -> float:
        nonlocal train_state
        t0 = time.perf_counter()
        for i in range(first, first + count):
            train_state, out = compiled(train_state, batch(), slot_params,
                                        jnp.asarray(i, jnp.int32))
        jax.block_until_ready((train_state, out))
        return time.perf_counter() - t0

    run(0, 1)
    return {"size": size, "compile_s": compile_s}, run


def markdown(results: list[dict]) -> str:
    fmt = lambda v, f: "-" if v is None else f.format(v)
    lines = ["| config | preset | model | dtype | batch | ms/step (median) | clips/s | "
             "compile s (trace+lower, compile) | first step s | GFLOP/s | MFU | XLA step GB | "
             "peak RSS GB |", "|" + "---|" * 13]
    for r in results:
        lines.append(
            f"| {r['config']} | {r['preset']} | {r['model']} | {r['dtype']} | {r['batch']} | "
            f"{r['step_s'] * 1e3:.1f} | {r['clips_per_s']:.2f} | "
            f"{r['trace_lower_s'] + r['compile_s']:.1f} ({r['trace_lower_s']:.1f}, "
            f"{r['compile_s']:.1f}) | {r['first_step_s']:.2f} | "
            f"{fmt(r['gflops_per_s'], '{:.1f}')} | {fmt(r['mfu'], '{:.1%}')} | "
            f"{fmt(r['xla_step_bytes'] and r['xla_step_bytes'] / 2**30, '{:.2f}')} | "
            f"{r['host_rss_peak_bytes'] / 2**30:.2f} |")
    pops = [r for r in results if r.get("population")]
    if pops:
        lines += ["", "| config | preset | population K | ms/step | member-clips/s | K solo steps "
                  "(ms) | speed-up over K solo steps |", "|" + "---|" * 7]
        for r in pops:
            p = r["population"]
            lines.append(f"| {r['config']} | {r['preset']} | {p['size']} | "
                         f"{p['step_s'] * 1e3:.1f} | {p['clips_per_s']:.0f} | "
                         f"{p['size'] * r['step_s'] * 1e3:.1f} | {p['speedup_vs_solo']:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    unknown = set(filter(None, args.configs.split(","))) - set(CONFIGS)
    if unknown:
        raise SystemExit(f"unknown configs {sorted(unknown)}; choose from {sorted(CONFIGS)}")
    device = jax.devices()[0]
    header = (f"{machine()}; jax {jax.__version__}; {jax.device_count()} x "
              f"{device.platform} ({device.device_kind}); load {os.getloadavg()[0]:.2f}")
    print(header, flush=True)
    results = []
    for preset in filter(None, args.presets.split(",")):
        for name in filter(None, args.configs.split(",")):
            print(f"== {name}:{preset}", flush=True)
            results.append(bench_case(name, preset, args))
            results[-1]["load_after"] = os.getloadavg()[0]
            brief = {k: v for k, v in results[-1].items()
                     if k not in ("step_s_all", "profile", "population")}
            print(json.dumps(brief), flush=True)
    print(f"\n{header} -> load {os.getloadavg()[0]:.2f}\n\n{markdown(results)}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header, "results": results}, f, indent=1)
    return results


if __name__ == "__main__":
    main()
