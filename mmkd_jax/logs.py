"""Log set-up shared by the entry point and worker processes: a copy in the workdir, without the
per-array chatter of checkpoint and metric libraries."""
from __future__ import annotations

import logging as std_logging
import os

from absl import logging

# Libraries whose INFO lines (per-array checkpoint chatter) would drown the progress lines.
QUIET_PATHS = ("/orbax/", "/tensorstore/", "/clu/")


def _quiet(record) -> bool:
    return record.levelno >= std_logging.ERROR or not any(p in record.pathname
                                                      for p in QUIET_PATHS)


def log_to_file(workdir: str) -> std_logging.Handler:
    """Keeps a copy of the log in WORKDIR/log.txt (stderr stays as it is), without library
    noise on either; returns the file handler."""
    os.makedirs(workdir, exist_ok=True)
    handler = std_logging.FileHandler(os.path.join(workdir, "log.txt"))
    handler.setFormatter(std_logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.get_absl_logger().addHandler(handler)
    # absl's own stderr handler sits on the root logger.
    for h in logging.get_absl_logger().handlers + std_logging.getLogger().handlers:
        if _quiet not in h.filters:
            h.addFilter(_quiet)
    return handler
