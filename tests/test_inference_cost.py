"""bench/inference_cost.py: settings equal the configs, and the numbers it reports add up."""
import json
import os
import subprocess
import sys

import fixtures_deploy as fx
import pytest

sys.path.insert(0, str(fx.REPO / "bench"))
import inference_cost  # noqa: E402

# Fields of configs/baseline_*.py that the benchmark's model configs must repeat.
ARCH = ("name", "variant", "hidden_size", "depth", "num_heads", "mlp_dim", "patch_size",
        "image_size", "num_frames", "in_channels", "spatial_layers", "temporal_layers")


@pytest.mark.parametrize("setting, preset", [("paper", "ssv2"), ("synthetic", "synthetic")])
def test_settings_equal_the_configs(setting, preset):
    from configs import baseline_flow, baseline_layout, baseline_rgb

    bench = inference_cost.model_configs(inference_cost.SETTINGS[setting])
    for member, module in (("rgb", baseline_rgb), ("flow", baseline_flow),
                           ("layout", baseline_layout)):
        config = module.get_config(preset)
        ours = {k: v for k, v in inference_cost.arch_fields(bench[member]).items() if k in ARCH}
        theirs = {k: v for k, v in config.model.to_dict().items() if k in ARCH}
        assert ours == theirs, member
        assert config.data.image_size == inference_cost.SETTINGS[setting]["image_size"]


def matmul_flops(d, depth, mlp, p, s, t, c, classes) -> int:
    """2 x multiply-adds of every matrix product of a divided space-time TimeSformer."""
    n = (s // p) ** 2
    flops = 2 * t * n * p * p * c * d + 2 * d * classes
    for _ in range(depth):
        flops += 2 * n * t * d * 3 * d + 4 * n * t * t * d + 4 * n * t * d * d  # temporal
        flops += 2 * t * (n + 1) * d * 4 * d + 4 * t * (n + 1) ** 2 * d  # spatial
        flops += 4 * (1 + n * t) * d * mlp  # MLP
    return flops


def test_synthetic_run_reports_consistent_numbers(tmp_path):
    out = subprocess.run(
        [sys.executable, "bench/inference_cost.py", "--settings=synthetic", "--repeats=2",
         "--flow_repeats=1", "--flow_methods=farneback,dis", f"--out_dir={tmp_path}"],
        cwd=fx.REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, **fx.fast_compile_env()})
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.load(open(tmp_path / "inference_cost.json"))
    (result,) = doc["results"]
    m = result["models"]
    # Parameter counts of the tiny models (the trained tiny RGB run reports the same 35,310).
    assert (m["rgb"]["params"], m["flow"]["params"], m["layout"]["params"]) == (
        35310, 33262, 107342)
    assert m["teacher"]["params"] == sum(m[k]["params"] for k in ("rgb", "flow", "layout"))
    # XLA's count = the matrix products plus element-wise work (norms, softmax, GELU).
    for key, channels in (("rgb", 3), ("flow", 2)):
        ratio = m[key]["flops"] / matmul_flops(32, 2, 64, 8, 32, 8, channels, 14)
        assert 1.0 < ratio < 1.3, (key, ratio)
    member_flops = sum(m[k]["flops"] for k in ("rgb", "flow", "layout"))
    assert m["teacher"]["flops"] == pytest.approx(member_flops, rel=1e-3)
    for key in ("rgb", "flow", "layout", "teacher"):
        assert m[key]["memory_bytes"] >= 4 * m[key]["params"]  # float32 params at least
        assert len(m[key]["times_s"]) == 2 and m[key]["latency_s"] > 0 and m[key]["cpu_s"] > 0
    assert [f["method"] for f in result["flow"]] == ["farneback", "dis"]
    assert all(f["latency_s"] > 0 and f["pairs"] == 8 for f in result["flow"])
    text = (tmp_path / "inference_cost.md").read_text()
    assert "| **student** (RGB TimeSformer) | 35,310 |" in text
    assert "object detector is not included" in text
    assert text.count("**teacher total**") == 2
    png = (tmp_path / "inference_cost.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
