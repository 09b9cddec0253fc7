"""Writes that a crash, a kill or a full disk cannot tear.

Every file a run, an export or a command writes goes through here: the bytes go to a temporary
file in the destination's own folder (so the rename stays on one file system), are flushed and
fsync'ed, and only then renamed over the destination. A reader sees the old file or the new one,
never half of one. Temporary names start with ``.tmp-`` so a later run can recognise and remove
what a killed writer left behind. Files get the permissions any other output would get
(0666 less the umask), not the 0600 that ``tempfile`` gives.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

TMP_PREFIX = ".tmp-"


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it; set it straight back
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """Permissions a plain ``open``/``mkdir`` would give under the current umask."""
    return (0o777 if directory else 0o666) & ~_umask()


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside ``path`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``path`` for writers that insist on a file name (h5py, Keras);
    on a clean exit the file there is fsync'ed and renamed over ``path``.

    ``suffix`` keeps the extension a writer checks (Keras wants ``.weights.h5``). On an
    exception the temporary file is removed and ``path`` keeps its old content.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, default_mode())
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8",
                  newline: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path`` atomically.

    On an exception (a full disk, an interrupt) the temporary file is removed and ``path`` keeps
    its old content. ``mode`` is "w" or "wb".
    """
    binary = "b" in mode
    with atomic_path(path) as tmp:
        with open(tmp, "wb" if binary else "w", encoding=None if binary else encoding,
                  newline=None if binary else newline) as f:
            yield f


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the ``.tmp-*`` files a killed writer left in ``folder`` (not recursive).

    Only for a folder this process owns (a locked run folder): a live writer's temporary file
    would go too. Returns what was removed.
    """
    removed = []
    for item in Path(folder).glob(f"{TMP_PREFIX}*"):
        if item.is_file():
            with contextlib.suppress(OSError):
                item.unlink()
                removed.append(item)
    return removed


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """``Path.write_text``, atomically."""
    with atomic_output(path, "w", encoding=encoding) as f:
        f.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """``Path.write_bytes``, atomically."""
    with atomic_output(path, "wb") as f:
        f.write(data)


def disk_full(path: str | os.PathLike) -> OSError:
    """The one error a full disk gives (``<path>: No space left on device`` in the CLI)."""
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is a full disk, however the library wrapped it
    (h5py's OSError without errno, TensorFlow's ResourceExhaustedError)."""
    while exc is not None:
        if getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def make_private_dir_public(path: str | os.PathLike) -> None:
    """Give a ``tempfile.mkdtemp`` folder (mode 0700) and everything in it the umask's modes."""
    path = Path(path)
    os.chmod(path, default_mode(directory=True))
    for root, dirs, files in os.walk(path):
        for d in dirs:
            os.chmod(os.path.join(root, d), default_mode(directory=True))
        for f in files:
            os.chmod(os.path.join(root, f), default_mode())
