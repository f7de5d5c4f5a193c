"""`dreamdoom web`: the dream as a static page that runs the model in the browser (ONNX Runtime Web).

The folder it writes, served by any static file server:

    index.html, dream.js      the page: input, the rolling context, drawing, the HUD (play/web_page/)
    step_<n>.onnx             one graph per frame at n sampler steps (world_model/model/onnx_step.py)
    weights.bin               the graphs' weights as ONNX external data, one copy for all step counts
    start.bin                 the start context: K latents (float32, little-endian), then the frame shown
    meta.json                 shapes, the action contract, the graphs, the start's actions (no pickle)
    ort/                      ONNX Runtime Web's files (play/web_runtime.py)

The start context is the first K frames of the checkpoint's world from the real engine (or of a dataset
episode with --start), encoded and given the led-in actions by `WorldModelEnv.reset`, as play starts.
`--serve` serves the folder on localhost with the cross-origin isolation headers (COOP/COEP) that the
browser asks before it gives WebAssembly threads; without them the page runs on one thread.
"""

from __future__ import annotations

import argparse
import errno
import functools
import json
import os
import shutil
import sys
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from data.cli_args import MAX_SEED, UsageError, arg, build
from play.app import DEFAULT_CKPT
from play.session import MAX_STEPS

if TYPE_CHECKING:
    from play.engine import StartContext
    from world_model.model.env import WorldModelEnv

PAGE_KIND = "dreamdoom-web"  # meta.json's "kind": what marks a folder as one of our pages
PAGE_FORMAT = 1
PAGE_FILES = ("index.html", "dream.js")
PAGE_SOURCE = Path(__file__).resolve().parent / "web_page"
# What `--serve` adds to every answer: cross-origin isolation, which WebAssembly threads need
# (SharedArrayBuffer), and no caching, so a page written again is loaded again.
SERVE_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cache-Control": "no-cache",
}


@dataclass
class WebArgs:
    out: str = arg(help="folder to write the page into (new, empty, or a page written before)")
    ckpt: str | None = arg(None, "world-model checkpoint folder (default: checkpoints/default in the repo)")
    steps: tuple[int, ...] | None = arg(
        None,
        "sampler step counts to export, one graph each, switched with [ and ] "
        "(default: the checkpoint's own count)",
        ge=1,
        le=MAX_STEPS,
    )
    start: str | None = arg(
        None, "start context from a dataset episode instead of the engine", metavar="DATASET"
    )
    start_episode: int = arg(0, "episode index in --start", ge=0)
    seed: int = arg(0, "engine episode seed of the start context", ge=0, le=MAX_SEED)
    serve: bool = arg(False, "serve the page on localhost (with the headers WebAssembly threads need)")
    port: int = arg(8000, "port of --serve (0: any free port)", ge=0, le=65535)


class PageHandler(SimpleHTTPRequestHandler):
    """Static files with SERVE_HEADERS and the types browsers insist on for modules and WebAssembly."""

    extensions_map = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".js": "text/javascript",
        ".wasm": "application/wasm",
        ".onnx": "application/octet-stream",
        ".bin": "application/octet-stream",
    }

    def end_headers(self) -> None:
        for name, value in SERVE_HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # one line per request is noise in a game's terminal
        pass


def bind_server(folder: str | Path, port: int) -> ThreadingHTTPServer:
    """A server of `folder` bound to localhost:`port` (not yet serving); a port in use is a UsageError."""
    handler = functools.partial(PageHandler, directory=str(folder))
    try:
        return ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as e:
        why = "in use" if e.errno == errno.EADDRINUSE else e.strerror or str(e)
        raise UsageError(f"--port {port}: {why}") from None


def check_out_folder(path: str) -> Path:
    """`path` if the page may be written there: absent, empty, or a page written before."""
    out = Path(path)
    if out.is_dir() and any(out.iterdir()):
        meta = out / "meta.json"
        try:
            ours = json.loads(meta.read_text()).get("kind") == PAGE_KIND
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise UsageError(
                f"--out {path}: holds other files (not a page written by dreamdoom web): "
                "give a new or empty folder"
            )
    return out


def start_context(a: WebArgs, env: WorldModelEnv, ckpt_path: Path) -> StartContext:
    """The start context as play makes it: the engine's first K frames of the checkpoint's world, or a
    dataset episode's first K frames and actions."""
    from play.engine import EngineBackend, dataset_context

    if a.start:
        model = f"the checkpoint {ckpt_path}"
        spec, world = env.action_spec, env.world
        return dataset_context(a.start, a.start_episode, env.context_len, env.resolution, spec, world, model)
    engine = EngineBackend(env.world.scenario, env.frame_skip, env.resolution, seed=a.seed)
    try:
        return engine.start_context(env.context_len)
    finally:
        engine.close()


