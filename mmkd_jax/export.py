"""Export a trained RGB model (the student) to a TF SavedModel or TFLite through `jax2tf`.

    python -m mmkd_jax.export --workdir=/tmp/mmkd/distill --format=saved_model --out=/tmp/student
    python -m mmkd_jax.export --checkpoint=DIR/checkpoints/14 --format=tflite \
        --out=/tmp/student.tflite

The exported function takes `video`: float32 (batch, T, S, S, 3) RGB pixels in [0, 255], i.e.
frames already sampled (segment midpoints), centre-cropped and resized as the model card
describes (`inference.Preprocessing.pixels`), and does /255 and the normalisation itself
(`--nonormalize_in_model`: the input is the normalised clip instead). It returns `logits` and
`probabilities` (batch, classes). The SavedModel has a polymorphic batch by default and is
serialised for CPU, CUDA and TPU; TFLite is exported at a fixed batch (default 1): the TFLite
converter cannot lower the gathers that a symbolic batch leaves in the model. A model card
(model_card.md / .json) and labels.txt are written next to the export, with the numbers of a
check of the exported model against the JAX model on a random clip.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import time

import jax
import numpy as np
from absl import app, flags, logging

FORMATS = ("saved_model", "tflite")
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")
# How old a StableHLO reader the export must suit (jax.export's own default is WEEK_4).
DEFAULT_STABLEHLO_COMPAT = "WEEK_12"


class _HloAtTarget:
    """jax.export's `hlo` module, except that every compatibility requirement means `target`."""

    def __init__(self, hlo, target: str):
        self._hlo, self._target = hlo, getattr(hlo.StablehloCompatibilityRequirement, target)

    def __getattr__(self, name: str):
        return getattr(self._hlo, name)

    def get_version_from_compatibility_requirement(self, _requirement):
        return self._hlo.get_version_from_compatibility_requirement(self._target)


@contextlib.contextmanager
def stablehlo_compat(target: str = DEFAULT_STABLEHLO_COMPAT):
    """Serialises the exported StableHLO for readers up to `target` old (WEEK_4/WEEK_12/MAX).

    jax2tf embeds the model as a StableHLO artifact that TF deserialises. JAX 0.10 writes it
    for readers at most 4 weeks older (StableHLO 1.15.0), but TF 2.21 reads up to 1.13.7 and
    rejects e.g. the `vhlo.composite_v2` that `lax.erf` (exact GELU) becomes: "failed to
    deserialize portable artifact". WEEK_12 (1.13.7 with JAX 0.10.2) is what it reads. JAX has
    no public option for this, so jax.export's serialiser is pointed at the older target for
    the duration of the export only.
    """
    from jax._src.export import _export as jax_export  # private: see the docstring

    original = getattr(jax_export, "hlo", None)
    if original is None or target == "WEEK_4":
        yield
        return
    jax_export.hlo = _HloAtTarget(original, target)
    try:
        yield
    finally:
        jax_export.hlo = original


@dataclasses.dataclass(frozen=True)
class ExportSpec:
    """What the exported function looks like."""

    batch_size: int | None  # None: polymorphic batch
    normalize_in_model: bool
    platforms: tuple[str, ...]
    stablehlo_target: str = DEFAULT_STABLEHLO_COMPAT
    # Polymorphic batch as a TF loop over a batch-1 model instead of a symbolic batch dim (the
    # fallback when TF cannot run the symbolic one, see `export`).
    batch_loop: bool = False

    def input_shape(self, model) -> tuple:
        p = model.preprocessing
        return (self.batch_size, p.num_frames, p.image_size, p.image_size,
                model.module.in_channels)


def serving_fn(model, normalize_in_model: bool):
    """(params, video) -> {"logits", "probabilities"}: the pure JAX function that is exported."""
    import jax.numpy as jnp

    pre = model.preprocessing
    mean = jnp.asarray(pre.mean[:3], jnp.float32)
    std = jnp.asarray(pre.std[:3], jnp.float32)

    def fn(params, video):
        x = video.astype(jnp.float32)
        if normalize_in_model:
            x = (x / 255.0 - mean) / std
        logits = model.apply(params, x).astype(jnp.float32)
        return {"logits": logits, "probabilities": jax.nn.softmax(logits, axis=-1)}

    return fn


