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


def test_train_step_bench_profiles_ops(tmp_path):
    """--profile_top: per-op time from a profiler trace, labelled with the layer it belongs to."""
    import train_step

    results = train_step.main(["--presets", "tiny", "--configs", "baseline_rgb", "--steps",
                               "tiny=2", "--reps", "1", "--profile_top", "5"])
    prof = results[0]["profile"]
    kinds = prof["by_kind"]
    assert prof["op_ms_per_step"] > 0 and len(prof["top_ops"]) == 5
    assert sum(k["ms"] for k in kinds) == pytest.approx(prof["op_ms_per_step"], rel=1e-9)
    assert all(k["ms"] > 0 and k["calls"] > 0 for k in kinds)
    # The biggest op is no bigger than the sum of its kind; ops are sorted by time.
    top = prof["top_ops"]
    assert [o["ms"] for o in top] == sorted((o["ms"] for o in top), reverse=True)
    assert top[0]["ms"] <= max(k["ms"] for k in kinds) + 1e-9
    # Ops carry the JAX source op, so a dot is traceable to its layer; per-layer sums add up.
    assert any("TimeSformer" in o["source"] for o in top)
    assert any("blocks_*" in b["layer"] for b in prof["by_layer"])
    assert sum(b["ms"] for b in prof["by_layer"]) <= prof["op_ms_per_step"] * (1 + 1e-9)


def test_op_profile_summary_counts_only_module_instructions():
    import op_profile

    hlo = ("ENTRY %main {\n"
           '  %dot.1 = f32[4,4]{1,0} dot(%a, %b), metadata={op_name="jit(f)/blocks_0/qkv/dot"}\n'
           "  %fusion.2 = f32[4]{0} fusion(%dot.1), kind=kLoop\n"
           "  ROOT %fusion.3 = f32[4]{0} fusion(%fusion.2), kind=kLoop\n}")
    events = [("dot.1", 2.0), ("dot.1", 2.0), ("fusion.2", 1.0), ("fusion.3", 5.0),
              ("ThunkExecutor::Execute", 50.0), ("$python frame", 9.0)]
    prof = op_profile.summarise(events, hlo, steps=2, top=2)
    assert prof["op_ms_per_step"] == pytest.approx(5.0)
    assert prof["by_kind"] == [{"kind": "fusion", "ms": 3.0, "calls": 1.0},
                               {"kind": "dot", "ms": 2.0, "calls": 1.0}]
    assert prof["by_layer"] == [{"layer": "(no source)", "ms": 3.0},
                                {"layer": "blocks_*/qkv/dot", "ms": 2.0}]
    assert prof["top_ops"] == [{"op": "fusion.3", "ms": 2.5, "source": ""},
                               {"op": "dot.1", "ms": 2.0, "source": "jit(f)/blocks_0/qkv/dot"}]
