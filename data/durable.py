"""Writing files so that nothing written is lost: to a temp name, fsynced, then published under the real name.

A rename is atomic but not durable until the directory holding it is fsynced too: after a power cut an
unsynced directory can come back without the new name, or with a name pointing at unwritten blocks.
Publishing with `exclusive=True` uses a hard link, which fails instead of replacing a file another
process wrote under the same name. A file can carry its SHA-256 in a sidecar beside it (`write_checked`),
checked when it is read (`checksum_error`).
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


def write_atomic(path: str | Path, data: bytes, exclusive: bool = False, mode: int | None = None) -> None:
    """Write `data` to `path` whole or not at all, durably; a kill leaves at most a hidden temp file.
    `mode`: the file's permission bits, set before it gets its name (an executable is never seen without)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            if mode is not None:
                os.fchmod(f.fileno(), mode)
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


# --- a file with its checksum beside it ------------------------------------------------------------------


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def checksum_path(path: str | Path) -> Path:
    """The sidecar beside `path` holding its SHA-256 (`sha256sum -c` reads it)."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def _read_sums(path: Path) -> set[str] | None:
    try:
        text = checksum_path(path).read_text()
    except FileNotFoundError:
        return None
    return {line.split()[0] for line in text.splitlines() if line.strip()}


def _sum_lines(sums: list[str], name: str) -> bytes:
    return "".join(f"{s}  {name}\n" for s in sums).encode()


def write_checked(path: str | Path, write: Callable[[Path], object]) -> None:
    """`write_with`, plus the file's SHA-256 in a sidecar beside it. While the file is replaced, the sidecar
    lists the old sum and the new one, so that a kill at any moment leaves a file its sidecar vouches for."""
    path = Path(path)
    old = (_read_sums(path) or {sha256_of(path)}) if path.exists() else set()
    new: list[str] = []

    def write_and_list(tmp: Path) -> None:
        write(tmp)
        new.append(sha256_of(tmp))
        write_atomic(checksum_path(path), _sum_lines(sorted(old - set(new)) + new, path.name))

    write_with(path, write_and_list)
    write_atomic(checksum_path(path), _sum_lines(new, path.name))


def checksum_error(path: str | Path) -> str | None:
    """Why `path` is not the file its sidecar vouches for (None: it is, or it has no sidecar: a file written
    before sidecars, or by hand)."""
    sums = _read_sums(Path(path))
    if sums is None:
        return None
    if sha256_of(path) not in sums:
        return f"checksum mismatch with {checksum_path(path).name}: the file is damaged or was replaced"
    return None