def to_tf_module(model, spec: ExportSpec):
    """A tf.Module with the params as (non-trainable) variables and a `serve` tf.function."""
    import tensorflow as tf
    from jax.experimental import jax2tf

    shape = spec.input_shape(model)
    loop = spec.batch_size is None and spec.batch_loop
    poly = None
    if spec.batch_size is None and not loop:
        poly = "(b, " + ", ".join(str(d) for d in shape[1:]) + ")"
    converted = jax2tf.convert(serving_fn(model, spec.normalize_in_model),
                               polymorphic_shapes=[None, poly], with_gradient=False,
                               native_serialization_platforms=spec.platforms)
    module = tf.Module()
    # Variables rather than constants: a ViT-B/16 (0.5 GB) would not fit in one graph constant.
    module.params = tf.nest.map_structure(
        lambda a: tf.Variable(np.asarray(a), trainable=False), model.params)
    if loop:
        out_spec = {k: tf.TensorSpec([model.num_classes], tf.float32)
                    for k in ("logits", "probabilities")}
        one = lambda clip: {k: v[0] for k, v in converted(module.params, clip[None]).items()}
        serve = lambda video: tf.map_fn(one, video, fn_output_signature=out_spec)
    else:
        serve = lambda video: converted(module.params, video)
    module.serve = tf.function(serve, autograph=False,
                               input_signature=[tf.TensorSpec(shape, tf.float32, name="video")])
    return module


def _runs_symbolic_batch(model, out: str, spec: ExportSpec) -> bool:
    """False when TF cannot run the exported symbolic batch (see `export`)."""
    import tensorflow as tf

    try:
        saved_model_runner(out)(check_input(model, spec, 2))
    except tf.errors.InvalidArgumentError as e:
        if "dynamic shapes" in str(e):
            return False
        raise
    return True


def export_saved_model(model, out: str, spec: ExportSpec) -> None:
    import tensorflow as tf

    module = to_tf_module(model, spec)
    tf.saved_model.save(module, out, signatures={"serving_default": module.serve})


def export_tflite(model, out: str, spec: ExportSpec) -> None:
    import tensorflow as tf

    if spec.batch_size is None:
        raise ValueError("TFLite needs a fixed batch size (--batch_size=1): the converter cannot "
                         "lower the dynamic gathers of a polymorphic batch")
    spec = dataclasses.replace(spec, platforms=("cpu",))
    tmp = tempfile.mkdtemp(prefix="mmkd_tflite_")
    try:
        export_saved_model(model, tmp, spec)
        tflite = tf.lite.TFLiteConverter.from_saved_model(tmp).convert()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "wb") as f:
        f.write(tflite)


EXPORTERS = {"saved_model": export_saved_model, "tflite": export_tflite}


def saved_model_runner(path: str):
    """video (B, T, S, S, 3) -> {"logits", "probabilities"} NumPy, via the SavedModel."""
    import tensorflow as tf

    signature = tf.saved_model.load(path).signatures["serving_default"]
    return lambda video: {k: v.numpy() for k, v in signature(
        video=tf.constant(np.asarray(video, np.float32))).items()}


def tflite_runner(path: str):
    """video -> {"logits", "probabilities"} NumPy, via the TFLite interpreter (fixed batch)."""
    import warnings

    import tensorflow as tf

    with warnings.catch_warnings():  # tf.lite.Interpreter's LiteRT deprecation notice
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=path)
    runner = interpreter.get_signature_runner("serving_default")
    return lambda video: runner(video=np.asarray(video, np.float32))


RUNNERS = {"saved_model": saved_model_runner, "tflite": tflite_runner}


def check_input(model, spec: ExportSpec, batch: int, seed: int = 0) -> np.ndarray:
    """A random clip in the exported function's input range (pixels, or normalised)."""
    rng = np.random.default_rng(seed)
    shape = (batch,) + spec.input_shape(model)[1:]
    pixels = rng.uniform(0.0, 255.0, size=shape).astype(np.float32)
    return pixels if spec.normalize_in_model else model.preprocessing.normalize(pixels)


def verify(model, fmt: str, out: str, spec: ExportSpec) -> dict:
    """Runs the export and the JAX model on the same random clip; returns the differences."""
    batch = spec.batch_size or 2
    video = check_input(model, spec, batch)
    inputs = model.preprocessing.normalize(video) if spec.normalize_in_model else video
    reference = model.logits(inputs)
    exported = RUNNERS[fmt](out)(video)["logits"]
    return {"input": f"uniform random clip, batch {batch}, seed 0",
            "max_abs_logit_diff": float(np.abs(exported - reference).max()),
            "max_abs_logit": float(np.abs(reference).max()),
            "top1_agreement": float(np.mean(exported.argmax(-1) == reference.argmax(-1)))}


