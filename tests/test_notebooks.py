"""The Colab notebooks run top to bottom (nbclient, tiny settings); any cell error fails.

`MMKD_NOTEBOOK_TINY=1` shortens every training run to a few steps; the TFDS dir is the test
session's (conftest.py). The inference notebook classifies with the tiny trained RGB run of
fixtures_deploy, so it does not train its own, and overlays its attention rollout on the clip.
"""
import json

import fixtures_deploy as fx
import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

COLAB = fx.REPO / "colab"


def execute(name: str, env: dict, monkeypatch) -> "nbformat.NotebookNode":
    for key, value in {"MMKD_NOTEBOOK_TINY": "1", **fx.fast_compile_env(), **env}.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    nb = nbformat.read(COLAB / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(fx.REPO)}})
    client.execute()  # raises CellExecutionError naming the cell when one fails
    return nb


def outputs(nb) -> tuple[str, int]:
    """(all text output, number of images) of an executed notebook."""
    text, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text.append(out.get("text", ""))
            data = out.get("data", {})
            text.append(data.get("text/markdown", "") + data.get("text/plain", ""))
            images += "image/png" in data
    return "\n".join(text), images


def test_quickstart(tmp_path, monkeypatch):
    workdir = tmp_path / "distill"
    nb = execute("quickstart.ipynb", {"MMKD_NOTEBOOK_WORKDIR": str(workdir)}, monkeypatch)
    results = json.load(open(workdir / "results.json"))
    assert results["steps"] == 3 and [m["name"] for m in results["members"]] == [
        "rgb", "flow", "layout"]
    text, images = outputs(nb)
    assert "| teacher (logit average) |" in text and "| student (RGB only) |" in text
    assert f"| {results['final']['top1']:.1f} |" in text
    assert images == 3  # three clips, each frames / flow / boxes with both predictions


def test_inference(monkeypatch):
    workdir = fx.trained_rgb_workdir()
    nb = execute("inference.ipynb", {"MMKD_NOTEBOOK_CHECKPOINT": workdir}, monkeypatch)
    text, images = outputs(nb)
    ranks = [line for line in text.splitlines() if line[:3] in {f"{i}. " for i in range(1, 6)}]
    assert len(ranks) == 5 and images == 2  # top-5 plot, attention rollout overlay
    # The same answers as the library on the clip the notebook wrote.
    from mmkd_jax import attention, inference
    from mmkd_jax.data.video_io import read_video

    model = inference.load(workdir)
    frames = read_video("/tmp/mmkd_example_clip.mp4").frames
    clip = model.preprocessing(frames)[None]
    top = inference.top_k(model.logits(clip)[0], model.label_names)
    assert ranks == [f"{r}. {100 * t['probability']:6.2f}%  {t['label']}"
                     for r, t in enumerate(top, 1)]
    (shares,) = [line for line in text.splitlines() if line.startswith("relevance per frame")]
    per_frame = attention.attention_rollout(model.module, model.params, clip)[0].sum((1, 2))
    assert len(per_frame) == 8 and abs(per_frame.sum() - 1) < 1e-5
    assert shares.split(": ")[1] == " ".join(f"{100 * r:.1f}" for r in per_frame)
