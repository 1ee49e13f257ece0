"""The run folder: created safely, locked while a run uses it, cleaned of interrupted writes."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from contrastive.train.config import TrainError

__all__ = ["LOCK_NAME", "lock_run_folder", "remove_stale_temporaries"]

LOCK_NAME = ".lock"
#: the temporary files of atomic writes (``.NAME.tmp-PID``) that a killed run may leave behind
_TEMPORARY_GLOB = ".*.tmp-*"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _holder(lock: Path) -> tuple[str, int] | None:
    """``(host, pid)`` written in ``lock``, or None if it is unreadable."""
    try:
        host, _, pid = lock.read_text().strip().rpartition(":")
        return host, int(pid)
    except (OSError, ValueError):
        return None


def _prepare(out: Path) -> bool:
    """Create ``out`` if needed (returns whether it was created); a file or an uncreatable path raises."""
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {str(out)!r} is a file, not a folder; give a folder for the run")
    if out.is_dir():
        return False
    try:
        out.mkdir(parents=True)
    except OSError as exc:
        raise TrainError(f"--out {str(out)!r} cannot be created: {exc.strerror or exc}") from None
    return True


@contextlib.contextmanager
def lock_run_folder(out: Path) -> Iterator[None]:
    """Hold ``out/.lock`` (``host:pid``) for the block: a second run on ``out`` fails at once.

    A lock whose process is gone (same host, pid not alive: a killed run) is stale and
    taken over. The lock is removed on exit, and so is ``out`` if this call created it and
    nothing else was written.
    """
    created = _prepare(out)
    lock = out / LOCK_NAME
    me = f"{socket.gethostname()}:{os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            if holder is not None and (holder[0] != socket.gethostname() or _pid_alive(holder[1])):
                raise TrainError(
                    f"run folder {str(out)!r} is in use by process {holder[1]} on {holder[0]} "
                    f"({lock} exists); wait for it to finish or choose another --out"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        except OSError as exc:
            raise TrainError(f"--out {str(out)!r} is not writable: {exc.strerror or exc}") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(me + "\n")
        break
    else:  # pragma: no cover - another process took the stale lock between our two attempts
        raise TrainError(f"run folder {str(out)!r} was locked by another run just now; choose another --out")
    try:
        yield
    finally:
        if _holder(lock) == (socket.gethostname(), os.getpid()):
            lock.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if empty: a run that failed before writing anything


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete the ``.NAME.tmp-PID`` files interrupted atomic writes left in ``out``; returns them."""
    stale = sorted(out.glob(_TEMPORARY_GLOB))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
