"""One benchmark worker process: builds one case in one framework, then times it on request.

    python bench/bench_worker.py '<json: {"impl", "spec", "weights", "threads", ...}>'

Threads are fixed before either framework starts: the process is pinned to the first
`threads` CPUs it may use (sched_setaffinity; XLA's CPU thread pool is sized from the affinity
mask) and PyTorch gets `torch.set_num_threads(threads)` and one inter-op thread. Commands arrive
as JSON lines on stdin and answers leave on the original stdout; everything the frameworks
print goes to stderr.
"""
from __future__ import annotations

import json
import os
import re
import resource
import sys
import time


def pin(threads: int) -> list[int]:
    cpus = sorted(os.sched_getaffinity(0))[:threads]
    if len(cpus) < threads:
        raise SystemExit(f"asked for {threads} threads, only {len(cpus)} CPUs are allowed")
    os.sched_setaffinity(0, cpus)
    return cpus


def rss_peak_bytes() -> int:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) * 1024


def reset_rss_peak() -> bool:
    try:  # Linux: "5" resets the high-water mark to the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def build(args: dict):
    impl = args["impl"]
    if impl == "jax":
        if args.get("device", "cpu") == "cpu" and args.get("xla_cpu", "project") == "project":
            from mmkd_jax import xla_cpu  # what mmkd_jax.main does on CPU, before JAX starts

            xla_cpu.single_threaded_eigen()
        import jax

        jax.config.update("jax_enable_compilation_cache", False)  # cold compiles, every run
        from jax_side import JaxCase

        return JaxCase(args["spec"], args["weights"], args.get("options", {}))
    import torch

    torch.set_num_threads(args["threads"])
    torch.set_num_interop_threads(1)
    if args.get("device") == "gpu":
        torch.set_float32_matmul_precision("high")  # TF32, as XLA's default precision
    from torch_side import TorchCase, TorchVmapCase

    if impl == "torch_vmap":
        return TorchVmapCase(args["spec"], args["weights"], device=args.get("torch_device", "cpu"),
                             dtype=args.get("dtype", "float32"))
    return TorchCase(args["spec"], args["weights"], compile_model=impl == "torch_compile",
                     device=args.get("torch_device", "cpu"), dtype=args.get("dtype", "float32"))


def main() -> None:
    args = json.loads(sys.argv[1])
    if args.get("device", "cpu") == "cpu" and args.get("host_malloc", "keep") == "keep":
        # The project's CPU setting (mmkd_jax/host_memory.py), before any thread starts; every
        # column gets it, PyTorch's included, so the allocator is the same on both sides.
        # (The parent puts the repo root on PYTHONPATH: vs_pytorch.worker_env.)
        from mmkd_jax import host_memory

        host_memory.keep_freed_memory(force=True)
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # framework chatter on stdout would corrupt the protocol
    reply = lambda obj: out.write(json.dumps(obj) + "\n")
    try:
        if args.get("device", "cpu") == "cpu":
            cpus = pin(args["threads"])
        else:
            cpus = sorted(os.sched_getaffinity(0))
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        if args["impl"] == "prepare":
            import cases

            cases.write_weights(args["spec"], args["weights"])
            reply({"ok": True})
            return
        start = time.perf_counter()
        case = build(args)
        built = time.perf_counter() - start
        info = case.setup()
        info.update(build_s=built, cpus=cpus, rss_after_setup_bytes=rss_peak_bytes())
        reply({"ok": True, **info})
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["cmd"] == "time":
                # k steps, one sync at the end: per-step time = total / k. A framework that
                # dispatches asynchronously may overlap the next step's host work.
                start, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
                last = None
                for _ in range(cmd["steps"]):
                    last = case.step()
                case.sync(last)
                seconds = time.perf_counter() - start
                after = resource.getrusage(resource.RUSAGE_SELF)
                # Page faults and kernel time say whether the allocator hands memory back to
                # the OS between steps (docs/benchmarks.md, "What moved the numbers").
                reply({"ok": True, "seconds": seconds,
                       "minor_faults": after.ru_minflt - usage.ru_minflt,
                       "user_s": after.ru_utime - usage.ru_utime,
                       "sys_s": after.ru_stime - usage.ru_stime})
            elif cmd["cmd"] == "reset_memory":
                case.reset_memory()
                reply({"ok": True, "rss_reset": reset_rss_peak()})
            elif cmd["cmd"] == "memory":
                reply({"ok": True, "rss_peak_bytes": rss_peak_bytes(), **case.memory()})
            elif cmd["cmd"] == "exit":
                reply({"ok": True})
                return
    except Exception as e:  # the parent reports it and carries on with the other columns
        import traceback

        traceback.print_exc()
        reply({"ok": False, "error": f"{type(e).__name__}: {str(e)[:2000]}"})


if __name__ == "__main__":
    main()
