"""`dreamdoom play`: options, opening the game (model or engine, start context, mirror), and the three
ways to run it: the window, headless to a video, and the play-loop benchmark."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.env import SCENARIOS
from data.cli_args import MAX_SEED, UsageError, arg, build, check_device
from play.display import FILTERS
from play.session import MAX_STEPS, MIN_STEPS

if TYPE_CHECKING:
    from data.world import World
    from play.script import Command

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CKPT = REPO_ROOT / "checkpoints" / "default"
EXAMPLE_INPUTS = Path(__file__).with_name("example_inputs.txt")


class PlayError(RuntimeError):
    """A user-facing problem with the play command's inputs."""


@dataclass
class PlayArgs:
    """Options of `dreamdoom play`."""

    ckpt: str | None = arg(
        None, "world-model checkpoint folder (default: checkpoints/default in the repo)", group="game"
    )
    engine: bool = arg(False, "play the real VizDoom engine instead of a model", group="game")
    device: str | None = arg(None, "torch device (default: cuda if available, else cpu)", group="game")
    steps: int | None = arg(
        None, "denoising steps (default: the checkpoint's)", ge=MIN_STEPS, le=MAX_STEPS, group="game"
    )
    scenario: str | None = arg(
        None,
        "engine scenario for the start context and the mirror (default: the world the checkpoint dreams; "
        "e1m1 with --engine); another world than the checkpoint's is refused",
        choices=sorted(SCENARIOS),
        group="game",
    )
    skill: int = arg(3, "engine skill", ge=1, le=5, group="game")
    seed: int = arg(0, "engine episode seed (start context, mirror)", ge=0, le=MAX_SEED, group="game")
    start: str | None = arg(
        None, "start context from a dataset episode instead of the engine", metavar="DATASET", group="game"
    )
    start_episode: int = arg(0, "episode index in --start", ge=0, group="game")
    mirror: bool = arg(False, "start with the real engine beside the dream (M)", group="game")
    threads: int | None = arg(
        None, "torch CPU threads (default: all cores but one)", ge=1, le=1024, group="game"
    )
    capture: bool = arg(
        True, "on CUDA, run each step eagerly instead of as CUDA graphs", flag="--no-capture", group="game"
    )
    scale: int | None = arg(
        None, "pixels per frame pixel (default 4 window, 2 headless)", ge=1, le=16, group="window"
    )
    filter: str = arg("nearest", "upscaling filter", choices=FILTERS, group="window")
    sensitivity: float = arg(0.15, "degrees of turn per pixel of mouse motion", gt=0, le=100, group="window")
    unlocked: bool = arg(False, "as fast as the model allows, not real time", group="window")
    show_hud: bool = arg(True, "start with the HUD hidden (H)", flag="--no-hud", group="window")
    grab: bool = arg(True, "do not capture the mouse", flag="--no-grab", group="window")
    max_frames: int = arg(0, "quit after this many frames (0: until Esc)", ge=0, group="window")
    record: bool = arg(False, "record from the first frame (F5 toggles)", group="window")
    record_dir: str = arg("recordings", "dataset folder recordings go to", group="window")
    screenshot_dir: str = arg(".", "folder F12 screenshots go to", group="window")
    headless: bool = arg(False, "no window: play --inputs into --out", group="headless")
    frames: int | None = arg(None, "frames to play headless", ge=1, group="headless")
    inputs: str | None = arg(
        None, f"input script (format: play/script.py; example: {EXAMPLE_INPUTS.name})", group="headless"
    )
    out: str | None = arg(None, "video to write (.mp4)", group="headless")
    hud: bool = arg(False, "draw the HUD into the headless video", group="headless")
    stats: str | None = arg(
        None, "write the run's timing and memory figures to this JSON file", group="headless"
    )
    bench: tuple[int, ...] | None = arg(
        None,
        "benchmark the play loop at these denoising steps, e.g. 1,2,4",
        ge=MIN_STEPS,
        le=MAX_STEPS,
        metavar="STEPS",
        group="benchmark",
    )
    bench_frames: int = arg(100, "timed frames per step count", ge=1, group="benchmark")
    overlap: bool = arg(
        True, "bench without overlapping model and drawing", flag="--no-overlap", group="benchmark"
    )
    json: bool = arg(False, "print bench results as JSON", group="benchmark")


