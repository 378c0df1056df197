"""Every file dalle-kit writes goes through here (no torch: the CLI's fast paths use it too).

- `atomic_write_bytes`, `atomic_write_text`, `atomic_write`: the new content goes to a temporary name beside the
  target (``.<name>.tmp-<pid>``, created exclusively, so never through a link), is synced, then renamed over the
  target and the folder synced: a reader (or a machine that loses power) sees the old file or the new one.
- `append_text` (a log such as metrics.jsonl) and `open_in_place` (the ``.lock`` file) open the file itself without
  following a link.

A target that is a symbolic link, or exists but is not a regular file (a FIFO, a device node, a folder), or a
file other names are hard-linked to (for what is written in place), is refused before anything is written:
`WriteRefused`, one line naming the path. A write that fails (no space left, a file-size limit, a read-only file
system, no permission) is `WriteFailed`: one line naming the path, the bytes it needed and the fix. Either way
the temporary file is removed, and the target is what it was.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from .errors import UserError

#: Temporary names of interrupted writes: ``.<name>.tmp-<pid>`` (a file, or for `atomic_write` a folder).
TEMP_SUFFIX = ".tmp-"
TEMP_RE = re.compile(r"^\..+\.tmp-(\d+)$")


class WriteRefused(UserError):
    """A path dalle-kit will not write: a link, something other than a regular file, or under a file."""


class WriteFailed(UserError):
    """A write the operating system refused: no space, a file-size limit, a read-only file system, permissions."""

    def __init__(self, path: str | Path, exc: OSError, needed: int | None = None):
        self.path, self.errno, self.needed = Path(path), exc.errno, needed
        super().__init__(_failure_line(Path(path), exc, needed))


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n:,} bytes ({n / scale:.1f} {unit})"
    return f"{n:,} bytes"


def _free_bytes(path: Path) -> int | None:
    for folder in (path.parent, *path.parent.parents):
        try:
            st = os.statvfs(folder)
        except OSError:
            continue
        return st.f_bavail * st.f_frsize
    return None


def _failure_line(path: Path, exc: OSError, needed: int | None) -> str:
    code = exc.errno
    need = f"it needs {_size(needed)}" if needed is not None else ""
    if code in (errno.ENOSPC, errno.EDQUOT):
        free = _free_bytes(path)
        room = f"{need}, {_size(free)} free there" if need and free is not None else need
        what = "no space left on the device" if code == errno.ENOSPC else "disk quota exceeded"
        return f"{path}: cannot write: {what}" + (f" ({room})" if room else "") + "; free some space and try again"
    if code == errno.EFBIG:
        return (
            f"{path}: cannot write: file too large for this process's file-size limit or the file system"
            + (f" ({need})" if need else "")
            + "; raise the limit (ulimit -f unlimited) or write elsewhere"
        )
    if code == errno.EROFS:
        return f"{path}: cannot write: read-only file system; write to another folder"
    if code in (errno.EACCES, errno.EPERM):
        return f"{path}: cannot write: permission denied; write to a folder you own, or fix its permissions"
    reason = exc.strerror or type(exc).__name__
    return f"{path}: cannot write: {reason}" + (f" ({need})" if need else "") + "; check the path and the disk"


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _refuse(path: Path, mode: int) -> WriteRefused:
    if stat.S_ISLNK(mode):
        return WriteRefused(
            f"{path}: is a symbolic link; dalle-kit never writes through a link: remove the link or name another file"
        )
    return WriteRefused(
        f"{path}: is {_kind(mode)}, not a regular file; dalle-kit will not replace it: name another file"
    )


def check_target(path: str | Path) -> Path:
    """Refuse (`WriteRefused`, one line) a target that is a link or an existing non-regular file, or whose folder
    cannot exist because a file stands in its way (`WriteFailed`: its folder is on a read-only disk or not ours to
    write); call it before the work whose result goes there."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        st = None
    except OSError as exc:
        raise WriteFailed(path, exc) from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise _refuse(path, st.st_mode)
    for folder in path.parents:
        try:
            st = os.stat(folder)  # folders above may be links (runs/ on another disk)
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            continue
        except OSError as exc:
            raise WriteFailed(path, exc) from None
        if not stat.S_ISDIR(st.st_mode):
            raise WriteRefused(f"{path}: {folder} is a file, not a folder; name a path inside a folder")
        if not os.access(folder, os.W_OK):  # a read-only disk (even for root) or a folder of someone else's
            code = errno.EROFS if os.statvfs(folder).f_flag & os.ST_RDONLY else errno.EACCES
            raise WriteFailed(path, OSError(code, os.strerror(code))) from None
        break
    return path