def card_paths(fmt: str, out: str) -> dict[str, str]:
    """Where the model card and the labels go: inside a SavedModel dir, next to a .tflite."""
    if fmt == "saved_model":
        base = os.path.join(out, "")
        return {"md": base + "model_card.md", "json": base + "model_card.json",
                "labels": base + "labels.txt"}
    stem = os.path.splitext(out)[0]
    return {"md": stem + ".model_card.md", "json": stem + ".model_card.json",
            "labels": stem + ".labels.txt"}


def model_card(model, fmt: str, out: str, spec: ExportSpec, check: dict | None,
               seconds: float) -> dict:
    import tensorflow as tf

    shape = ["batch" if d is None else d for d in spec.input_shape(model)]
    pre = model.preprocessing.describe()
    done_outside = ["sample T frames (frame_sampling)", "crop and resize (spatial)"]
    if spec.normalize_in_model:
        value = "RGB pixels in [0, 255] (float32), after the steps listed under `outside`"
        inside = [pre["scale"], f"(x - mean) / std, mean {pre['mean']}, std {pre['std']}"]
    else:
        value = "normalised RGB: (pixels / 255 - mean) / std"
        inside = []
        done_outside += [pre["scale"], "(x - mean) / std"]
    return {
        "name": model.source.get("experiment") or os.path.basename(model.source["path"]),
        "format": fmt, "path": os.path.abspath(out),
        "input": {"name": "video", "dtype": "float32", "shape": shape,
                  "layout": "(batch, frames, height, width, channels), RGB", "values": value},
        "outputs": {"logits": ["batch", model.num_classes],
                    "probabilities": ["batch", model.num_classes]},
        "preprocessing": {**pre, "outside": done_outside, "inside": inside,
                          "python": "mmkd_jax.inference.Preprocessing("
                                    f"{pre['num_frames']}, {pre['image_size']}).pixels(frames)"},
        "labels": list(model.label_names),
        "source": {k: v for k, v in model.source.items() if k != "metrics"},
        "accuracy": model.accuracy(),
        "model": (model.config or {}).get("model"),
        "export": {"batch": spec.batch_size or ("polymorphic (a loop over batch-1 calls)"
                                                if spec.batch_loop else "polymorphic"),
                   "platforms": list(spec.platforms) if fmt == "saved_model" else ["tflite"],
                   "jax": jax.__version__, "tensorflow": tf.__version__,
                   "stablehlo_compat": spec.stablehlo_target,
                   "seconds": round(seconds, 1)},
        "check_vs_jax": check,
    }


def card_markdown(card: dict) -> str:
    acc = card["accuracy"]
    if acc:
        teacher = acc.get("teacher")
        acc_text = (f"top-1 {acc['top1']:.2f}%"
                    + (f", top-5 {acc['top5']:.2f}%" if acc.get("top5") is not None else "")
                    + (f" on {acc['dataset']} / {acc['split']}" if acc.get("dataset") else "")
                    + (f" ({acc['num_examples']} clips, {acc['protocol']})"
                       if acc.get("protocol") else "")
                    + f"; from {acc['source']}"
                    + (f". Its teacher: top-1 {teacher['top1']:.2f}%" if teacher else ""))
    else:
        acc_text = "not known (no results.json next to the checkpoint, no saved metrics)"
    pre, src, inp = card["preprocessing"], card["source"], card["input"]
    check = card["check_vs_jax"]
    lines = [
        f"# {card['name']} ({card['format']})", "",
        f"- **Source**: {src.get('kind')} `{src.get('path')}`"
        + (f", step {src['step']}" if src.get("step") is not None else "")
        + (f", dataset `{src['dataset']}`" if src.get("dataset") else ""),
        f"- **Accuracy**: {acc_text}",
        f"- **Input** `{inp['name']}`: {inp['dtype']} {tuple(inp['shape'])} {inp['layout']}; "
        f"{inp['values']}",
        f"- **Outputs**: `logits` and `probabilities` {tuple(card['outputs']['logits'])}",
        "- **Preprocessing** (the eval pipeline's):",
        f"  - frames: {pre['num_frames']}, {pre['frame_sampling']}",
        f"  - spatial: {pre['spatial']}, S = {pre['image_size']}",
        f"  - done by the caller: {'; '.join(pre['outside'])} (`{pre['python']}`)",
        f"  - done inside the model: {'; '.join(pre['inside']) or 'nothing'}",
        f"- **Export**: batch {card['export']['batch']}, platforms "
        f"{', '.join(card['export']['platforms'])}, jax {card['export']['jax']}, "
        f"tensorflow {card['export']['tensorflow']}",
    ]
    if check:
        lines.append(f"- **Check against JAX** ({check['input']}): max |logit difference| "
                     f"{check['max_abs_logit_diff']:.2e} (max |logit| "
                     f"{check['max_abs_logit']:.2f}), top-1 agreement "
                     f"{100 * check['top1_agreement']:.0f}%")
    lines += ["", f"## Labels ({len(card['labels'])})", ""]
    lines += [f"{i}. {name}" for i, name in enumerate(card["labels"])]
    return "\n".join(lines) + "\n"