def checkpoint_path(args: PlayArgs) -> Path:
    """The checkpoint folder to play, which must hold a config.json."""
    ckpt = Path(args.ckpt) if args.ckpt else DEFAULT_CKPT
    if not (ckpt / "config.json").is_file():
        hint = (
            (
                "no default checkpoint is in the repo yet: pass --ckpt CKPT_DIR, train one with "
                "`dreamdoom wm train`, or play the real engine with --engine"
            )
            if not args.ckpt
            else "not a checkpoint folder (no config.json)"
        )
        raise PlayError(f"{ckpt}: {hint}")
    from world_model.cli import checkpoint_folder

    return Path(checkpoint_folder(str(ckpt)))


def engine_world(scenario: str, like: World) -> World:
    """The world the engine plays for `scenario` at the frame size, frame_skip and contract of `like`."""
    from dataclasses import replace

    from agent.env import SCENARIOS

    return replace(like, scenario=scenario, map=SCENARIOS[scenario].map)


def open_game(args: PlayArgs):
    """The PlaySession the options describe (backend, start context, mirror)."""
    from play.engine import EngineBackend, dataset_context
    from play.session import PlaySession

    if args.engine:
        if args.mirror:
            raise PlayError("--mirror runs the engine beside a world model; with --engine there is no model")
        backend = EngineBackend(args.scenario or "e1m1", skill=args.skill, seed=args.seed)
        context = backend.start_context(1)
        return PlaySession(backend, context)

    ckpt = checkpoint_path(args)
    import torch

    from world_model.model.env import WorldModelEnv

    device = check_device(args.device)
    if args.threads or device == "cpu":
        # One core is left to drawing, input and the mirror engine: measured on 2 shared cores, the cpu
        # preset steps at 17.4 frames/s with 1 torch thread and 8.2 with 2 (`dreamdoom play --bench 2`).
        torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 2) - 1))
    backend = WorldModelEnv.from_checkpoint(ckpt, device=device, seed=args.seed, capture=args.capture)
    if args.steps is not None:
        backend.sampling_steps = args.steps
    engine = None
    world = backend.world
    if args.scenario is not None:  # refused before an engine starts: its frames would be another world's
        world.check(
            engine_world(args.scenario, world), f"the checkpoint {ckpt}", f"--scenario {args.scenario}"
        )
    if args.start:
        context = dataset_context(
            args.start,
            args.start_episode,
            backend.context_len,
            backend.resolution,
            backend.action_spec,
            world,
            f"the checkpoint {ckpt}",
        )
    else:
        engine = EngineBackend(
            world.scenario, backend.frame_skip, backend.resolution, args.skill, args.seed, backend.action_spec
        )
        context = engine.start_context(backend.context_len)
    session = PlaySession(backend, context, engine=engine, spec=backend.action_spec)
    if args.mirror:
        note = session.set_mirror(True)
        if note:
            print(f"warning: {note}", file=sys.stderr)
    return session


def _meta(args: PlayArgs) -> dict:
    return {"ckpt": None if args.engine else str(args.ckpt or DEFAULT_CKPT), "engine": bool(args.engine)}


def _run_headless(args: PlayArgs, session, commands) -> int:
    from play.headless import HeadlessConfig, run_headless

    if args.record:
        session.start_recording(args.record_dir, _meta(args))
    stats = run_headless(
        session, commands, HeadlessConfig(args.frames, args.out, args.scale or 2, args.filter, args.hud)
    )
    written = session.close()
    if written:
        stats["recorded"] = [str(p) for p in written]
    print(
        f"wrote {stats['frames']} frames to {args.out}: {stats['fps']:.1f} frames/s\n"
        f"  frame time {stats['frame_ms_median_start']:.1f} ms at the start, "
        f"{stats['frame_ms_median_end']:.1f} ms at the end (step {stats['step_ms_median_start']:.1f} -> "
        f"{stats['step_ms_median_end']:.1f} ms; "
        f"load {stats['load_avg_start']} -> {stats['load_avg_end']})\n"
        f"  CPU time {stats['cpu_ms_per_frame_start']:.1f} ms a frame at the start, "
        f"{stats['cpu_ms_per_frame_end']:.1f} ms at the end\n"
        f"  memory {stats['rss_mb_start']:.0f} MiB at the start, {stats['rss_mb_end']:.0f} MiB at the end"
    )
    if args.stats:
        Path(args.stats).parent.mkdir(parents=True, exist_ok=True)
        Path(args.stats).write_text(json.dumps(stats, indent=2))
    return 0


