"""TFDS builder folder for `tfds build data_prep/something_synthetic_images`."""
import importlib.util
import os
import sys

# The tfds CLI imports this package with only data_prep/ on sys.path; add the repository root so
# the builder can import `data_prep` and `mmkd_jax` without `pip install -e .`.
if importlib.util.find_spec("data_prep") is None:
    sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
