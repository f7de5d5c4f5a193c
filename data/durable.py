"""Writing files so that nothing written is lost: to a temp name, fsynced, then published under the real name.

A rename is atomic but not durable until the directory holding it is fsynced too: after a power cut an
unsynced directory can come back without the new name, or with a name pointing at unwritten blocks.
Publishing with `exclusive=True` uses a hard link, which fails instead of replacing a file another
process wrote under the same name.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path


def fsync_dir(folder: str | Path) -> None:
    """Make the names in `folder` (files created, renamed or removed) survive a power cut."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems (and all of Windows) cannot fsync a directory; nothing more to do
        pass
    finally:
        os.close(fd)


def publish(tmp: Path, path: Path, exclusive: bool) -> None:
    """Give the finished file `tmp` its real name; with `exclusive`, raise FileExistsError rather than
    replace a file that is already there (the check and the creation are one step: a hard link)."""
    if not exclusive:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # a filesystem without hard links: check, then rename (a narrow race, but no link)
        if os.path.lexists(path):
            raise FileExistsError(f"{path}: already exists") from None
        os.replace(tmp, path)
    else:
        os.unlink(tmp)


def fsync_file(path: str | Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def write_atomic(path: str | Path, data: bytes, exclusive: bool = False) -> None:
    """Write `data` to `path` whole or not at all, durably; a kill leaves at most a hidden temp file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, path, exclusive)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def write_with(path: str | Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` writes the file (a library that takes a path: safetensors, PIL, SB3) under a hidden temp
    name with `path`'s suffix, which is then made durable and renamed to `path`: whole or not at all."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        fsync_file(tmp)
        publish(tmp, path, exclusive=False)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()
