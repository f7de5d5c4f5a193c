"""`dreamdoom play`: options, opening the game (model or engine, start context, mirror), and the three
ways to run it: the window, headless to a video, and the play-loop benchmark."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CKPT = REPO_ROOT / "checkpoints" / "default"
EXAMPLE_INPUTS = Path(__file__).with_name("example_inputs.txt")


class PlayError(RuntimeError):
    """A user-facing problem with the play command's inputs."""


def add_play_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("game")
    g.add_argument("--ckpt", help="world-model checkpoint folder (default: checkpoints/default in the repo)")
    g.add_argument("--engine", action="store_true", help="play the real VizDoom engine instead of a model")
    g.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    g.add_argument("--steps", type=int, help="denoising steps (default: the checkpoint's)")
    g.add_argument("--scenario", default="e1m1", help="engine scenario for the start context and the mirror")
    g.add_argument("--skill", type=int, default=3, help="engine skill 1..5")
    g.add_argument("--seed", type=int, default=0, help="engine episode seed (start context, mirror)")
    g.add_argument(
        "--start", metavar="DATASET", help="start context from a dataset episode instead of the engine"
    )
    g.add_argument("--start-episode", type=int, default=0, help="episode index in --start")
    g.add_argument("--mirror", action="store_true", help="start with the real engine beside the dream (M)")
    g.add_argument("--threads", type=int, help="torch CPU threads (default: all cores but one)")
    w = p.add_argument_group("window")
    w.add_argument(
        "--scale", type=int, default=None, help="pixels per frame pixel (default 4 window, 2 headless)"
    )
    w.add_argument(
        "--filter", default="nearest", choices=("nearest", "smooth", "scale2x"), help="upscaling filter"
    )
    w.add_argument(
        "--sensitivity", type=float, default=0.15, help="degrees of turn per pixel of mouse motion"
    )
    w.add_argument("--unlocked", action="store_true", help="as fast as the model allows, not real time")
    w.add_argument("--no-hud", action="store_true", help="start with the HUD hidden (H)")
    w.add_argument("--no-grab", action="store_true", help="do not capture the mouse")
    w.add_argument("--max-frames", type=int, default=0, help="quit after this many frames (0: until Esc)")
    w.add_argument("--record", action="store_true", help="record from the first frame (F5 toggles)")
    w.add_argument("--record-dir", default="recordings", help="dataset folder recordings go to")
    w.add_argument("--screenshot-dir", default=".", help="folder F12 screenshots go to")
    h = p.add_argument_group("headless")
    h.add_argument("--headless", action="store_true", help="no window: play --inputs into --out")
    h.add_argument("--frames", type=int, help="frames to play headless")
    h.add_argument("--inputs", help=f"input script (format: play/script.py; example: {EXAMPLE_INPUTS.name})")
    h.add_argument("--out", help="video to write (.mp4)")
    h.add_argument("--hud", action="store_true", help="draw the HUD into the headless video")
    h.add_argument("--stats", help="write the run's timing and memory figures to this JSON file")
    b = p.add_argument_group("benchmark")
    b.add_argument(
        "--bench", metavar="STEPS", help="benchmark the play loop at these denoising steps, e.g. 1,2,4"
    )
    b.add_argument("--bench-frames", type=int, default=100, help="timed frames per step count")
    b.add_argument("--no-overlap", action="store_true", help="bench without overlapping model and drawing")
    b.add_argument("--json", action="store_true", help="print bench results as JSON")


def _device(name: str | None) -> str:
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PlayError(f"--device {name}: CUDA is not available here")
    return name


def open_game(args: argparse.Namespace):
    """The PlaySession the options describe (backend, start context, mirror)."""
    from play.engine import EngineBackend, dataset_context
    from play.session import PlaySession

    if args.engine:
        if args.mirror:
            raise PlayError("--mirror runs the engine beside a world model; with --engine there is no model")
        backend = EngineBackend(args.scenario, skill=args.skill, seed=args.seed)
        context = backend.start_context(1)
        return PlaySession(backend, context)

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
    import torch

    from world_model.env import WorldModelEnv

    device = _device(args.device)
    if args.threads or device == "cpu":
        # One core is left to drawing, input and the mirror engine: measured on 2 shared cores, the cpu
        # preset steps at 17.4 frames/s with 1 torch thread and 8.2 with 2 (`dreamdoom play --bench 2`).
        torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 2) - 1))
    backend = WorldModelEnv.from_checkpoint(ckpt, device=device, seed=args.seed)
    if args.steps is not None:
        try:
            backend.sampling_steps = args.steps
        except ValueError as e:
            raise PlayError(f"--steps {args.steps}: {e}") from e
    engine = None
    if args.start:
        context = dataset_context(
            args.start, args.start_episode, backend.context_len, backend.resolution, backend.action_spec
        )
    else:
        engine = EngineBackend(
            args.scenario, backend.frame_skip, backend.resolution, args.skill, args.seed, backend.action_spec
        )
        context = engine.start_context(backend.context_len)
    session = PlaySession(backend, context, engine=engine, spec=backend.action_spec)
    if args.mirror:
        note = session.set_mirror(True)
        if note:
            print(f"warning: {note}", file=sys.stderr)
    return session


