"""Reading a file the user named, without hanging, without reading forever, with a one-line error.

Every file the library reads on the user's behalf (scenario, thresholds, manifest, journal) goes
through :func:`read_user_text`. A path can name a named pipe (``open`` would block until a writer
appears), a device (``/dev/zero`` never ends), a directory or a huge data file. So the path is
``stat``-ed before it is opened, opened with ``O_NONBLOCK`` (a FIFO swapped in after the check
cannot block the open), ``fstat``-ed again on the open descriptor (the file actually read is the
one checked), and read up to ``max_bytes + 1`` bytes only.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .errors import InputError

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_user_text(
    path: str | Path,
    what: str,
    max_bytes: int,
    error: type[InputError] = InputError,
) -> str:
    """The UTF-8 text of the regular file ``path`` (at most ``max_bytes``), else ``error``.

    ``what`` names the file in messages ("scenario file", "manifest"); ``error`` is the caller's
    own :class:`~sim.errors.InputError` subclass, so its CLI exit code and message prefix stay
    the caller's. Messages are one line: ``<path>: <reason>``.
    """
    path = Path(path)
    try:
        before = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except OSError as err:
        raise error(f"{path}: cannot read: {err.strerror or err}") from None
    if not stat.S_ISREG(before.st_mode):
        raise error(_not_regular(path, before.st_mode, what, max_bytes))
    if before.st_size > max_bytes:
        raise error(f"{path}: the file is larger than the limit of {max_bytes} bytes")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        if err.errno == errno.ENOENT:
            raise error(f"{path}: no such {what}") from None
        raise error(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        after = os.fstat(fd)
        if not stat.S_ISREG(after.st_mode):  # replaced between stat and open
            raise error(_not_regular(path, after.st_mode, what, max_bytes))
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as err:
        raise error(f"{path}: cannot read: {err.strerror or err}") from None
    finally:
        os.close(fd)
    if size > max_bytes:
        raise error(f"{path}: the file is larger than the limit of {max_bytes} bytes")
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(f"{path}: cannot read: not UTF-8 text ({err.reason} at byte {err.start})") from None


def _not_regular(path: Path, mode: int, what: str, max_bytes: int) -> str:
    return f"{path}: cannot read: {_kind(mode)}; a {what} must be a regular file (size limit of {max_bytes} bytes)"