def _run_bench(args: PlayArgs, session) -> int:
    from play.bench import bench_play, format_bench

    results = bench_play(
        session, list(args.bench), args.bench_frames, scale=args.scale or 4, overlap=args.overlap
    )
    session.close()
    label = "engine" if args.engine else str(args.ckpt or DEFAULT_CKPT)
    print(
        json.dumps(results, indent=2)
        if args.json
        else format_bench(results, str(session.backend.device), label)
    )
    return 0


DEMO_FRAMES = 600  # 34 s of play at 17.5 frames/s
# SDL video drivers that open no window anyone sees (containers and CI set them): play makes its demo there
UNSEEN_DRIVERS = ("dummy", "offscreen")


def no_window_reason(user_video_driver: str | None) -> str | None:
    """Why a window would show nothing here (None: it would show)."""
    if user_video_driver is not None and user_video_driver.strip().lower() in UNSEEN_DRIVERS:
        return f"SDL_VIDEODRIVER={user_video_driver} shows no window"
    has_display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if sys.platform.startswith("linux") and not has_display and user_video_driver is None:
        return "no display found"
    return None


def check_headless(args: PlayArgs) -> list[Command]:
    """The headless options, checked and the input script read before the game opens."""
    from data.cli import VIDEO_SUFFIXES, output_file
    from play.script import read_script

    missing = [f"--{k}" for k in ("frames", "inputs", "out") if getattr(args, k) is None]
    if missing:
        raise UsageError(f"--headless needs {', '.join(missing)} (example script: {EXAMPLE_INPUTS})")
    output_file(args.out, suffixes=VIDEO_SUFFIXES)
    if args.stats:
        output_file(args.stats, "--stats")
    return read_script(args.inputs)


def check_options(args: PlayArgs) -> None:
    """What fails on its own, before the game opens (which takes seconds)."""
    from data.cli import dataset_folder, output_folder

    if not args.engine:
        checkpoint_path(args)
    if args.start:
        dataset_folder(args.start, "--start")
    output_folder(args.record_dir, "--record-dir")
    output_folder(args.screenshot_dir, "--screenshot-dir")
    if args.device is not None:
        check_device(args.device)


def cmd_play(args: argparse.Namespace, user_video_driver: str | None = None) -> int:
    a = build(PlayArgs, args)
    unseen = no_window_reason(user_video_driver)
    demo = None
    if unseen and not (a.headless or a.bench):  # nothing to show a window on: make a demo video instead
        a.headless, a.mirror, a.hud = True, not a.engine, True
        a.frames = a.frames or DEMO_FRAMES
        a.inputs = a.inputs or str(EXAMPLE_INPUTS)
        a.out = a.out or "demo.mp4"
        demo = (
            f"dreamdoom play: {unseen}, so playing {a.frames} frames of {a.inputs} headless "
            f"({'the dream beside the real engine' if a.mirror else 'the engine'}, with the HUD) "
            f"into {a.out}"
        )
    check_options(a)
    commands = check_headless(a) if a.headless else None
    if a.headless or (a.bench and unseen):
        os.environ["SDL_VIDEODRIVER"] = "dummy"
    elif user_video_driver is None:
        os.environ.pop("SDL_VIDEODRIVER", None)  # let SDL pick the real display
    session = open_game(a)
    if demo:  # said only now that the checkpoint has loaded
        print(demo, file=sys.stderr)
    if a.headless:
        return _run_headless(a, session, commands)
    if a.bench:
        return _run_bench(a, session)
    import pygame

    from play.window import GameWindow, WindowConfig

    if a.record:
        session.start_recording(a.record_dir, _meta(a))
    cfg = WindowConfig(
        scale=a.scale or 4,
        filter=a.filter,
        unlocked=a.unlocked,
        hud=a.show_hud,
        sensitivity=a.sensitivity,
        grab_mouse=a.grab,
        record_dir=a.record_dir,
        screenshot_dir=a.screenshot_dir,
        max_frames=a.max_frames,
        meta=_meta(a),
    )
    try:
        window = GameWindow(session, cfg)
    except pygame.error as e:
        session.close()
        raise PlayError(f"no window could open ({e}); on a machine with no display use --headless") from None
    print(f"played {window.run()} frames")
    return 0
