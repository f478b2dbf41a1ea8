"""Writing an output file so that a failure part way never leaves a broken one where a good one stood."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable

__all__ = ["replace_file"]


def replace_file(path: str, write: Callable[[str], None]) -> None:
    """Write ``path`` through ``write(temporary_path)``, then put the result in its place in one step.

    ``write`` fills a new file beside ``path`` (same directory, so the final :func:`os.replace` is a
    rename on one file system); only a complete file replaces ``path``. When ``write`` raises, or
    the process is interrupted (Ctrl-C), the temporary file is removed and ``path`` is untouched. The
    new file gets the mode of the file it replaces (else the usual one for new files, umask applied).
    """
    directory, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(directory, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(temporary, os.stat(path).st_mode & 0o7777)
        write(temporary)
        fd = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data is on disk before the name points at it
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
