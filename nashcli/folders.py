"""Folders nash writes: one writer at a time, and nothing deleted that nash did not make.

    FolderLock(folder)        an advisory lock held while a process writes `folder`
    check_owned(folder, ...)  refuse a folder that holds anything nash would not have written
    swap_in(built, target)    put a finished folder in place; the old one goes only afterwards
    fsync_folder(folder)      flush a built folder to disk before swapping it in

The lock is `fcntl.flock` on a hidden sibling file, `.<name>.lock`, holding the holder's pid: the
kernel releases it when the holder exits, however it exits (kill -9 included), so a crash never
leaves a folder locked (only, then, an empty lock file that the next writer reuses). The file sits
beside the folder, not inside it, because replacing the folder must not drop the lock.
"""

import fcntl
import os
import shutil
from pathlib import Path
from typing import Callable, Optional

from nashcli.errors import NashError


class FolderLock:
    """Exclusive, non-blocking: a second writer gets a NashError naming the holder's pid.

    with FolderLock(Path("runs/demo"), "run"):
        ...  # only this process writes runs/demo
    """

    def __init__(self, folder: Path, what: str):
        self.folder, self.what = Path(folder), what
        self.path = self.folder.parent / f".{self.folder.name}.lock"
        self._descriptor: Optional[int] = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while self._descriptor is None:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(descriptor)
                raise NashError(
                    f"{self.what} {self.folder} is being written by another nash process (pid {holder}): "
                    "wait for it to finish, stop it, or choose another name"
                ) from None
            if _same_file(descriptor, self.path):
                os.ftruncate(descriptor, 0)
                os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
                self._descriptor = descriptor
            else:
                os.close(descriptor)  # its holder deleted it as we opened it: take the new file

    def release(self) -> None:
        if self._descriptor is not None:
            self.path.unlink(missing_ok=True)  # while still held: see _same_file
            os.close(self._descriptor)  # closing the descriptor releases the flock
            self._descriptor = None

    def __enter__(self) -> "FolderLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _same_file(descriptor: int, path: Path) -> bool:
    """Whether `path` still names the locked file. A holder deletes its lock file before releasing
    it, so a lock taken on a file that is no longer at `path` guards nothing."""
    try:
        return os.stat(path).st_ino == os.fstat(descriptor).st_ino
    except FileNotFoundError:
        return False


def check_owned(folder: Path, is_nash_entry: Callable[[str], bool], what: str, fix: str) -> None:
    """NashError unless `folder` is missing, empty, or holds only entries nash writes there.

    A symlink is never nash's: replacing it would delete or move what it points at.
    """
    if folder.is_symlink():
        raise NashError(f"{folder} is a symbolic link, which nash does not replace: {fix}")
    if not folder.exists():
        return
    if not folder.is_dir():
        raise NashError(f"{folder} is a file, not a {what}: {fix}")
    foreign = sorted(entry.name for entry in folder.iterdir() if not is_nash_entry(entry.name))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise NashError(f"{folder} holds {shown}, which nash did not write, so it is not a {what} to replace: {fix}")


def swap_in(built: Path, target: Path, aside: Optional[Path] = None) -> None:
    """Rename the finished folder `built` to `target`. An existing `target` is renamed `aside`
    first and deleted only once `built` is in place, so a failure at any point leaves one of them
    whole (a leftover `aside` with no `target` is the valid one, and is put back first). The caller
    has checked that `target` is nash's (check_owned) and holds its lock."""
    aside = aside or target.parent / f".{target.name}.old-{os.getpid()}"
    if not target.exists() and aside.is_dir():
        os.replace(aside, target)  # an earlier swap died between its renames
    if aside.is_dir():
        shutil.rmtree(aside)
    if target.exists() or target.is_symlink():
        os.replace(target, aside)
    os.replace(built, target)
    _fsync_path(target.parent)  # the renames themselves must survive a power cut
    if aside.is_dir():
        shutil.rmtree(aside)


def fsync_folder(folder: Path) -> None:
    """Flush a folder's files and the folder itself to disk, before it is swapped in."""
    for path in folder.iterdir():
        _fsync_path(path)
    _fsync_path(folder)


def _fsync_path(path: Path) -> None:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        descriptor = os.open(path, flags)
    except OSError:
        return  # folders cannot be opened on Windows; nothing to sync there
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
