"""Reading and writing files from user paths without hanging, tearing or over-reading.

Every file steerlens reads from a path a user gives goes through :func:`read_regular_file`:
only a regular file is read (symlinks are followed; a FIFO, a device such as ``/dev/zero``, a
socket or a folder is refused, checked on the path and again on the opened descriptor with
``fstat``), it is opened non-blocking so a FIFO swapped in between cannot block, and never more
than ``max_bytes`` are read, even when the file grows while it is read.

Every file steerlens writes goes through :func:`write_atomic` / :func:`atomic_output`: the data
go to a fresh temporary file in the destination's folder (a unique name from
:func:`tempfile.mkstemp`, so two processes saving to one path never share it), are flushed and
fsynced, and replace the destination with :func:`os.replace`. A reader sees the old file or the
new one, never a mix; the temporary file is removed on any failure.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import threading
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Callable, Iterator

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB: far above any real vector or pairs file, far below a surprise

Fail = Callable[[str], Exception]
"""Turns a problem (``"it is a FIFO (named pipe), not a regular file; ..."``, ``"No such file or directory;
check the path."``), to be read after ``"cannot read <file>: "``, into the caller's error."""

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str | None:
    """What a file of this ``st_mode`` is (``"a FIFO (named pipe)"``), or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _not_regular(mode: int) -> str | None:
    """Why a file of this ``st_mode`` is refused for reading, or None for a regular file."""
    kind = _kind(mode)
    if kind is None:
        return None
    return f"it is {kind}, not a regular file; steerlens reads only regular files (symlinks to them are fine)."


def _existing_kind(path: str | os.PathLike[str]) -> str | None:
    """What ``path`` is if it exists and is not a regular file (symlinks followed), else None."""
    try:
        return _kind(os.stat(path).st_mode)
    except OSError:
        return None


def _os_problem(error: OSError) -> str:
    return f"{error.strerror or error}; check the path."


def _too_large(size: int | str, max_bytes: int) -> str:
    return f"it is {size} bytes, over the limit of {max_bytes}; pass max_bytes=... if it is trusted."


@contextmanager
def open_regular_file(path: str | os.PathLike[str], fail: Fail) -> Iterator[int]:
    """A read-only descriptor of ``path`` if it is a regular file, else ``fail(problem)`` is raised.

    The path is checked before opening (so a device is never opened) and the descriptor after
    (so a file swapped in between is caught); ``O_NONBLOCK`` keeps the open of a FIFO from
    waiting for a writer. The descriptor is closed when the block ends.

    Example:
        >>> with open_regular_file("v.safetensors", VectorFileError) as fd:
        ...     magic = os.read(fd, 4)
    """
    try:
        problem = _not_regular(os.stat(path).st_mode)
    except OSError as error:
        raise fail(_os_problem(error)) from None
    if problem:
        raise fail(problem)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        raise fail(_os_problem(error)) from None
    try:
        problem = _not_regular(os.fstat(fd).st_mode)
        if problem:
            raise fail(problem)
        yield fd
    finally:
        os.close(fd)


def read_regular_file(path: str | os.PathLike[str], max_bytes: int, fail: Fail) -> bytes:
    """All bytes of the regular file ``path``; refuses (``fail(problem)``) anything else or more than ``max_bytes``.

    At most ``max_bytes + 1`` bytes are ever read, so a file that lies about its size (or grows
    while it is read) cannot exhaust memory.

    Example:
        >>> read_regular_file("pairs.jsonl", 1 << 20, PairsFileError)
        b'{"positive": "I love it", "negative": "I hate it"}\\n'
    """
    with open_regular_file(path, fail) as fd:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            raise fail(_too_large(size, max_bytes))
        chunks, total = [], 0
        try:
            while total <= max_bytes:
                chunk = os.read(fd, min(max_bytes + 1 - total, 1 << 24))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
        except OSError as error:
            raise fail(_os_problem(error)) from None
        if total > max_bytes:
            raise fail(_too_large(f"more than {max_bytes}", max_bytes))
        return b"".join(chunks)


def read_prefix(path: str | os.PathLike[str], n: int, fail: Fail) -> bytes:
    """The first ``n`` bytes (fewer if the file is shorter) of the regular file ``path``.

    Example:
        >>> read_prefix("happy.gguf", 4, VectorFileError)
        b'GGUF'
    """
    with open_regular_file(path, fail) as fd:
        try:
            return os.read(fd, n)
        except OSError as error:
            raise fail(_os_problem(error)) from None


def output_path_problem(path: str | os.PathLike[str]) -> str | None:
    """Why a file cannot be written at ``path`` (checked before any work), or None.

    The path must not be a folder, and its folder must exist and accept a new file (tried with
    a temporary file, which also catches read-only file systems and a root user's quirks).

    Example:
        >>> output_path_problem("no-such-folder/v.safetensors")
        "the folder 'no-such-folder' does not exist; create it first (mkdir -p no-such-folder) or choose another path."
    """
    path = Path(path)
    kind = _existing_kind(path)
    if kind == "a folder":
        return f"{str(path)!r} is a folder; give the path of a file (inside it, for example)."
    if kind:
        return f"{str(path)!r} is {kind}, not a regular file; steerlens replaces only regular files."
    folder = path.parent
    if not folder.exists():
        return f"the folder {str(folder)!r} does not exist; create it first (mkdir -p {folder}) or choose another path."
    if not folder.is_dir():
        return f"{str(folder)!r} is not a folder, so {str(path)!r} cannot be created in it; choose another path."
    return _unwritable(folder)


def _unwritable(folder: Path) -> str | None:
    """Why a new file cannot be created in the existing ``folder`` (tried with a temporary file), or None."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".steerlens-probe.", suffix=".tmp", dir=folder)
    except OSError as error:
        return f"cannot write in the folder {str(folder)!r} ({error.strerror or error}); choose another path."
    os.close(fd)
    with suppress(OSError):
        os.unlink(probe)
    return None


def folder_problem(folder: str | os.PathLike[str]) -> str | None:
    """Why files cannot be written into ``folder`` (created if missing, as the demo does), or None.

    Example:
        >>> folder_problem("steerlens-demo") is None
        True
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        return f"{str(folder)!r} is a file, not a folder; give a folder for the outputs."
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        return f"{str(existing)!r} is not a folder, so {str(folder)!r} cannot be created; choose another path."
    return _unwritable(existing)


_umask_lock = threading.Lock()
_umask: int | None = None


def _current_umask() -> int:
    """The process umask, read once (from /proc when it can be, since os.umask() has to set it to read it)."""
    global _umask
    with _umask_lock:
        if _umask is None:
            try:
                with open("/proc/self/status", encoding="ascii", errors="replace") as status:
                    line = next(line for line in status if line.startswith("Umask:"))
                _umask = int(line.split()[1], 8)
            except (OSError, StopIteration, ValueError, IndexError):
                _umask = os.umask(0o022)
                os.umask(_umask)
        return _umask


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A fresh temporary path next to ``path``; written by the block, it replaces ``path`` when the block ends.

    For writers that open their file themselves (gguf's ``GGUFWriter``). The temporary file is
    fsynced and moved over ``path`` with :func:`os.replace` (atomic); on any exception it is
    removed and ``path`` is left as it was. The new file gets the usual permissions (0666 minus
    the umask), not :func:`tempfile.mkstemp`'s 0600.

    Example:
        >>> with atomic_output("happy.gguf") as tmp:
        ...     writer = gguf.GGUFWriter(tmp, "controlvector")
        ...     ...
    """
    path = Path(path)
    kind = _existing_kind(path)
    if kind:  # os.replace would put a file in place of a device node or fail on a folder
        code = errno.EISDIR if kind == "a folder" else errno.EINVAL
        raise OSError(code, f"it is {kind}, not a regular file; steerlens replaces only regular files", str(path))
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        os.close(fd)
        yield tmp
        fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise
    _sync_folder(path.parent)


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: readers and concurrent writers never see a torn file.

    Raises ``OSError`` (the destination untouched, no temporary file left) when it cannot.

    Example:
        >>> write_atomic("sweep.csv", frame.to_csv(index=False).encode())
    """
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)


def _sync_folder(folder: Path) -> None:
    """fsync the folder so the rename itself survives a power cut (POSIX only; best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = [
    "DEFAULT_MAX_BYTES",
    "atomic_output",
    "folder_problem",
    "open_regular_file",
    "output_path_problem",
    "read_prefix",
    "read_regular_file",
    "write_atomic",
]
