"""What it costs to run the student versus the teacher, per clip, on this machine.

    python bench/inference_cost.py                       # both settings, markdown + JSON + plot
    python bench/inference_cost.py --settings=synthetic --repeats=20

For the RGB student and for each teacher member (RGB TimeSformer, flow TimeSformer, STLT on
boxes), and for the teacher as one jitted logit average: parameters, FLOPs per clip (XLA cost
analysis of the compiled forward pass), latency per clip (batch 1, median of `--repeats` runs
after one warm-up run) and memory (XLA's buffer assignment: arguments + outputs + temporaries,
i.e. the peak the compiled program needs). The teacher also needs optical flow: computing it for
the clip's 8 frame pairs with the project's flow function (`mmkd_jax.data.flow.compute_flow`) is
timed per method on real footage (OpenCV's tree.avi resized to the setting's video size) and
added to the teacher's latency. The object detector that produces the teacher's boxes is NOT
included (the records carry boxes; a detector would add its own cost).

Settings: `paper` = TimeSformer ViT-B/16 8x224 and STLT (BMVC'21 sizes), 174 classes, 240x427
videos (SSv2 is 240 px high); `synthetic` = the tiny models of the synthetic presets, 14
classes, 48x48 videos. The model fields equal those of configs/baseline_*.py (tested), spelled
out here so the benchmark runs with JAX alone (no TF, no ml_collections: GPU hosts).
Numbers from a shared machine are noisy: the load average is printed with the table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

TREE_AVI = "/usr/share/doc/opencv-doc/examples/data/tree.avi"
FLOW_METHODS = ("farneback", "dis", "tvl1")
MEMBERS = ("rgb", "flow", "layout")

# name -> setting. `models` are build_model configs (num_classes added at run time).
SETTINGS = {
    "paper": {
        "title": "ViT-B/16, 8x224 (the paper: SSv2, 174 classes)",
        "num_classes": 174, "num_frames": 8, "image_size": 224, "num_boxes": 8,
        "flow_channels": 2, "video_hw": (240, 427),
        "models": {
            "rgb": {"name": "timesformer", "variant": "B/16", "image_size": 224,
                    "patch_size": 16, "num_frames": 8, "in_channels": 3},
            "layout": {"name": "stlt", "variant": "bmvc21", "num_frames": 8},
        },
    },
    "synthetic": {
        "title": "synthetic size (tiny models, 8x32, 14 classes)",
        "num_classes": 14, "num_frames": 8, "image_size": 32, "num_boxes": 8,
        "flow_channels": 2, "video_hw": (48, 48),
        "models": {
            "rgb": {"name": "timesformer", "variant": "tiny", "image_size": 32,
                    "patch_size": 8, "num_frames": 8, "in_channels": 3},
            "layout": {"name": "stlt", "variant": "tiny", "num_frames": 8, "hidden_size": 64,
                       "mlp_dim": 128, "dropout": 0.0},
        },
    },
}


def model_configs(setting: dict, dtype: str = "float32") -> dict[str, dict]:
    """Build configs of the student and of the three members for `setting`."""
    rgb = {**setting["models"]["rgb"], "num_classes": setting["num_classes"], "dtype": dtype}
    return {"rgb": rgb, "flow": {**rgb, "in_channels": setting["flow_channels"]},
            "layout": {**setting["models"]["layout"], "num_classes": setting["num_classes"],
                       "dtype": dtype}}


def arch_fields(cfg: dict) -> dict:
    """A build_model config with its variant expanded (what the module is built with)."""
    from mmkd_jax.models import MODELS

    return {**MODELS[cfg["name"]][1].get(cfg.get("variant"), {}), **cfg}


def example_batch(setting: dict, seed: int = 0) -> dict:
    """One clip (batch 1) of every modality, random values in the pipeline's layout."""
    rng = np.random.default_rng(seed)
    t, s, k = setting["num_frames"], setting["image_size"], setting["num_boxes"]
    xy = np.sort(rng.uniform(size=(1, t, k, 2, 2)), axis=-2)  # x1 < x2, y1 < y2
    return {"rgb": rng.normal(size=(1, t, s, s, 3)).astype(np.float32),
            "flow": rng.normal(size=(1, t, s, s, setting["flow_channels"])).astype(np.float32),
            "boxes": xy.transpose(0, 1, 2, 4, 3).reshape(1, t, k, 4).astype(np.float32),
            "categories": rng.integers(1, 3, size=(1, t, k)).astype(np.int32)}


def _timed(fn, repeats: int) -> dict:
    """Median wall time and median process CPU time (all threads) of `repeats` calls.

    CPU seconds are the work done whoever else shares the cores; wall seconds are what a user
    waits (on a busy machine, more than CPU / cores).
    """
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return {"latency_s": statistics.median(walls), "times_s": walls,
            "cpu_s": statistics.median(cpus)}


def _cost(compiled) -> dict:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
        cost = cost[0] if cost else {}
    mem = compiled.memory_analysis()
    memory = None
    if mem is not None:
        memory = (mem.argument_size_in_bytes + mem.output_size_in_bytes
                  + mem.temp_size_in_bytes - mem.alias_size_in_bytes)
    return {"flops": float(cost.get("flops", float("nan"))), "memory_bytes": memory}


