"""bench/train_step.py at CI size: the trainer's step built from the configs, timed, as JSON."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "bench"))


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    import train_step

    path = tmp_path_factory.mktemp("bench") / "step.json"
    train_step.main(["--presets", "tiny", "--configs", "baseline_rgb,distill", "--steps",
                     "tiny=1", "--reps", "2", "--json", str(path)])
    with open(path) as f:
        return {r["config"]: r for r in json.load(f)["results"]}


def test_train_step_bench_reports_both_steps(tiny_results):
    base, distill = tiny_results["baseline_rgb"], tiny_results["distill"]
    for r in (base, distill):
        assert r["preset"] == "tiny" and r["batch"] == 8  # the tiny config's batch
        assert len(r["step_s_all"]) == 2 and r["step_s"] > 0 and r["compile_s"] > 0
        assert r["clips_per_s"] == pytest.approx(8 / r["step_s"], rel=1e-12)
        assert r["flops_per_step"] > 0 and r["gflops_per_s"] > 0
        assert r["xla_step_bytes"] > 0 and r["final_loss"] > 0
    # The baseline has no teacher; the distillation step runs three frozen members on top of
    # the same student step, so it costs strictly more FLOPs.
    assert base["members"] == [] and base["teacher_params"] == 0
    assert distill["members"] == ["rgb", "flow", "layout"] and distill["teacher_params"] > 0
    assert distill["params"] == base["params"]
    assert distill["flops_per_step"] > 1.2 * base["flops_per_step"]
