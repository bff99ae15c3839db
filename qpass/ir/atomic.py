"""Atomic file output: write to a temporary file (or folder) beside the target, then rename it into place.

Outputs get the permissions of an ordinary file (``0666 & ~umask``; folders ``0777 & ~umask``), never the 0600 /
0700 of a temporary file. A target that exists and is not a regular file (a directory, device, FIFO or socket) is
refused and never replaced; every operating-system failure (read-only folder, a path through a file, a name too
long, a missing parent that cannot be made) becomes one ``OutputError`` line naming the path.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

from qpass.errors import QpassError


class OutputError(QpassError):
    """An output path cannot be written."""


def current_umask() -> int:
    """The process umask (read from /proc where possible, so no other thread sees a changed umask)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def check_output_file(target: str | os.PathLike) -> Path:
    """Refuse an output path that exists and is not a regular file (or a link to one)."""
    target = Path(target)
    try:
        st = target.stat()
    except FileNotFoundError:
        return target
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {_os_reason(exc)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"cannot write {target}: it is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"cannot write {target}: it exists and is not a regular file (a device, FIFO or socket)")
    return target


def _make_parent(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {_os_reason(exc)} ({target.parent})") from None


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path in the target's folder; move it onto ``target`` only on success."""
    target = check_output_file(target)
    _make_parent(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:200]}.", suffix=suffix + ".tmp", dir=target.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {_os_reason(exc)}") from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        check_output_file(target)  # nothing may have appeared there meanwhile that we must not replace
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise OutputError(f"cannot write {target}: {_os_reason(exc)}") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike):
    """Yield a temporary folder beside ``target``; on success it becomes ``target`` (which must be absent or an
    empty folder). Folders and files inside get ordinary permissions."""
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise OutputError(f"output folder {target} exists and is not empty")
    _make_parent(target)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name[:200]}.", dir=target.parent))
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {_os_reason(exc)}") from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())
        if target.exists():
            target.rmdir()  # empty (checked above)
        os.replace(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"cannot write {target}: {_os_reason(exc)}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))
