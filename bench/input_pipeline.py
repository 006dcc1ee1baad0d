"""Training input-pipeline throughput in clips/s per CPU core.

    python bench/input_pipeline.py --cores 1 --data_dir /tmp/mmkd_bench

Pins the process to `--cores` CPUs (sched_setaffinity before TensorFlow starts its thread pools,
tf.data private pool and inter-op pool of that size, one intra-op thread), then times the train
iterator for the distillation keys (rgb + flow + boxes) and for rgb alone on
(a) `something_synthetic` via data_prep.builders.load (built on first use) and
(b) real footage: 240p (320x240) JPEG records made from OpenCV's vtest.avi with the test fixture
    builder (tests/fixtures_records.py), 8-frame 224x224 clips.
Prints a markdown table. Numbers on a shared machine are noisy: run with idle cores.
"""
import argparse
import os
import sys
import time

from bench_worker import pin  # the vs_pytorch workers' pinning (bench/ is on sys.path)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYSETS = {"rgb+flow+boxes": ("rgb", "flow", "boxes", "categories"), "rgb": ("rgb",)}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cores", type=int, default=1, help="CPUs to pin to (the first N allowed)")
    p.add_argument("--data_dir", default="/tmp/mmkd_bench", help="where records are (built)")
    p.add_argument("--datasets", default="vtest,synthetic")
    p.add_argument("--synthetic_name", default="something_synthetic/standard_tiny")
    p.add_argument("--synthetic_size", type=int, default=48,
                   help="image_size for the synthetic rows (its frames are 48 px)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seconds", type=float, default=10.0, help="timed duration per repeat")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed runs per row; the best is reported (least disturbed by others)")
    return p.parse_args()


def measure(cfg, keys, batch: int, seconds: float,
            repeats: int) -> tuple[list[float], list[float], float]:
    """(clips per wall second, clips per process CPU-second) of each repeat, first batch s.

    CPU seconds count every thread of this process, so clips per CPU-second is the per-core
    cost even when other jobs share the pinned cores; wall-clock rate / cores is the other view.
    """
    from mmkd_jax.data import pipeline

    start = time.perf_counter()
    it = pipeline.train_iterator(cfg, keys, batch, seed=0)
    next(it)
    first = time.perf_counter() - start
    for _ in range(3):  # let autotune settle
        next(it)
    walls, per_cpu = [], []
    for _ in range(repeats):
        clips, start, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds:
            clips += len(next(it)["label"])
        walls.append(clips / (time.perf_counter() - start))
        per_cpu.append(clips / (time.process_time() - cpu))
    return walls, per_cpu, first


def main() -> None:
    args = parse_args()
    load_before = os.getloadavg()[0]
    cpus = pin(args.cores)
    sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(args.cores)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    from mmkd_jax.data import pipeline

    rows = []
    for dataset in args.datasets.split(","):
        cfg = pipeline.default_data_config()
        cfg.data_dir = args.data_dir
        cfg.threads = args.cores
        cfg.shuffle_buffer = 64
        if dataset == "vtest":
            import fixtures_records

            cfg.name = fixtures_records.build(args.data_dir, "vtest")
            cfg.image_size, cfg.num_frames = 224, 8
            source = "vtest.avi 320x240 JPEG"
        else:
            cfg.name = args.synthetic_name
            cfg.image_size, cfg.num_frames = args.synthetic_size, 8
            source = f"{args.synthetic_name} (48x48)"
            try:
                pipeline.num_examples(cfg, "train")  # builds it on first use
            except Exception as e:  # noqa: BLE001 - report and go on with the other rows
                rows.append(f"| {source} | - | - | - | - | not measured: {type(e).__name__}: "
                            f"{e} |")
                continue
        for label, keys in KEYSETS.items():
            walls, per_cpu, first = measure(cfg, keys, args.batch, args.seconds, args.repeats)
            runs = ", ".join(f"{w / args.cores:.0f}/{c:.0f}" for w, c in zip(walls, per_cpu))
            rows.append(f"| {source} | {label} | {cfg.num_frames}x{cfg.image_size} | "
                        f"{max(walls) / args.cores:.1f} | {max(per_cpu):.1f} | repeats "
                        f"(wall per core / per CPU-s): {runs}; first batch {first:.1f} s |")
    print(f"\n`{' '.join([os.path.basename(sys.executable)] + sys.argv)}` (pinned to CPUs "
          f"{cpus}, batch {args.batch}, best of {args.repeats} x {args.seconds:.0f} s; load "
          f"average before/after {load_before:.1f}/{os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs)\n")
    print("| records | keys | clip | clips/s per core (wall) | clips per CPU-second | notes |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
