"""The play loop on the real engine and on a tiny untrained world model: window keys (posted events),
stepping, mirror lockstep, recording, dataset start contexts, headless runs and the CLI."""

import json

import numpy as np
import pygame
import pytest

from agent.collect import CollectConfig, collect
from data.actions import DEFAULT_ACTIONS as SPEC
from data.dataset import Dataset, DatasetError
from data.video import read_video
from play.cli import main
from play.display import Display
from play.engine import EngineBackend, dataset_context
from play.session import PlaySession
from play.stats import psnr
from play.window import GameWindow, WindowConfig
from world_model.model.checkpoint import make_untrained_checkpoint
from world_model.model.env import WorldModelEnv

WALK = [SPEC.make(move=1, turn=5), SPEC.make(strafe=1, attack=1), SPEC.make(move=2, turn=1), SPEC.make(use=1)]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """`dreamdoom play` sets torch's thread count for the process; give other tests theirs back."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_untrained_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", preset="tiny")


@pytest.fixture(scope="module")
def engine():
    e = EngineBackend("e1m1")
    yield e
    e.close()


def model_session(ckpt, engine, mirror=False) -> PlaySession:
    model = WorldModelEnv.from_checkpoint(ckpt)
    session = PlaySession(model, engine.start_context(model.context_len), engine=engine)
    if mirror:
        assert session.set_mirror(True) is None
    return session


def key(k: int) -> list:
    return [
        pygame.event.Event(t, key=k, mod=0, unicode="", scancode=0) for t in (pygame.KEYDOWN, pygame.KEYUP)
    ]


def post(*events) -> None:
    for e in events:
        pygame.event.post(e)


def test_engine_backend_replays_its_start_context(engine):
    ctx = engine.start_context(4, SPEC.make(move=1))
    assert (
        ctx.frames.shape == (4, 120, 160, 3)
        and ctx.actions.shape == (4, 5)
        and ctx.engine_seed == engine.seed
    )
    assert not np.array_equal(ctx.frames[0], ctx.frames[-1]), "walking forward changes the view"
    # A reset with the context replays its actions: the engine shows exactly the context's last frame.
    assert np.array_equal(engine.reset(ctx.frames, ctx.actions), ctx.frames[-1])


def test_mirror_steps_the_real_engine_in_lockstep(ckpt, engine):
    session = model_session(ckpt, engine, mirror=True)
    assert np.array_equal(session.mirror_frame, session.context.frames[-1]), (
        "the mirror starts at the context"
    )
    tic0 = engine.env.game.get_episode_time()
    for i in range(6):
        session.submit(WALK[i % len(WALK)])
        session.collect()
    assert session.steps_taken == session.mirror_steps == 6
    assert engine.env.game.get_episode_time() - tic0 == 6 * engine.frame_skip
    # The mirror's frame is the real game's after the same actions: replay them on a fresh engine.
    replay = EngineBackend("e1m1")
    frame = replay.reset(session.context.frames, session.context.actions)
    for i in range(6):
        frame = replay.step(WALK[i % len(WALK)])
    replay.close()
    assert np.array_equal(session.mirror_frame, frame)
    assert session.psnr == pytest.approx(psnr(session.frame, session.mirror_frame))
    assert np.isfinite(session.mean_psnr)
    session.set_mirror(False)
    assert session.mirror_frame is None and session.steps_taken == 0
    session.close()


def test_window_keys_pause_reset_steps_and_screenshot(ckpt, engine, tmp_path):
    session = model_session(ckpt, engine)
    win = GameWindow(session, WindowConfig(scale=2, unlocked=True, screenshot_dir=str(tmp_path)))
    start = session.frame.copy()
    post(*key(pygame.K_w))
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_d, mod=0, unicode="", scancode=0))
    for _ in range(3):
        win.tick()
    assert session.steps_taken == 3
    assert np.array_equal(session.action, SPEC.make(strafe=2)), "W was pressed and released, D is held"

    post(pygame.event.Event(pygame.MOUSEMOTION, rel=(200, 5), pos=(0, 0), buttons=(0, 0, 0)))
    post(pygame.event.Event(pygame.MOUSEBUTTONDOWN, button=1, pos=(0, 0)))
    win.tick()
    assert np.array_equal(session.action, SPEC.make(strafe=2, turn=6, attack=1)), "mouse: turn right, fire"
    post(pygame.event.Event(pygame.MOUSEBUTTONUP, button=1, pos=(0, 0)))

    post(*key(pygame.K_p))
    win.tick()
    post(pygame.event.Event(pygame.MOUSEMOTION, rel=(200, 0), pos=(0, 0), buttons=(0, 0, 0)))
    win.tick()
    assert session.paused and session.steps_taken == 4, "paused: no steps"
    post(*key(pygame.K_p))
    win.tick()
    assert not session.paused and session.steps_taken == 5
    assert session.action[2] == SPEC.turn_none, "looking around while paused queues no turn"

    steps = session.steps
    post(*key(pygame.K_RIGHTBRACKET))
    win.tick()
    assert session.steps == steps + 1 == session.backend.sampling_steps
    post(*key(pygame.K_LEFTBRACKET), *key(pygame.K_LEFTBRACKET), *key(pygame.K_LEFTBRACKET))
    win.tick()
    assert session.steps == 1, "clamped at one step"

    post(*key(pygame.K_r))
    win.handle_events()
    assert session.steps_taken == 0 and np.array_equal(session.frame, start), "R: back to the start context"
    assert not session.paused

    post(*key(pygame.K_h))
    win.handle_events()
    assert not win.show_hud
    post(*key(pygame.K_F12))
    win.handle_events()
    shots = list(tmp_path.glob("dreamdoom_*.png"))
    assert len(shots) == 1 and pygame.image.load(str(shots[0])).get_size() == win.screen.get_size()

    post(*key(pygame.K_m))
    win.handle_events()
    assert session.mirror and win.screen.get_size() == (2 * 160 * 2, 120 * 2), (
        "M: the engine beside the dream"
    )
    post(*key(pygame.K_ESCAPE))
    win.tick()
    assert not win.running
    assert win.run() == win.frames
    assert win.frames == 7


def test_recording_writes_valid_episodes(ckpt, engine, tmp_path):
    session = model_session(ckpt, engine, mirror=True)
    win = GameWindow(session, WindowConfig(scale=1, unlocked=True, record_dir=str(tmp_path / "rec")))
    post(*key(pygame.K_F5))
    shown, sent = [], []
    for i in range(5):
        a = WALK[i % len(WALK)]
        win.inputs.release_all()
        names = {1: pygame.K_w, 2: pygame.K_s}
        if a[0]:
            win.inputs.keys.add(names[a[0]])
        if a[1]:
            win.inputs.keys.add({1: pygame.K_a, 2: pygame.K_d}[a[1]])
        shown.append(session.frame.copy())
        win.tick()
        sent.append(session.action.copy())
    post(*key(pygame.K_F5))
    win.handle_events()
    assert session.recorder is None
    dream, real = Dataset(tmp_path / "rec" / "dream"), Dataset(tmp_path / "rec" / "engine")
    assert dream.manifest.recorder["policy"] == "human" and dream.manifest.frame_skip == 2
    ep = dream.load(0)
    assert len(ep) == 5 and ep.dones[-1] and not ep.dones[:-1].any()
    assert np.array_equal(ep.frames, np.stack(shown)), "frames are what was shown"
    assert np.array_equal(ep.actions, np.stack(sent)), "actions are what was sent"
    assert ep.meta["shown"] == "dream" and "start" in ep.meta
    engine_ep = real.load(0)
    assert np.array_equal(engine_ep.actions, ep.actions) and engine_ep.variables[:, 0].min() > 0  # health
    session.close()


def test_recording_cuts_episodes_at_reset(ckpt, engine, tmp_path):
    session = model_session(ckpt, engine)
    session.start_recording(str(tmp_path), {"test": True})
    for a in WALK[:3]:
        session.step(a)
    session.reset()
    session.step(WALK[0])
    files = session.stop_recording()
    assert len(files) == 2
    assert sorted(len(Dataset(tmp_path).load(i)) for i in range(2)) == [1, 3]
    session.close()


def test_dataset_start_context_reproduces_the_collected_episode(ckpt, tmp_path):
    collect(
        CollectConfig(out=str(tmp_path / "data"), policy="scripted", episodes=1, workers=1, max_steps=12),
        progress=False,
    )
    model = WorldModelEnv.from_checkpoint(ckpt)
    ctx = dataset_context(tmp_path / "data", 0, 4, model.resolution)
    ep = Dataset(tmp_path / "data").load(0)
    assert np.array_equal(ctx.frames, ep.frames[:4]) and np.array_equal(ctx.actions, ep.actions[:4])
    session = PlaySession(model, ctx)
    assert session.set_mirror(True) is None
    # The mirror replays the recorded episode's seed and actions: it shows the recorded frames.
    assert np.array_equal(session.mirror_frame, ep.frames[3])
    for t in range(3, 8):
        session.step(ep.actions[t])
        assert np.array_equal(session.mirror_frame, ep.frames[t + 1])
    session.close()
    script = tmp_path / "in.txt"
    script.write_text("3 fwd\n")
    args = [
        "play",
        "--ckpt",
        str(ckpt),
        "--start",
        str(tmp_path / "data"),
        "--headless",
        "--frames",
        "3",
        "--inputs",
        str(script),
        "--out",
        str(tmp_path / "d.mp4"),
        "--scale",
        "1",
    ]
    assert main(args) == 0 and read_video(tmp_path / "d.mp4").shape == (3, 120, 160, 3)
    assert main([*args, "--start-episode", "7"]) == 2
    with pytest.raises(DatasetError, match="out of range"):
        dataset_context(tmp_path / "data", 3, 4, model.resolution)
    with pytest.raises(DatasetError, match="the model needs a context of 50"):
        dataset_context(tmp_path / "data", 0, 50, model.resolution)


def test_display_composes_dream_mirror_and_hud():
    pygame.font.init()
    for name in ("nearest", "smooth", "scale2x"):
        d = Display((16, 12), scale=3, filter=name)
        canvas = pygame.Surface(d.canvas_size(mirror=True), depth=32)
        red, blue = np.zeros((12, 16, 3), np.uint8), np.zeros((12, 16, 3), np.uint8)
        red[..., 0], blue[..., 2] = 200, 200
        d.draw(canvas, red, blue, None)
        px = pygame.surfarray.array3d(canvas)  # (W, H, 3)
        assert px.shape == (96, 36, 3)
        assert tuple(px[10, 10]) == (200, 0, 0) and tuple(px[60, 10]) == (0, 0, 200)
    with pytest.raises(ValueError, match="--filter"):
        Display((16, 12), filter="bicubic")


def test_headless_cli_writes_n_frames(ckpt, tmp_path):
    script = tmp_path / "in.txt"
    script.write_text("3 fwd turn=3.5\nsteps 1\n2 fire\nreset\n4 left\n")
    out, stats = tmp_path / "run.mp4", tmp_path / "stats.json"
    code = main(
        [
            "play",
            "--ckpt",
            str(ckpt),
            "--headless",
            "--frames",
            "13",
            "--inputs",
            str(script),
            "--out",
            str(out),
            "--mirror",
            "--hud",
            "--stats",
            str(stats),
            "--record",
            "--record-dir",
            str(tmp_path / "rec"),
        ]
    )
    assert code == 0
    video = read_video(out)
    assert video.shape == (13, 240, 640, 3), "13 frames, dream and engine side by side at scale 2"
    s = json.loads(stats.read_text())
    assert s["frames"] == 13 and s["steps"] == 1 and s["mirror"] and s["rss_mb_end"] > 0
    # The script resets after frame 5 and after frame 13: the recording is cut there.
    lengths = sorted(len(ep) for _, ep in Dataset(tmp_path / "rec" / "dream").iter_episodes(strict=True))
    assert lengths == [5, 8]


def test_headless_engine_without_model(tmp_path):
    script = tmp_path / "in.txt"
    script.write_text("4 fwd\n")
    out = tmp_path / "e.mp4"
    assert (
        main(
            [
                "play",
                "--engine",
                "--headless",
                "--frames",
                "6",
                "--inputs",
                str(script),
                "--out",
                str(out),
                "--scale",
                "1",
            ]
        )
        == 0
    )
    assert read_video(out).shape == (6, 120, 160, 3)


def test_cli_errors_are_clear(ckpt, tmp_path, capsys, monkeypatch):
    import play.app

    monkeypatch.setattr(play.app, "DEFAULT_CKPT", tmp_path / "checkpoints" / "default")
    assert main(["play", "--headless", "--frames", "2", "--inputs", "x", "--out", "x.mp4"]) == 2
    assert "pass --ckpt" in capsys.readouterr().err
    assert main(["play", "--ckpt", str(tmp_path), "--headless"]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert main(["play", "--engine", "--headless", "--frames", "2", "--out", "x.mp4"]) == 2
    assert "--headless needs --inputs" in capsys.readouterr().err
    assert (
        main(
            [
                "play",
                "--engine",
                "--headless",
                "--frames",
                "2",
                "--inputs",
                str(tmp_path / "no.txt"),
                "--out",
                "x.mp4",
            ]
        )
        == 2
    )
    assert "no.txt: cannot read input script" in capsys.readouterr().err
    assert main(["play", "--ckpt", str(ckpt), "--steps", "99", "--headless"]) == 2
    assert "--steps: must be at least 1 and at most 8, got 99" in capsys.readouterr().err


def test_bench_reports_each_step_count(ckpt, capsys):
    assert main(["play", "--ckpt", str(ckpt), "--bench", "1,2", "--bench-frames", "5", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["steps"], r["mode"]) for r in rows] == [(1, "eager"), (2, "eager")]  # graphs only on CUDA
    for r in rows:
        assert r["fps"] > 0 and r["frame_ms"]["median"] > 0 and r["dit_ms"]["median"] > 0


def test_recording_cuts_where_the_real_game_ends(ckpt, tmp_path):
    """The basic scenario times out after 300 tics; the engine starts over and the recording is cut there."""
    model = WorldModelEnv.from_checkpoint(ckpt)
    engine = EngineBackend("basic")
    session = PlaySession(model, engine.start_context(model.context_len), engine=engine)
    session.set_mirror(True)
    session.start_recording(str(tmp_path), {})
    for _ in range(160):
        session.step(SPEC.noop())
    session.close()
    engine.close()
    assert engine.restarts == 1
    real = Dataset(tmp_path / "engine")
    lengths = [len(ep) for _, ep in real.iter_episodes(strict=True)]
    assert sum(lengths) == 160 and len(lengths) == 2
    # basic pays -1 a tic for living: every step's reward is the one that followed its action (none is
    # shifted to the next step, which would leave a 0 at the start of an episode).
    assert all(np.all(ep.rewards == -1.0 * engine.frame_skip) for _, ep in real.iter_episodes())
    assert sorted(len(ep) for _, ep in Dataset(tmp_path / "dream").iter_episodes()) == sorted(lengths)


def test_hud_of_the_first_frame_shows_no_nan_or_inf(ckpt, engine):
    from play.window import hud_lines

    session = model_session(ckpt, engine, mirror=True)
    first = " | ".join(hud_lines(session, 0.0, 17.5))
    assert "nan" not in first and "inf" not in first
    assert "model    -- ms" in first and "mirror PSNR -- (from the first step)" in first
    session.step(SPEC.noop())
    after = " | ".join(hud_lines(session, 17.5, 17.5))
    assert "nan" not in after and "mirror PSNR" in after and "over 1" in after
    session.close()