def make_folder(path: str | Path) -> Path:
    """``mkdir -p`` with its failures (a file in the way, no space, no permission) as one line."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (*reversed(path.parents), path) if p.exists() and not p.is_dir()), path)
        if blocker == path:
            raise WriteRefused(f"{path}: is a file, not a folder; name a folder (it is made if missing)") from None
        raise WriteRefused(f"{path}: {blocker} is a file, not a folder; name a path inside a folder") from None
    except OSError as exc:
        raise WriteFailed(path, exc) from None
    return path


def _commit(tmp: Path, path: Path) -> None:
    """Rename the finished temporary `tmp` over `path` (checked again: nothing became a link meanwhile)."""
    check_target(path)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # a platform without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{TEMP_SUFFIX}{os.getpid()}")


def _create_exclusive(tmp: Path) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(tmp, flags, 0o644)
    except FileExistsError:  # left by an earlier process that had this pid: it is ours to replace
        _remove(tmp)
        return os.open(tmp, flags, 0o644)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def atomic_write_bytes(path: str | Path, data: bytes | bytearray | memoryview) -> Path:
    """Replace `path` with `data` atomically and durably (see the module docstring)."""
    path = check_target(path)
    make_folder(path.parent)
    tmp = temp_name(path)
    view = memoryview(data).cast("B")
    try:
        try:
            fd = _create_exclusive(tmp)
            try:
                written = 0
                while written < len(view):
                    written += os.write(fd, view[written : written + (1 << 24)])
                os.fsync(fd)
            finally:
                os.close(fd)
            _commit(tmp, path)
        except OSError as exc:
            raise WriteFailed(path, exc, len(view)) from None
    finally:
        _remove(tmp)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Replace `path` with `text` (UTF-8) atomically and durably."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` for a file in a private temporary folder beside `path` (``.<name>.tmp-<pid>/<name>``),
    then sync it and rename it over `path`. For writers that need a file name (a memory map, a library that saves
    by name); a library that makes its own temporary file makes it in that folder, so whatever a killed writer
    leaves is under one name that `remove_stale_temporaries` finds. Bytes in memory: use `atomic_write_bytes`."""
    path = check_target(path)
    make_folder(path.parent)
    folder = temp_name(path)
    tmp = folder / path.name
    try:
        try:
            _remove(folder)
            folder.mkdir()
            write(tmp)
            st = os.lstat(tmp)
            if not stat.S_ISREG(st.st_mode):
                raise _refuse(tmp, st.st_mode)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            _commit(tmp, path)
        except OSError as exc:
            raise WriteFailed(path, exc, _written(tmp)) from None
        except UserError:
            raise
        except Exception as exc:  # a library's own error around a failed write (safetensors: "... (os error 28)")
            code = _os_error_in(exc)
            if code is None:
                raise
            raise WriteFailed(path, OSError(code, os.strerror(code)), _written(tmp)) from None
    finally:
        _remove(folder)
    return path


def _written(tmp: Path) -> int | None:
    try:
        return tmp.stat().st_size or None
    except OSError:
        return None


def _os_error_in(exc: BaseException) -> int | None:
    """The errno a library names in its message ('(os error 28)', '[Errno 28]'), else None."""
    m = re.search(r"os error (\d+)|\[Errno (\d+)\]", str(exc))
    return int(m.group(1) or m.group(2)) if m else None


def open_in_place(path: str | Path, flags: int = os.O_RDWR | os.O_CREAT) -> int:
    """A descriptor of the regular file `path` (created if absent), opened without following a link; a link, a
    non-regular file or a file with other hard links is refused in one line (it would be changed through them)."""
    path = Path(path)
    try:
        fd = os.open(
            path,
            flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0),
            0o644,
        )
    except OSError as exc:
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            mode = None
        if mode is not None and not stat.S_ISREG(mode):  # a link (ELOOP), a folder (EISDIR), a FIFO (ENXIO)...
            raise _refuse(path, mode) from None
        raise WriteFailed(path, exc) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        os.close(fd)
        if st.st_nlink > 1 and stat.S_ISREG(st.st_mode):
            raise WriteRefused(
                f"{path}: has {st.st_nlink - 1} other hard link(s); dalle-kit writes it in place and would "
                f"change them too: replace it with a copy (cp {path} {path}.copy && mv {path}.copy {path})"
            )
        raise _refuse(path, st.st_mode)
    return fd


def append_text(path: str | Path, text: str) -> None:
    """Append `text` to the regular file `path` (created if absent), never through a link (see `open_in_place`)."""
    path = Path(path)
    data = text.encode("utf-8")
    fd = open_in_place(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
    except OSError as exc:
        raise WriteFailed(path, exc, len(data)) from None
    finally:
        os.close(fd)


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporaries in `directory` left by writes whose process is gone (`TEMP_RE`: files, or
    `atomic_write`'s folders; another live process's are left alone); returns them."""
    removed: list[Path] = []
    directory = Path(directory)
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = TEMP_RE.match(p.name)
        if not m or p.is_symlink() or not (p.is_file() or p.is_dir()):
            continue
        pid = int(m.group(1))
        if pid != os.getpid() and _alive(pid):
            continue  # another process is writing it now
        _remove(p)
        removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True
