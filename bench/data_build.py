"""Dataset build throughput: the process pool vs Apache Beam's DirectRunner, in videos/s.

    python bench/data_build.py --workers 2 --root /tmp/mmkd_data_bench

Builds `something_something_v2` (`--config`: DIS or TV-L1 flow where none is released) from
two manual dirs of real footage (OpenCV's tree.avi / vtest.avi, re-encoded to VP9 webm at 12 fps
like the SSv2 release), each twice, timing the whole command as a user runs it:
- pool: `python -m data_prep build ...` with $MMKD_DATA_WORKERS=<workers>;
- beam: `tfds build ... --beam_pipeline_options=runner=DirectRunner,direct_num_workers=<workers>,
  direct_running_mode=multi_processing` (needs `pip install -e ".[beam]"`).
Sets: `fixture` is the test suite's SSv2 manual dir (tests/fixtures_ssv2.py: 5 decodable videos
of 12-24 frames, one of each bad input); `clips<N>` is N SSv2-like videos of `--frames` frames at
320x240 (`--videos`, default 200) cut from the same footage, with labels and no released flow.
Prints a markdown table: wall time, videos written per second, and core-seconds per video
(wall x workers / videos, start-up included), the figure a cluster estimate scales from.
Run with idle cores: the workers compete with anything else on the machine.
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))  # the real-footage fixture writers

DATASET = os.path.join(ROOT, "data_prep", "something_something_v2")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default="/tmp/mmkd_data_bench", help="manual dirs and outputs")
    p.add_argument("--workers", type=int, default=2, help="pool processes = Beam workers")
    p.add_argument("--sets", default="fixture,clips", help="comma-separated: fixture, clips")
    p.add_argument("--videos", type=int, default=200, help="videos in the `clips` set")
    p.add_argument("--frames", type=int, default=45, help="frames per video in the `clips` set")
    p.add_argument("--paths", default="pool,beam", help="comma-separated: pool, beam")
    p.add_argument("--config", default="dis", help="builder config: the flow method, dis or tvl1")
    return p.parse_args()


def make_clips(manual: str, videos: int, frames: int) -> str:
    """SSv2-format manual dir of `videos` webm clips (320x240, `frames` frames at 12 fps)."""
    from fixtures_ssv2 import LABELS, H, W, footage, read_frames, write_json, write_webm

    if os.path.exists(os.path.join(manual, "labels", "train.json")):
        return manual  # made by an earlier run with the same arguments
    # SSv2's split files spell the labels' templates with bracketed placeholders.
    templates = [t.replace("something", "[something]") for t in LABELS]
    tree = read_frames(footage("tree.avi"), 0, 68)
    vtest = read_frames(footage("vtest.avi"), 0, 795, (W, H))
    folder = os.path.join(manual, "20bn-something-something-v2")
    os.makedirs(folder, exist_ok=True)
    train, validation = [], []
    for i in range(videos):
        # Alternate the two sources; vtest windows slide by 7 frames so no two clips are equal.
        source = tree if i % 2 else vtest
        start = (i * 7) % (len(source) - frames)
        write_webm(os.path.join(folder, f"{1000 + i}.webm"), source[start:start + frames])
        entry = {"id": str(1000 + i), "template": templates[i % len(templates)],
                 "label": "x", "placeholders": ["x"]}
        (validation if i % 10 == 0 else train).append(entry)
    write_json(os.path.join(manual, "labels", "labels.json"), LABELS)
    write_json(os.path.join(manual, "labels", "validation.json"), validation)
    write_json(os.path.join(manual, "labels", "train.json"), train)
    return manual


def manual_dir(name: str, args) -> str:
    from fixtures_ssv2 import make_manual_dir

    if name == "fixture":
        root = os.path.join(args.root, "fixture")
        if not os.path.isdir(os.path.join(root, "manual")):
            os.makedirs(root, exist_ok=True)
            make_manual_dir(root)
        return os.path.join(root, "manual")
    return make_clips(os.path.join(args.root, f"clips{args.videos}x{args.frames}"),
                      args.videos, args.frames)


def build(path: str, manual: str, out: str, workers: int, config: str
          ) -> tuple[float, dict, str]:
    """Runs one build as a user would; -> (wall seconds, build report, log)."""
    shutil.rmtree(out, ignore_errors=True)
    common = [DATASET, f"--config={config}", f"--manual_dir={manual}", f"--data_dir={out}"]
    if path == "pool":
        cmd = [sys.executable, "-m", "data_prep", "build", *common]
        env = dict(os.environ, MMKD_DATA_WORKERS=str(workers))
    else:
        tfds = os.path.join(os.path.dirname(sys.executable), "tfds")
        cmd = [tfds if os.path.exists(tfds) else "tfds", "build", *common,
               f"--beam_pipeline_options=runner=DirectRunner,direct_num_workers={workers},"
               "direct_running_mode=multi_processing"]
        env = dict(os.environ, MMKD_DATA_WORKERS="1")  # Beam's workers are the parallelism
    env["PYTHONPATH"] = ROOT
    t0 = time.perf_counter()
    run = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    if run.returncode:
        sys.exit(f"{path} build failed:\n{run.stdout[-4000:]}")
    (report,) = glob.glob(os.path.join(out, "*", "*", "*", "build_report.json"))
    return wall, json.load(open(report)), run.stdout


def main() -> None:
    args = parse_args()
    rows = []
    for name in args.sets.split(","):
        manual = manual_dir(name, args)
        for path in args.paths.split(","):
            out = os.path.join(args.root, "out", name, path)
            wall, report, log = build(path, manual, out, args.workers, args.config)
            written = sum(report["written"].values())
            label = name if name == "fixture" else f"clips {args.videos}x{args.frames}f"
            rows.append((label, path, written, wall))
            print(f"{label} / {path}: {written} videos written in {wall:.1f} s", flush=True)
            if path == "beam":  # the launcher's own summary line, for the record
                done = [line for line in log.splitlines() if " videos done in " in line]
                print("  " + (done[-1].split("] ")[-1] if done else "(no progress line)"))
    print(f"\n{args.config} flow, {args.workers} workers, {os.cpu_count()} CPUs\n")
    print("| set | path | videos | wall s | videos/s | core-s per video |")
    print("|---|---|---|---|---|---|")
    for label, path, n, wall in rows:
        print(f"| {label} | {path} | {n} | {wall:.1f} | {n / wall:.2f} | "
              f"{wall * args.workers / n:.2f} |")


if __name__ == "__main__":
    main()
