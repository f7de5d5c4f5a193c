"""ONNX Runtime Web's files for the page, from the npm package at a pinned version and checksum.

The first `dreamdoom web` on a machine runs `npm pack onnxruntime-web@VERSION` (about 33 MB, once), checks
the tarball against the pinned sha512, and keeps the few files the page loads in a cache folder; every
later page is built from that folder with no network. `DREAMDOOM_ORT_WEB` names a folder that already
holds those files (an offline machine: copy them there from `npm pack` on another).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

ORT_WEB_VERSION = "1.30.0"
# npm's integrity string of onnxruntime-web-1.30.0.tgz (what `npm pack --json` reports, sha512 in base64).
ORT_WEB_INTEGRITY = (
    "sha512-q0y+JrrtukXSzsBWEMccVfqX25LRmosXHF+CaRJmg8pZClzcV7svNc4rKY3jL02Vb7QmRMDs1SigqR4CXAfKYQ=="
)
# The bundle with the WebGPU and WASM backends, and the WASM builds it loads: the plain one for the WASM
# backend, the asyncify one for WebGPU.
RUNTIME_FILES = (
    "ort.webgpu.min.mjs",
    "ort-wasm-simd-threaded.mjs",
    "ort-wasm-simd-threaded.wasm",
    "ort-wasm-simd-threaded.asyncify.mjs",
    "ort-wasm-simd-threaded.asyncify.wasm",
)
ENV_VAR = "DREAMDOOM_ORT_WEB"
NPM_TIMEOUT_S = 600


class RuntimeFilesError(ValueError):
    """The runtime's files cannot be had (no npm, no network, a bad download); the message says what to do."""


def cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dreamdoom" / f"onnxruntime-web-{ORT_WEB_VERSION}"


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in RUNTIME_FILES)


def _integrity(path: Path) -> str:
    h = hashlib.sha512()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha512-" + base64.b64encode(h.digest()).decode()


def _npm_pack(dest: Path) -> Path:
    """`npm pack` the pinned package into `dest`; the tarball's path, its checksum verified."""
    npm = shutil.which("npm")
    files = ", ".join(RUNTIME_FILES)
    how = f"or set {ENV_VAR} to a folder holding {files} of onnxruntime-web {ORT_WEB_VERSION}"
    if npm is None:
        raise RuntimeFilesError(f"no npm: it fetches onnxruntime-web once (apt-get install npm), {how}")
    spec = f"onnxruntime-web@{ORT_WEB_VERSION}"
    try:
        done = subprocess.run(
            [npm, "pack", spec, "--json", "--pack-destination", str(dest)],
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
            cwd=dest,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeFilesError(f"npm pack {spec}: no answer in {NPM_TIMEOUT_S} s; {how}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise RuntimeFilesError(f"npm pack {spec}: {last}; {how}")
    tarball = dest / json.loads(done.stdout)[0]["filename"]
    got = _integrity(tarball)
    if got != ORT_WEB_INTEGRITY:
        raise RuntimeFilesError(f"npm pack {spec}: checksum {got} is not the pinned {ORT_WEB_INTEGRITY}")
    return tarball


def runtime_folder() -> Path:
    """A folder holding RUNTIME_FILES: `$DREAMDOOM_ORT_WEB`, or the cache, filled from npm the first time."""
    given = os.environ.get(ENV_VAR)
    if given:
        if not _complete(Path(given)):
            missing = [n for n in RUNTIME_FILES if not (Path(given) / n).is_file()]
            raise RuntimeFilesError(f"{ENV_VAR}={given}: lacks {', '.join(missing)}")
        return Path(given)
    folder = cache_folder()
    if _complete(folder):
        return folder
    print(f"fetching onnxruntime-web {ORT_WEB_VERSION} with npm (once) into {folder}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        tarball = _npm_pack(Path(tmp))
        unpacked = Path(tmp) / "files"
        unpacked.mkdir()
        with tarfile.open(tarball) as tar:
            for name in RUNTIME_FILES:  # only these members, by name: nothing else of the archive is written
                src = tar.extractfile(f"package/dist/{name}")
                if src is None:
                    raise RuntimeFilesError(f"onnxruntime-web {ORT_WEB_VERSION}: no dist/{name} in it")
                with src, open(unpacked / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        if folder.exists():  # an incomplete folder from an interrupted run
            shutil.rmtree(folder)
        unpacked.rename(folder)
    return folder
