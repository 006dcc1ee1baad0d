"""`python -m data_prep build <dataset dir> [tfds build flags]`: `tfds build` without apache_beam.

tensorflow-datasets 4.9.x's `tfds` entry point imports apache_beam at start-up for its
`convert_format` subcommand, even for `tfds build`. This runs TFDS's own `build` command
(`tensorflow_datasets.scripts.cli.build.Args`) with the same flags and log set-up, e.g.

    python -m data_prep build data_prep/something_synthetic --config=standard --data_dir=/data
"""
import sys

from absl import app
from absl import logging as absl_logging


def _parse(argv: list[str]):
    from tensorflow_datasets.scripts.cli import build, cli_utils

    if len(argv) < 2 or argv[1] != "build":
        sys.exit(f"usage: python -m data_prep build <dataset dir> [tfds build flags]\n{__doc__}")
    parse = cli_utils.make_flags_parser(build.Args, description="tfds build (no apache_beam)")
    return parse(argv[1:])


def main(args) -> None:
    absl_logging.set_verbosity(absl_logging.INFO)
    args.execute()


if __name__ == "__main__":
    app.run(main, flags_parser=_parse)
