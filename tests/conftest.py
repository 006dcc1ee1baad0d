"""Session-wide test environment: a private TFDS data dir and a shared XLA compilation cache.

Both are environment variables so that subprocesses (multi-device, multi-host, resume and CLI
tests) inherit them: the tiny synthetic dataset is built once per session, and identical
computations compiled by one test process are reused by the next.
"""
import os
import tempfile

_SESSION_DIR = tempfile.mkdtemp(prefix="mmkd_tests_")


def pytest_configure(config):
    # Never write test datasets into the user's own ~/tensorflow_datasets.
    os.environ["TFDS_DATA_DIR"] = os.path.join(_SESSION_DIR, "tensorflow_datasets")
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(_SESSION_DIR, "xla_cache"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
