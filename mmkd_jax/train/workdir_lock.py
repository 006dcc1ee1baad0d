"""One run per workdir: WORKDIR/run.lock, held with flock(2) for the life of the run.

The file names its holder (host, pid, start time, command), so a second run refuses at once and
says who is busy there. The kernel drops a flock when its process dies, however it dies
(`kill -9`, a crash, a lost VM): a lock file nobody holds is stale, and the next run takes it
over with a warning. A run removes the file when it ends.

Under multi-host, process 0 alone holds the lock of a workdir (every process writes through the
same shared path, but one holder is enough to keep other runs out), and tells the others with a
broadcast, so that all processes of a refused run stop together instead of waiting for process 0
at the first collective.
"""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import sys

from absl import logging

LOCK_FILE = "run.lock"


class WorkdirBusyError(RuntimeError):
    """Another live run holds this workdir's lock; the message names it."""


_held: dict[str, list] = {}  # lock path -> [fd, holds]: re-entrant within one process


def _describe(info: dict) -> str:
    if not info:
        return "holder unknown"
    return (f"host {info.get('host')}, pid {info.get('pid')}, started {info.get('started')}"
            + (f", command: {info['command']}" if info.get("command") else ""))


def _read(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    try:
        return json.loads(data.decode()) if data.strip() else {}
    except (ValueError, UnicodeDecodeError):
        return {"unreadable": data[:200].decode(errors="replace")}


def acquire(workdir: str) -> None:
    """Takes WORKDIR's lock for this process, or raises WorkdirBusyError naming its holder."""
    path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
    if path in _held:
        _held[path][1] += 1
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise WorkdirBusyError(
                f"{os.path.dirname(path)} is in use by another run ({_describe(holder)}); "
                "wait for it to end or stop it, or give this run another --workdir.") from None
        try:  # the holder may have removed the file between our open and our flock
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    previous = _read(fd)
    if previous:
        logging.warning("Taking over the stale lock %s: its run is gone (%s).", path,
                        _describe(previous))
    info = {"host": socket.gethostname(), "pid": os.getpid(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(info).encode())
    os.fsync(fd)
    _held[path] = [fd, 1]


def release(workdir: str) -> None:
    """Drops one hold of WORKDIR's lock; the last one removes the file."""
    path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
    entry = _held.get(path)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] == 0:
        del _held[path]
        try:
            os.remove(path)  # while still holding it: a waiting opener sees a new inode
        finally:
            os.close(entry[0])


def hold(workdir: str) -> None:
    """`acquire` on process 0; every process raises WorkdirBusyError when process 0 could not."""
    import jax

    error = None
    if jax.process_index() == 0:
        try:
            acquire(workdir)
        except WorkdirBusyError as e:
            error = str(e)
    if jax.process_count() > 1:
        import numpy as np
        from jax.experimental import multihost_utils

        busy = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
        if int(busy) and error is None:
            error = (f"{os.path.abspath(workdir)} is in use by another run (process 0 holds "
                     f"{LOCK_FILE} and names it).")
    if error:
        raise WorkdirBusyError(error)


def let_go(workdir: str) -> None:
    """The counterpart of `hold`."""
    import jax

    if jax.process_index() == 0:
        release(workdir)
