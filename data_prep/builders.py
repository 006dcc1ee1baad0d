"""What the input pipeline and the trainer call: `load(name, data_dir)` -> prepared TFDS builder.

Names are `<dataset>[/<config>]`: `something_synthetic/standard`, `something_synthetic/
compositional_tiny`, `something_synthetic/standard_n2000_v500_s3_px48_t16`,
`something_something_v2`, `something_else`, ... The synthetic dataset is built on first use; a
missing real dataset raises FileNotFoundError whose message is the command that builds it.
"""
import importlib
import importlib.util
import os
import shlex
import sys
import time

import tensorflow_datasets as tfds
from absl import logging

DATA_PREP_DIR = os.path.dirname(os.path.abspath(__file__))

# dataset name -> builder module (TFDS's `<name>/<name>_dataset_builder.py` folder convention).
BUILDER_MODULES = {
    name: f"data_prep.{name}.{name}_dataset_builder"
    for name in ("something_something_v2", "something_else", "something_synthetic",
                 "something_synthetic_images", "video_folder")
}
# Datasets generated from code alone: built on first `load`, no manual files needed.
GENERATED = ("something_synthetic", "something_synthetic_images")


def _split(name: str) -> tuple[str, str | None]:
    dataset, _, config = name.partition("/")
    if dataset not in BUILDER_MODULES:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(BUILDER_MODULES)}")
    return dataset, config or None


def builder_class(dataset: str) -> type[tfds.core.DatasetBuilder]:
    return importlib.import_module(BUILDER_MODULES[_split(dataset)[0]]).Builder


def make_builder(name: str, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
    """The builder for `name`, prepared or not."""
    dataset, config = _split(name)
    cls = builder_class(dataset)
    try:
        return cls(config=config, data_dir=data_dir)
    except ValueError:
        # A config built from a JSON dict (e.g. synthetic knobs: `..._k<digest>`) cannot be
        # rebuilt from its name alone, but once prepared its directory describes it fully.
        root = os.path.expanduser(data_dir or tfds.core.constants.get_default_data_dir())
        prepared = os.path.join(root, dataset, config or "", str(cls.VERSION))
        if config and os.path.exists(os.path.join(prepared, "dataset_info.json")):
            return tfds.builder_from_directory(prepared)
        raise


def _cli_prefix() -> str:
    # `tfds build` imports apache_beam at start-up (tensorflow-datasets 4.9.x, for an unrelated
    # subcommand); without it `python -m data_prep build` runs the very same build command.
    if importlib.util.find_spec("apache_beam") is not None:
        return "tfds build"
    return f"{shlex.quote(sys.executable)} -m data_prep build"


def build_command(name: str, data_dir: str | None = None, manual_dir: str | None = None) -> str:
    """The exact command line that builds `name` into `data_dir`."""
    dataset, config = _split(name)
    data_dir = data_dir or tfds.core.constants.get_default_data_dir()
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
    parts = [_cli_prefix(), shlex.quote(os.path.join(DATA_PREP_DIR, dataset))]
    if config:
        parts.append(f"--config={shlex.quote(config)}")
    if dataset not in GENERATED:
        manual_dir = manual_dir or os.path.join(data_dir, "downloads", "manual")
        parts.append(f"--manual_dir={shlex.quote(os.path.abspath(manual_dir))}")
    parts.append(f"--data_dir={shlex.quote(data_dir)}")
    return " ".join(parts)


def _prepare(builder: tfds.core.DatasetBuilder, name: str) -> tfds.core.DatasetBuilder:
    logging.info("%s is not built in %s yet: building it now", name, builder.data_dir_root)
    start = time.perf_counter()
    builder.download_and_prepare()
    logging.info("built %s in %.1f s (%s)", name, time.perf_counter() - start, builder.data_dir)
    return builder


def load(name: str, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
    """A prepared builder for `name` (see the module docstring); builds synthetic data if needed.

    Raises FileNotFoundError (message: the build command) for a real dataset not built yet.
    """
    builder = make_builder(name, data_dir)
    if builder.is_prepared():
        return builder
    if _split(name)[0] in GENERATED:
        return _prepare(builder, name)
    raise FileNotFoundError(build_command(name, data_dir))


def load_synthetic(config, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
    """Like `load` for a custom `SyntheticConfig` (e.g. changed knobs), built if needed."""
    builder = builder_class("something_synthetic")(config=config, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    return _prepare(builder, f"something_synthetic/{config.name}")