def measure_jax(fn, params, inputs: tuple, repeats: int) -> dict:
    """Compile `fn(params, *inputs)`, read XLA's cost and memory analysis, time batch-1 runs."""
    import jax

    start = time.perf_counter()
    compiled = jax.jit(fn).lower(params, *inputs).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(params, *inputs))  # warm-up
    timing = _timed(lambda: jax.block_until_ready(compiled(params, *inputs)), repeats)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    return {"params": n_params, **_cost(compiled), **timing, "compile_s": compile_s}


def video_frames(hw: tuple[int, int], count: int) -> tuple[np.ndarray, str]:
    """`count` consecutive RGB frames of real footage resized to `hw` (or a moving texture)."""
    import cv2

    h, w = hw
    frames = []
    if os.path.exists(TREE_AVI):
        cap = cv2.VideoCapture(TREE_AVI)
        while len(frames) < count:
            ok, bgr = cap.read()
            if not ok:
                break
            frames.append(cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (w, h),
                                     interpolation=cv2.INTER_AREA))
        cap.release()
    if len(frames) == count:
        return np.stack(frames), f"tree.avi resized to {w}x{h}"
    texture = np.random.default_rng(0).integers(0, 256, size=(h, w + 2 * count, 3), dtype=np.uint8)
    texture = cv2.GaussianBlur(texture, (5, 5), 1.5)
    return (np.stack([texture[:, 2 * i:2 * i + w] for i in range(count)]),
            f"blurred noise texture moving 2 px/frame, {w}x{h}")


def measure_flow(setting: dict, method: str, repeats: int) -> dict:
    """Optical flow for one clip: one flow frame per sampled RGB frame (T frame pairs)."""
    import cv2

    from mmkd_jax.data.flow import compute_flow

    frames, source = video_frames(setting["video_hw"], setting["num_frames"] + 1)
    try:
        compute_flow(frames[:2], method)  # warm-up (and: is the method available here?)
    except (AttributeError, cv2.error) as e:  # TV-L1 needs opencv-contrib
        return {"method": method, "error": f"{type(e).__name__}: {e}"}
    timing = _timed(lambda: compute_flow(frames, method), repeats)
    return {"method": method, "pairs": setting["num_frames"], "source": source, **timing}


def run_setting(name: str, repeats: int, flow_repeats: int, flow_methods: list[str],
                dtype: str) -> dict:
    import jax

    from mmkd_jax.models import build_model, ensemble_logits, model_inputs

    setting = SETTINGS[name]
    batch = example_batch(setting)
    members, rows = {}, {}
    for member, cfg in model_configs(setting, dtype).items():
        module = build_model(cfg)
        inputs = model_inputs(member, batch)
        params = jax.jit(lambda key, *x, m=module: m.init(key, *x, train=False)["params"])(
            jax.random.key(0), *inputs)
        members[member] = (module, params, member)
        apply = lambda p, *x, m=module: m.apply({"params": p}, *x, train=False)
        rows[member] = measure_jax(apply, params, inputs, repeats)
        print(f"  {name}/{member}: {rows[member]['latency_s'] * 1e3:.1f} ms", flush=True)
    ordered = [members[m] for m in MEMBERS]
    teacher_fn = lambda plist, b: ensemble_logits(
        [(m, p, mod) for (m, _, mod), p in zip(ordered, plist)], b)
    rows["teacher"] = measure_jax(teacher_fn, [p for _, p, _ in ordered], (batch,), repeats)
    print(f"  {name}/teacher: {rows['teacher']['latency_s'] * 1e3:.1f} ms", flush=True)
    flows = [measure_flow(setting, m, flow_repeats) for m in flow_methods]
    return {"setting": name, "title": setting["title"], "video_hw": setting["video_hw"],
            "models": rows, "flow": flows, "dtype": dtype}


def machine() -> dict:
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    dev = jax.devices()[0]
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "device": dev.device_kind,
            "platform": dev.platform, "jax": jax.__version__,
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def _mb(x) -> str:
    return "-" if x is None else f"{x / 2**20:,.1f}"


def _ms(x) -> str:
    return f"{x * 1e3:,.1f}" if x >= 0.01 else f"{x * 1e3:,.2f}"


