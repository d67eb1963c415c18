"""Where ``retr_to(n, path)`` writes: a file this call owns until the message is complete.

A regular file (or a name that does not exist yet) is written through a temporary file
created beside it with ``O_EXCL`` and renamed over it only once the whole message is
written: a failure leaves the caller's file as it was and removes only the temporary file.
A symbolic link keeps pointing where it did (its target is replaced). Anything else that
already exists under that name (a FIFO, a device such as ``/dev/null``, a socket) is opened
and written as it is, and never removed. The temporary file needs write access to the
directory (PermissionError otherwise, the path untouched)."""

from __future__ import annotations

import errno
import os
import stat
from typing import Any, BinaryIO, Optional


class TargetFile:
    """A binary file for one message: :meth:`commit` after the last byte, :meth:`discard`
    on failure. Raises OSError as ``open()`` does."""

    def __init__(self, path: "os.PathLike[str] | str") -> None:
        target = os.path.realpath(path)  # a symlink keeps pointing to the file it names
        try:
            mode: Optional[int] = os.stat(target).st_mode
        except FileNotFoundError:
            mode = None
        self._temp: Optional[str] = None
        self._target = target
        if mode is not None and stat.S_ISFIFO(mode):
            # Opening a FIFO waits, without a timeout, for a reader: refuse at once instead.
            try:
                fd = os.open(target, os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
                raise OSError(errno.ENXIO, "no process is reading this FIFO; start the reader first", target) from None
            os.set_blocking(fd, True)
            self.file: BinaryIO = os.fdopen(fd, "wb")
            return
        if mode is not None and not stat.S_ISREG(mode):
            self.file = open(path, "wb")  # noqa: SIM115 - closed by commit/discard
            return
        folder, name = os.path.split(target)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
        while True:
            temp = os.path.join(folder, f".{name}.{os.urandom(6).hex()}.part")
            try:
                fd = os.open(temp, flags, 0o666)  # the umask applies, as with open()
                break
            except FileExistsError:
                continue
        self._temp = temp
        try:
            if mode is not None:
                os.chmod(fd, stat.S_IMODE(mode))  # the replaced file's permissions
            self.file = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            os.unlink(temp)
            raise

    def write(self, data: bytes) -> Any:
        return self.file.write(data)

    def commit(self) -> None:
        """The message is complete: put it in place."""
        self.file.close()
        if self._temp is not None:
            os.replace(self._temp, self._target)
            self._temp = None

    def discard(self) -> None:
        """The message is incomplete: remove what this call created, nothing else."""
        try:
            self.file.close()
        finally:
            if self._temp is not None:
                temp, self._temp = self._temp, None
                try:
                    os.unlink(temp)
                except FileNotFoundError:
                    pass