def _meta(args: argparse.Namespace) -> dict:
    return {"ckpt": None if args.engine else str(args.ckpt or DEFAULT_CKPT), "engine": bool(args.engine)}


def _run_headless(args: argparse.Namespace, session) -> int:
    from play.headless import HeadlessConfig, run_headless
    from play.script import read_script

    missing = [f"--{k}" for k in ("frames", "inputs", "out") if getattr(args, k) is None]
    if missing:
        raise PlayError(f"--headless needs {', '.join(missing)} (example script: {EXAMPLE_INPUTS})")
    commands = read_script(args.inputs, session.spec)
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


def _run_bench(args: argparse.Namespace, session) -> int:
    from play.bench import bench_play, format_bench

    try:
        steps = [int(s) for s in args.bench.split(",")]
    except ValueError:
        raise PlayError(f"--bench {args.bench!r}: want step counts like 1,2,4") from None
    results = bench_play(
        session, steps, args.bench_frames, scale=args.scale or 4, overlap=not args.no_overlap
    )
    session.close()
    device = str(getattr(session.backend, "device", "cpu"))
    label = "engine" if args.engine else str(args.ckpt or DEFAULT_CKPT)
    print(json.dumps(results, indent=2) if args.json else format_bench(results, device, label))
    return 0


DEMO_FRAMES = 600  # 34 s of play at 17.5 frames/s


def cmd_play(args: argparse.Namespace, user_video_driver: str | None = None) -> int:
    import pygame

    from agent.env import ScenarioError
    from data.dataset import DatasetError
    from play.script import ScriptError
    from world_model.checkpoint import CheckpointError

    has_display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if sys.platform.startswith("linux") and not has_display and user_video_driver is None:
        if not (args.headless or args.bench):  # nothing to show a window on: make a demo video instead
            args.headless, args.mirror, args.hud = True, True, True
            args.frames = args.frames or DEMO_FRAMES
            args.inputs = args.inputs or str(EXAMPLE_INPUTS)
            args.out = args.out or "demo.mp4"
            print(
                f"dreamdoom play: no display found, so playing {args.frames} frames of {args.inputs} "
                f"headless (the dream beside the real engine, with the HUD) into {args.out}",
                file=sys.stderr,
            )
    if args.headless or (args.bench and user_video_driver is None and not has_display):
        os.environ["SDL_VIDEODRIVER"] = "dummy"
    elif user_video_driver is None:
        os.environ.pop("SDL_VIDEODRIVER", None)  # let SDL pick the real display
    try:
        session = open_game(args)
        if args.headless:
            return _run_headless(args, session)
        if args.bench:
            return _run_bench(args, session)
        from play.window import GameWindow, WindowConfig

        if args.record:
            session.start_recording(args.record_dir, _meta(args))
        cfg = WindowConfig(
            scale=args.scale or 4,
            filter=args.filter,
            unlocked=args.unlocked,
            hud=not args.no_hud,
            sensitivity=args.sensitivity,
            grab_mouse=not args.no_grab,
            record_dir=args.record_dir,
            screenshot_dir=args.screenshot_dir,
            max_frames=args.max_frames,
            meta=_meta(args),
        )
        window = GameWindow(session, cfg)
        frames = window.run()
        print(f"played {frames} frames")
        return 0
    except (PlayError, CheckpointError, DatasetError, ScenarioError, ScriptError, ValueError) as e:
        print(f"dreamdoom play: {e}", file=sys.stderr)
        return 2
    except pygame.error as e:
        print(
            f"dreamdoom play: no window could open ({e}); on a machine with no display use --headless",
            file=sys.stderr,
        )
        return 2