def markdown(results: list[dict], info: dict, repeats: int, flow_repeats: int,
             command: str) -> str:
    out = [f"Command: `{command}`", "",
           f"Machine: {info['cpu']}, {info['cores']} cores; JAX {info['jax']} on "
           f"{info['platform']} ({info['device']}); load average (1 min) at start "
           f"{info['load_average'][0]}, at end {info['load_average_end'][0]}. Latency: wall "
           f"time, batch 1, median of {repeats} runs (models) / {flow_repeats} runs (flow); CPU "
           "time: the process's CPU seconds over all threads (robust to other jobs on the "
           "machine). Memory: XLA buffer assignment (arguments + outputs + temporaries). The "
           "teacher's object detector is not included.", ""]
    names = {"rgb": "RGB TimeSformer", "flow": "flow TimeSformer", "layout": "STLT (boxes)"}
    for r in results:
        m = r["models"]
        h, w = r["video_hw"]
        out += [f"**{r['title']}**, {r['dtype']}", "",
                "| | params | GFLOPs / clip | latency / clip (ms) | CPU time / clip (ms) "
                "| memory (MB) |",
                "|---|---:|---:|---:|---:|---:|"]

        def row(label, x):
            return (f"| {label} | {x['params']:,} | {x['flops'] / 1e9:,.3f} | "
                    f"{_ms(x['latency_s'])} | {_ms(x['cpu_s'])} | {_mb(x['memory_bytes'])} |")

        out.append(row("**student** (RGB TimeSformer)", m["rgb"]))
        out += [row(f"teacher member: {names[k]}", m[k]) for k in MEMBERS]
        out.append(row("teacher models (one jit, logit average)", m["teacher"]))
        for f in r["flow"]:
            if "error" in f:
                out.append(f"| optical flow {f['method']} | | | unavailable: {f['error']} | | |")
                continue
            out.append(f"| optical flow for the clip: {f['method']}, {f['pairs']} pairs at "
                       f"{w}x{h} (CPU) | | | {_ms(f['latency_s'])} | {_ms(f['cpu_s'])} | |")
        for f in r["flow"]:
            if "error" not in f:
                total = m["teacher"]["latency_s"] + f["latency_s"]
                cpu = m["teacher"]["cpu_s"] + f["cpu_s"]
                out.append(f"| **teacher total** (models + {f['method']} flow; no detector) "
                           f"| {m['teacher']['params']:,} | "
                           f"{m['teacher']['flops'] / 1e9:,.3f} + flow | {_ms(total)} | "
                           f"{_ms(cpu)} (**{cpu / m['rgb']['cpu_s']:.1f}x** student) | |")
        out.append("")
    return "\n".join(out)


def plot(results: list[dict], path: str) -> None:
    """Latency per clip (log scale): student, teacher models, teacher + each flow method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 3.4), squeeze=False)
    for ax, r in zip(axes[0], results):
        m = r["models"]
        gflops = lambda key, m=m: f"{m[key]['flops'] / 1e9:,.3g} GFLOPs"
        bars = [(f"student\n({gflops('rgb')})", m["rgb"]["latency_s"], "tab:blue"),
                (f"teacher models\n({gflops('teacher')})", m["teacher"]["latency_s"],
                 "tab:orange")]
        bars += [(f"teacher + {f['method']} flow", m["teacher"]["latency_s"] + f["latency_s"],
                  "tab:red") for f in r["flow"] if "error" not in f]
        for i, (_, seconds, colour) in enumerate(bars):
            ax.barh(i, seconds * 1e3, color=colour)
            ax.text(seconds * 1e3, i, f" {_ms(seconds)} ms", va="center", fontsize=8)
        ax.set_yticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        # Bars start one decade below the shortest (not where autoscale puts the axis), so the
        # student's bar is one decade long in every panel; x8 on the right for the labels.
        shortest = min(seconds for _, seconds, _ in bars) * 1e3
        ax.set_xlim(shortest / 10, ax.get_xlim()[1] * 8)
        ax.set_xlabel("latency per clip, batch 1 (ms, log scale); no object detector")
        ax.set_title(f"{r['title']}, {r['dtype']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--settings", default="paper,synthetic", help=f"of {sorted(SETTINGS)}")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per model (median)")
    p.add_argument("--flow_repeats", type=int, default=3, help="timed runs per flow method")
    p.add_argument("--flow_methods", default=",".join(FLOW_METHODS))
    p.add_argument("--dtype", default="float32", help="model compute dtype (bfloat16 on GPU)")
    p.add_argument("--out_dir", default="/tmp/mmkd_inference_cost")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    names = [s for s in args.settings.split(",") if s]
    unknown = sorted(set(names) - set(SETTINGS))
    if unknown:
        raise SystemExit(f"unknown settings {unknown}; choose from {sorted(SETTINGS)}")
    info = machine()
    results = []
    for name in names:
        print(f"{name}: {SETTINGS[name]['title']}", flush=True)
        results.append(run_setting(name, args.repeats, args.flow_repeats,
                                   [m for m in args.flow_methods.split(",") if m], args.dtype))
    info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    command = "python bench/inference_cost.py " + " ".join(sys.argv[1:] if argv is None
                                                           else argv)
    text = markdown(results, info, args.repeats, args.flow_repeats, command.strip())
    os.makedirs(args.out_dir, exist_ok=True)
    paths = {k: os.path.join(args.out_dir, f"inference_cost.{k}") for k in ("md", "json", "png")}
    with open(paths["md"], "w") as f:
        f.write(text)
    with open(paths["json"], "w") as f:
        json.dump({"machine": info, "results": results, "command": command}, f, indent=2)
    plot(results, paths["png"])
    print("\n" + text)
    print(f"wrote {', '.join(paths.values())}")
    return {"machine": info, "results": results, "paths": paths, "markdown": text}


if __name__ == "__main__":
    main()
