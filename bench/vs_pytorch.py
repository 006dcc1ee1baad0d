"""JAX (this project) vs the PyTorch reference: the same work, same machine, one run.

    python bench/vs_pytorch.py                        # both sizes, all workloads
    python bench/vs_pytorch.py --sizes synthetic --threads 1 --reps synthetic=7
    python bench/vs_pytorch.py --sizes vitb --workloads train --impls jax \
        --jax_variants "dpa:attention=dot_product_attention;bf16:dtype=bfloat16;remat:remat=1"
    python bench/vs_pytorch.py --device gpu --dtype bfloat16 --batch vitb=16 --steps vitb=10

Workloads: (a) `train`: student TimeSformer step (forward, backward, AdamW update, clip 5.0);
(b) `distill`: the full distillation step (RGB and flow TimeSformer teachers and the STLT
teacher forward without gradients, student forward/backward/update, KD at tau = 10);
(c) `infer`: student forward at batch 1. Sizes: `synthetic` (the project's CPU default preset)
and `vitb` (ViT-B/16, 8 x 224, the paper's preset). Columns: `jax`, `torch` (eager),
`torch_compile` (Inductor), plus any `--jax_variants` (optimisations on/off).

Method: every column is its own worker process (bench/bench_worker.py) pinned to the same
`--threads` CPUs, with the same weights (written once by PyTorch, converted for JAX), the same
batch and dtype. Workers build and compile one after another (compile time measured
separately, JAX's persistent cache off, Inductor on a fresh cache directory per case), then
`--reps` rounds alternate the columns (rotating their order), each timing `--steps` steps with
one sync at the end. Reported: median time per step, the median of per-round ratios to `jax`,
compile time, the steady-state peak RSS (high-water mark reset after warm-up), XLA's per-step
allocation, GFLOP/s from XLA's cost analysis of the JAX step (same FLOPs credited to every
column) and MFU against `--peak_tflops` or the GPU table below. Load average is recorded for
every case. The default run took 33 min on 2 shared CPU cores at load 6-10 (docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]

import cases  # noqa: E402

# Dense peak TFLOP/s per device (vendor spec sheets, SXM parts, no sparsity). float32 is the
# TF32 tensor-core rate: XLA's default precision uses TF32 for float32 matmuls on these GPUs,
# and the PyTorch worker is set to match (`torch.set_float32_matmul_precision("high")`).
PEAK_TFLOPS = {
    "H200": {"bfloat16": 989.4, "float32": 494.7},
    "H100": {"bfloat16": 989.4, "float32": 494.7},
    "A100": {"bfloat16": 312.0, "float32": 156.0},
    "L4": {"bfloat16": 121.0, "float32": 60.0},
}
DEFAULT_STEPS = {"synthetic": 5, "vitb": 1}
DEFAULT_BATCH = {"synthetic": 32, "vitb": 1}
DEFAULT_REPS = {"synthetic": 5, "vitb": 3}
INFER_STEPS = {"synthetic": 4, "vitb": 1}  # inference steps are short: more per round


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="synthetic,vitb")
    p.add_argument("--workloads", default="train,distill,infer")
    p.add_argument("--impls", default="jax,torch,torch_compile")
    p.add_argument("--jax_variants", default="",
                   help="extra JAX columns 'name:key=value,...;name2:...' (jax_side.DEFAULTS)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="CPUs per worker (pinned) = torch intra-op threads = XLA CPU pool")
    p.add_argument("--compile_sizes", default="synthetic",
                   help="sizes where the torch_compile column runs (Inductor needs ~3-5 min per "
                        "ViT-B workload on 2 cores: add vitb for the full comparison)")
    p.add_argument("--reps", default="", help="alternating rounds per case, e.g. synthetic=5")
    p.add_argument("--steps", default="", help="steps per round, e.g. synthetic=5,vitb=1")
    p.add_argument("--batch", default="", help="train/distill batch, e.g. synthetic=32,vitb=1")
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="matmul dtype; parameters, optimiser and loss stay float32. bfloat16: "
                        "PyTorch autocast, JAX matmul_dtype=bfloat16 (matmul operands bf16, "
                        "float32 between them); the variant 'dtype=bfloat16' is all-bf16 JAX")
    p.add_argument("--peak_tflops", type=float, default=0.0,
                   help="peak of the machine for MFU (default: GPU table, none on CPU)")
    p.add_argument("--host_malloc", default="keep", choices=("keep", "default"),
                   help="CPU workers: keep = reuse freed host memory (mmkd_jax/host_memory.py, "
                        "what mmkd_jax.main does on CPU), for every column; default = glibc's "
                        "defaults")
    p.add_argument("--population", type=int, default=1,
                   help="models per train/distill step: JAX trains them as one population "
                        "(the trainer's vmapped step), torch and torch_compile one after "
                        "another, torch_vmap with torch.func (functional_call + vmap)")
    p.add_argument("--xla_cpu", default="project", choices=("project", "default"),
                   help="JAX on CPU: project = Eigen single-threaded, as mmkd_jax.main runs "
                        "(mmkd_jax/xla_cpu.py); default = XLA's defaults")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per worker reply")
    p.add_argument("--json", default="", help="write all results here")
    p.add_argument("--markdown", default="", help="append the tables to this file")
    return p.parse_args(argv)


def _per_size(text: str, defaults: dict) -> dict:
    out = dict(defaults)
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        out[key] = int(value)
    return out


def parse_variants(text: str) -> list[tuple[str, dict]]:
    """'dpa:attention=dot_product_attention;bf16:dtype=bfloat16' -> [(name, options)]."""
    out = []
    for item in filter(None, text.split(";")):
        name, _, body = item.partition(":")
        opts = {}
        for kv in filter(None, body.split(",")):
            key, _, value = kv.partition("=")
            opts[key] = {"1": True, "0": False, "true": True, "false": False}.get(value, value)
        out.append((f"jax:{name}", opts))
    return out


class Worker:
    """A bench_worker.py subprocess speaking JSON lines."""

    def __init__(self, args: dict, env: dict, timeout: float):
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "bench_worker.py"), json.dumps(args)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, text=True, env=env)

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            return {"ok": False, "error": f"worker exited with {self.proc.wait()}"}
        return json.loads(line)

    def ask(self, cmd: dict) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask({"cmd": "exit"})
                self.proc.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired, ValueError):
                self.proc.kill()


def worker_env(impl: str, args: argparse.Namespace, scratch: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, HERE, env.get("PYTHONPATH", "")])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if impl.startswith("jax"):
        env["JAX_PLATFORMS"] = "cuda" if args.device == "gpu" else "cpu"
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # measure what a step needs
    else:
        # A fresh Inductor cache: the compile time reported is a cold compile.
        env["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(scratch, "inductor", impl)
        env["OMP_NUM_THREADS"] = str(args.threads)
    return env


def prepare_weights(spec: dict, directory: str, args: argparse.Namespace, scratch: str) -> None:
    os.makedirs(directory, exist_ok=True)
    w = Worker({"impl": "prepare", "spec": spec, "weights": directory,
                "threads": args.threads, "device": args.device},
               worker_env("torch", args, scratch), args.timeout)
    reply = w.read()
    w.proc.wait()
    if not reply.get("ok"):
        raise SystemExit(f"writing weights failed: {reply}")


def run_case(spec: dict, columns: list[tuple[str, dict]], args: argparse.Namespace,
             weights: str, scratch: str, steps: int, reps: int) -> dict:
    result = {"spec": {k: spec[k] for k in ("size", "workload", "batch", "population")},
              "load_before": os.getloadavg(), "columns": {}}
    workers = {}
    for name, opts in columns:  # one after another: compiles do not overlap
        impl = name.split(":")[0]
        wargs = {"impl": impl, "spec": spec, "weights": weights, "threads": args.threads,
                 "host_malloc": args.host_malloc, "xla_cpu": args.xla_cpu,
                 "options": opts, "device": args.device, "dtype": args.dtype,
                 "torch_device": "cuda" if args.device == "gpu" else "cpu"}
        if impl == "jax":
            # The autocast equivalent: bf16 matmul operands, float32 accumulation and between.
            wargs["options"] = {"matmul_dtype": "bfloat16" if args.dtype == "bfloat16" else "",
                                **opts}
        # A scratch directory per case: Inductor starts cold in every case, not only the first.
        case_dir = os.path.join(scratch, f"{spec['size']}_{spec['workload']}")
        w = Worker(wargs, worker_env(impl, args, case_dir), args.timeout)
        info = w.read()
        print(f"  {name}: {json.dumps({k: v for k, v in info.items() if k != 'cpus'})}",
              flush=True)
        result["columns"][name] = {"setup": info, "times": []}
        if info.get("ok"):
            workers[name] = w
            w.ask({"cmd": "reset_memory"})
        else:
            w.close()
    names = list(workers)
    for r in range(reps):
        order = names[r % len(names):] + names[:r % len(names)] if names else []
        for name in order:
            reply = workers[name].ask({"cmd": "time", "steps": steps})
            if reply.get("ok"):
                col = result["columns"][name]
                col["times"].append(reply["seconds"] / steps)
                for key in ("minor_faults", "user_s", "sys_s"):
                    col.setdefault(key, []).append(reply.get(key, 0) / steps)
        print(f"  round {r + 1}/{reps}: " + ", ".join(
            f"{n} {result['columns'][n]['times'][-1] * 1e3:.1f} ms "
            f"({result['columns'][n]['minor_faults'][-1]:.0f} faults, "
            f"sys {result['columns'][n]['sys_s'][-1]:.2f} s)" for n in names
            if result["columns"][n]["times"]), flush=True)
    for name, w in workers.items():
        result["columns"][name]["memory"] = w.ask({"cmd": "memory"})
        w.close()
    result["load_after"] = os.getloadavg()
    return result


def peak_for(device_kind: str, dtype: str) -> float:
    return next((v[dtype] for k, v in PEAK_TFLOPS.items() if k in device_kind), 0.0)


def summarise(result: dict, peak_tflops: float, dtype: str) -> list[dict]:
    cols = result["columns"]
    ref = cols.get("jax", {})
    ref_times = np.asarray(ref.get("times", []))
    flops = ref.get("setup", {}).get("flops")
    peak_tflops = peak_tflops or peak_for(ref.get("setup", {}).get("device_kind", ""), dtype)
    rows = []
    for name, col in cols.items():
        setup, times = col["setup"], np.asarray(col["times"])
        row = {"column": name, "ok": bool(setup.get("ok")) and len(times) > 0}
        if not row["ok"]:
            row["error"] = setup.get("error", "no timings")
            rows.append(row)
            continue
        med = float(np.median(times))
        row.update(ms=med * 1e3, ms_min=float(times.min()) * 1e3,
                   clips_per_s=result["spec"]["batch"] * result["spec"]["population"] / med)
        if len(ref_times) == len(times) and len(times):
            paired = times / ref_times  # same round, alternating: robust to load drift
            row.update(jax_speedup=float(np.median(paired)), jax_speedup_min=float(paired.min()),
                       jax_speedup_max=float(paired.max()))
        if "compile_s" in setup:
            row["compile_s"] = setup["trace_lower_s"] + setup["compile_s"]
        row["first_step_s"] = setup.get("first_step_s")
        mem = col.get("memory", {})
        row["rss_peak_gb"] = mem.get("rss_peak_bytes", 0) / 2**30
        if "device_peak_bytes" in mem:
            row["device_peak_gb"] = mem["device_peak_bytes"] / 2**30
        if "xla_step_bytes" in setup:
            row["xla_step_gb"] = setup["xla_step_bytes"] / 2**30
        if flops:
            row["gflops"] = flops / med / 1e9
            if peak_tflops:
                row["mfu"] = flops / med / (peak_tflops * 1e12)
        if ref.get("setup", {}).get("check") and setup.get("check"):
            row["check_diff"] = float(np.max(np.abs(
                np.asarray(setup["check"]) - np.asarray(ref["setup"]["check"]))))
        rows.append(row)
    return rows


def markdown(result: dict, rows: list[dict]) -> str:
    s = result["spec"]
    models = f", {s['population']} models per step" if s["population"] > 1 else ""
    head = (f"**{s['size']} / {s['workload']}** (batch {s['batch']}{models}; load "
            f"{result['load_before'][0]:.2f} -> {result['load_after'][0]:.2f})\n\n"
            "| column | ms/step (median) | clips/s | JAX speedup (median [min, max]) | "
            "compile s | first step s | peak RSS GB | XLA step GB | GFLOP/s | MFU | "
            "check diff |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    fmt = lambda v, f: "-" if v is None else f.format(v)
    for r in rows:
        if not r["ok"]:
            lines.append(f"| {r['column']} | failed: {r['error'][:120]} |||||||||||")
            continue
        speed = ("-" if "jax_speedup" not in r else
                 f"{r['jax_speedup']:.2f}x [{r['jax_speedup_min']:.2f}, "
                 f"{r['jax_speedup_max']:.2f}]")
        lines.append(
            f"| {r['column']} | {r['ms']:.1f} | {r['clips_per_s']:.2f} | {speed} | "
            f"{fmt(r.get('compile_s'), '{:.1f}')} | {fmt(r.get('first_step_s'), '{:.1f}')} | "
            f"{r['rss_peak_gb']:.2f} | {fmt(r.get('xla_step_gb'), '{:.2f}')} | "
            f"{fmt(r.get('gflops'), '{:.1f}')} | {fmt(r.get('mfu'), '{:.1%}')} | "
            f"{fmt(r.get('check_diff'), '{:.1e}')} |")
    return head + "\n".join(lines) + "\n"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return (f"{platform.node()}: {cpu}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}")


def main(argv=None) -> None:
    args = parse_args(argv)
    steps = _per_size(args.steps, DEFAULT_STEPS)
    batches = _per_size(args.batch, DEFAULT_BATCH)
    reps = _per_size(args.reps, DEFAULT_REPS)
    impls = [c for c in args.impls.split(",") if c]
    variants = parse_variants(args.jax_variants)
    if args.device == "gpu" and not args.peak_tflops:
        print("GPU: MFU uses PEAK_TFLOPS by device name; pass --peak_tflops to override.")
    versions = subprocess.run(
        [sys.executable, "-c", "import jax, flax, torch, transformers; print(jax.__version__, "
         "flax.__version__, torch.__version__, transformers.__version__)"],
        capture_output=True, text=True).stdout.split()
    header = (f"{machine()}; jax/flax/torch/transformers {' '.join(versions)}; threads "
              f"{args.threads}; device {args.device}; dtype {args.dtype}; host malloc "
              f"{args.host_malloc}")
    print(header, flush=True)
    report, everything = [f"\n### Run {time.strftime('%Y-%m-%d %H:%M')}\n\n{header}\n"], []
    with tempfile.TemporaryDirectory(prefix="mmkd_vs_pytorch_") as scratch:
        for size in args.sizes.split(","):
            weights = os.path.join(scratch, f"weights_{size}")
            for workload in args.workloads.split(","):
                batch = 1 if workload == "infer" else batches[size]
                spec = cases.make_spec(size, workload, batch, population=1 if workload == "infer"
                                       else args.population)
                if not os.path.isdir(weights):
                    prepare_weights(spec, weights, args, scratch)
                print(f"== {size} / {workload} (batch {batch})", flush=True)
                n = steps[size] * (INFER_STEPS.get(size, 1) if workload == "infer" else 1)
                columns = [(c, {}) for c in impls if c != "torch_compile"
                           or size in args.compile_sizes.split(",")] + variants
                result = run_case(spec, columns, args, weights, scratch, n, reps[size])
                rows = summarise(result, args.peak_tflops, args.dtype)
                table = markdown(result, rows)
                print(table, flush=True)
                report.append(table)
                everything.append({"result": result, "rows": rows})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header, "cases": everything}, f, indent=1)
    if args.markdown:
        with open(args.markdown, "a") as f:
            f.write("\n".join(report))


if __name__ == "__main__":
    main()