def export(model, fmt: str, out: str, batch_size: int | None = None,
           normalize_in_model: bool = True, platforms=DEFAULT_PLATFORMS,
           check: bool = True, stablehlo_target: str = DEFAULT_STABLEHLO_COMPAT) -> dict:
    """Writes the export, its model card and labels; returns the card (a dict).

    `batch_size`: None = the format's default (saved_model: polymorphic, tflite: 1), 0 =
    polymorphic, n > 0 = fixed. `stablehlo_target`: see `stablehlo_compat`.
    """
    if fmt not in EXPORTERS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")
    if batch_size is None:
        batch_size = 0 if fmt == "saved_model" else 1
    spec = ExportSpec(batch_size or None, normalize_in_model, tuple(platforms), stablehlo_target)
    start = time.perf_counter()
    with stablehlo_compat(spec.stablehlo_target):
        EXPORTERS[fmt](model, out, spec)
        if fmt == "saved_model" and spec.batch_size is None and not _runs_symbolic_batch(
                model, out, spec):
            # TF 2.21 does not refine shapes inside StableHLO composites (e.g. `lax.erf`'s):
            # with a symbolic batch they stay dynamic and XlaCallModule refuses to run.
            logging.warning("TF cannot run %s with a symbolic batch dimension; exporting it "
                            "as a loop over a batch-1 model instead.", out)
            spec = dataclasses.replace(spec, batch_loop=True)
            shutil.rmtree(out)
            EXPORTERS[fmt](model, out, spec)
    seconds = time.perf_counter() - start
    result = verify(model, fmt, out, spec) if check else None
    card = model_card(model, fmt, out, spec, result, seconds)
    paths = card_paths(fmt, out)
    with open(paths["json"], "w") as f:
        json.dump(card, f, indent=2)
    with open(paths["md"], "w") as f:
        f.write(card_markdown(card))
    with open(paths["labels"], "w") as f:
        f.write("\n".join(card["labels"]) + "\n")
    return card


def define_flags() -> dict[str, flags.FlagHolder]:
    from mmkd_jax import predict

    return {
        **predict.model_flags(),
        "format": flags.DEFINE_enum("format", "saved_model", FORMATS, "What to write."),
        "out": flags.DEFINE_string("out", None, "Output: a directory (saved_model) or a "
                                   ".tflite file."),
        "batch_size": flags.DEFINE_integer("batch_size", None, "Fixed batch size; 0 = "
                                           "polymorphic (default for saved_model); TFLite "
                                           "needs a fixed one (default 1)."),
        "normalize_in_model": flags.DEFINE_bool("normalize_in_model", True, "Include /255 and "
                                                "the mean/std normalisation in the model."),
        "platforms": flags.DEFINE_list("platforms", list(DEFAULT_PLATFORMS), "saved_model: "
                                       "platforms to serialise for (cpu, cuda, rocm, tpu)."),
        "stablehlo_compat": flags.DEFINE_enum(
            "stablehlo_compat", DEFAULT_STABLEHLO_COMPAT, ["WEEK_4", "WEEK_12", "MAX"],
            "Oldest StableHLO reader the export must suit (TF 2.21 needs WEEK_12)."),
    }


def main(argv: list[str], f: dict[str, flags.FlagHolder]) -> None:
    from mmkd_jax import predict

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not f["out"].value:
        raise app.UsageError("--out is required")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.ERROR)  # orbax / TF chatter
    model = predict.load_from_flags(f)
    card = export(model, f["format"].value, f["out"].value, f["batch_size"].value,
                  f["normalize_in_model"].value, f["platforms"].value,
                  stablehlo_target=f["stablehlo_compat"].value)
    check = card["check_vs_jax"]
    print(f"wrote {card['format']} {card['path']} ({card['export']['seconds']} s, batch "
          f"{card['export']['batch']}); max |logit - JAX| {check['max_abs_logit_diff']:.2e}; "
          f"model card {card_paths(card['format'], card['path'])['md']}")


def run() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    f = define_flags()
    app.run(lambda argv: main(argv, f))


if __name__ == "__main__":
    run()
