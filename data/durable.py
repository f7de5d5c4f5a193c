"""Writing files so that nothing written is lost: to a temp name, fsynced, then published under the real name.

A rename is atomic but not durable until the directory holding it is fsynced too: after a power cut an
unsynced directory can come back without the new name, or with a name pointing at unwritten blocks.
Publishing with `exclusive=True` uses a hard link, which fails instead of replacing a file another
process wrote under the same name. A file can carry its SHA-256 in a sidecar beside it (`write_checked`),
checked when it is read (`checksum_error`). A folder of files is written whole by a `FolderStore`: a new copy
beside it, swapped in, so that a kill at any moment leaves a complete copy to find.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
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


# --- a folder written whole ------------------------------------------------------------------------------


def _rename(src: Path, dst: Path) -> None:
    src.rename(dst)
    fsync_dir(dst.parent)


def _accept_any(folder: Path, index: dict) -> bool:
    return True


def _unranked(index: dict) -> int:
    return 0


@dataclass(frozen=True)
class FolderStore:
    """How folders of one kind are written whole, and found again after a kill.

    A write puts the new copy in the sibling `.NAME.tmp`, the index file last (a JSON object that lists
    every file with its size and SHA-256, so its presence marks the copy complete), fsyncs it, moves the
    old copy to `.NAME.old`, renames the new one into place and deletes the old. A kill between any two of
    these steps leaves at least one complete copy; `find` picks the newest and `recover` puts it back in
    place."""

    index: str  # the index file's name, e.g. "config.json"
    accept: Callable[[Path, dict], bool] = _accept_any  # is this index (of this copy) one of ours?
    rank: Callable[[dict], int] = _unranked  # of two complete copies the higher rank is newer

    def copies(self, folder: str | Path) -> list[Path]:
        """Where a copy of `folder` can be: in place, new beside it, old beside it."""
        folder = Path(folder)
        return [folder, folder.with_name(f".{folder.name}.tmp"), folder.with_name(f".{folder.name}.old")]

    def complete(self, folder: str | Path) -> dict | None:
        """The index of a complete copy, None for anything else. All files the index lists present at their
        size is complete (checksums are checked on load, where the bytes are read anyway); an index that
        lists no files is complete when `accept` says so."""
        folder = Path(folder)
        try:
            index = json.loads((folder / self.index).read_text())
            if not isinstance(index, dict) or not self.accept(folder, index):
                return None
            files = index.get("files")
            if files is None or all((folder / n).stat().st_size == rec["bytes"] for n, rec in files.items()):
                return index
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            pass
        return None

    def find(self, folder: str | Path) -> Path | None:
        """The newest complete copy of `folder` (by rank; in place wins a tie), whatever moment of a write a
        kill interrupted; None if there is none."""
        best: tuple[int, Path] | None = None
        for copy in self.copies(folder):
            index = self.complete(copy)
            if index is not None and (best is None or self.rank(index) > best[0]):
                best = (self.rank(index), copy)
        return best[1] if best else None

    def remove(self, folder: Path) -> None:
        """Delete a copy, its index first: a copy half deleted is never mistaken for complete."""
        if folder.is_dir():
            (folder / self.index).unlink(missing_ok=True)
            shutil.rmtree(folder)

    def recover(self, folder: str | Path) -> Path | None:
        """Put the newest complete copy of `folder` in place after a write was cut short, and clear the other
        copies; returns `folder`, or None when there is no complete copy. Only the writer may call this."""
        folder = Path(folder)
        best = self.find(folder)
        if best is None:
            return None
        spare = [c for c in self.copies(folder)[1:] if c != best]
        for copy in spare:
            self.remove(copy)
        if best != folder:
            if folder.exists():
                _rename(folder, spare[0])
            _rename(best, folder)
            self.remove(spare[0])
        return folder

    def write(self, folder: str | Path, index: dict, write_files: Callable[[Path], object]) -> None:
        """`write_files(tmp)` writes the files into the new copy; each is fsynced and listed in `index`, which
        is written last, and the copy is swapped in place of `folder`."""
        folder = Path(folder)
        self.recover(folder)  # finish a swap a kill cut short: the copies cleared below are never the newest
        tmp, old = self.copies(folder)[1:]
        self.remove(tmp)
        tmp.mkdir(parents=True)
        write_files(tmp)
        listed = {}
        for path in sorted(tmp.iterdir()):
            fsync_file(path)
            listed[path.name] = {"bytes": path.stat().st_size, "sha256": sha256_of(path)}
        index = {**index, "files": listed}
        write_atomic(tmp / self.index, json.dumps(index, indent=2).encode())  # last: marks the copy complete
        if folder.exists():
            _rename(folder, old)
        _rename(tmp, folder)
        self.remove(old)

    def file_error(self, path: Path, index: dict) -> str | None:
        """Why the file at `path` is not the one `index` lists (None: it is, or the index lists no files, as
        indexes written before these records)."""
        record = index.get("files", {}).get(path.name)
        if record is None:
            return None
        try:
            size = path.stat().st_size
        except OSError as e:
            return f"missing or unreadable ({e})"
        if size != record.get("bytes") or sha256_of(path) != record.get("sha256"):
            return f"checksum mismatch with {self.index}; the file is damaged or was replaced"
        return None