def page_meta(
    env: WorldModelEnv, steps: list[int], start_actions: np.ndarray, source: str, ckpt_path: Path
) -> dict:
    """meta.json: everything the page needs besides the graphs and the start's binary."""
    from world_model.model.onnx_step import step_input_names

    ckpt, spec = env.ckpt, env.action_spec
    cfg = ckpt.dit_cfg
    w, h = env.resolution
    return {
        "kind": PAGE_KIND,
        "format": PAGE_FORMAT,
        "checkpoint": ckpt_path.name,
        "world": str(env.world),
        "context_len": cfg.context_len,
        "latent": [cfg.latent_channels, *cfg.latent_size],  # C, h, w
        "frame": [h, w],
        "frame_skip": env.frame_skip,
        "actions": {
            "fields": list(spec.fields),
            "sizes": list(spec.sizes),
            "turn_degrees_per_tic": list(spec.turn_degrees_per_tic),
            "turn_none": spec.turn_none,
            "noop": spec.noop().tolist(),
        },
        "inputs": list(step_input_names(ckpt)),
        "steps": {str(n): f"step_{n}.onnx" for n in steps},
        "weights": "weights.bin",  # the graphs' weights, one copy for all step counts
        "default_steps": env.sampling_steps if env.sampling_steps in steps else steps[0],
        "start": {"file": "start.bin", "actions": start_actions.tolist(), "source": source},
    }


def write_page(a: WebArgs, ckpt_path: Path, out: Path) -> dict:
    """Build the page in a temporary folder beside `out`, then put it in place; returns meta.json's dict
    with the sizes added."""
    from play.web_runtime import RUNTIME_FILES, runtime_folder
    from world_model.model.checkpoint import SHIPPED_FILES
    from world_model.model.env import WorldModelEnv
    from world_model.model.onnx_step import export_step, optimize, share_weights

    runtime = runtime_folder()  # first: a missing npm or network fails before the slower steps
    env = WorldModelEnv.from_checkpoint(ckpt_path, capture=False)
    steps = sorted(set(a.steps or (env.sampling_steps,)))
    context = start_context(a, env, ckpt_path)
    shown = env.reset(context.frames, context.actions)  # (H, W, 3): the frame the page shows first
    latents, led_in = env.context  # (K, C, h, w), (K, fields)
    meta = page_meta(env, steps, led_in, context.source, ckpt_path)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        graphs = [optimize(export_step(env.ckpt, n, tmp / meta["steps"][str(n)])) for n in steps]
        share_weights(graphs, tmp / meta["weights"])
        (tmp / "start.bin").write_bytes(latents.astype("<f4").tobytes() + shown.astype(np.uint8).tobytes())
        for name in PAGE_FILES:
            shutil.copyfile(PAGE_SOURCE / name, tmp / name)
        (tmp / "ort").mkdir()
        for name in RUNTIME_FILES:
            shutil.copyfile(runtime / name, tmp / "ort" / name)
        meta["sizes"] = {
            "graphs": {str(n): g.stat().st_size for n, g in zip(steps, graphs, strict=True)},
            "weights": (tmp / meta["weights"]).stat().st_size,
            "safetensors": sum((ckpt_path / f"{f}.safetensors").stat().st_size for f in SHIPPED_FILES),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def cmd_web(args: argparse.Namespace) -> int:
    from world_model.cli import checkpoint_folder

    a = build(WebArgs, args)
    ckpt_path = Path(checkpoint_folder(a.ckpt or str(DEFAULT_CKPT)))
    from data.cli import dataset_folder, output_folder

    out = check_out_folder(output_folder(a.out))
    if a.start:
        dataset_folder(a.start, "--start")
    server = bind_server(out, a.port) if a.serve else None  # a port in use ends the command before any work
    try:
        meta = write_page(a, ckpt_path, out)
        sizes = meta["sizes"]
        total = sizes["weights"] + sum(sizes["graphs"].values())
        print(
            f"wrote {out}: the model for {', '.join(meta['steps'])} sampler step(s) in {total / 1e6:.1f} MB "
            f"(the checkpoint's safetensors: {sizes['safetensors'] / 1e6:.1f} MB); "
            f"start context: {meta['start']['source']}"
        )
        if server is None:
            print("serve it with --serve or any static file server (WebAssembly threads need COOP/COEP)")
            return 0
        host, port = server.server_address[:2]
        print(
            f"serving {out} at http://{host}:{port}/ with {', '.join(SERVE_HEADERS)} "
            "(cross-origin isolated: WebAssembly threads on); Ctrl-C stops",
            flush=True,
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:  # the way a server is stopped, not an interruption of work
            print("stopped", file=sys.stderr)
    finally:
        if server is not None:
            server.server_close()
    return 0
