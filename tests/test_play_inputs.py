"""Keyboard and mouse events to actions, and the headless input script format."""

import numpy as np
import pygame
import pytest

from data.actions import DEFAULT_ACTIONS as SPEC
from play.inputs import InputConfig, InputState, nearest_bin
from play.script import ScriptError, parse_script, per_frame, read_script

TURN = {deg: i for i, deg in enumerate(SPEC.turn_degrees_per_tic)}


@pytest.fixture
def queue():
    """The real pygame event queue (SDL dummy driver); yields a function that posts and drains it."""
    pygame.display.init()
    pygame.display.set_mode((64, 48))
    pygame.event.clear()

    def post_and_read(state: InputState, *events: pygame.event.Event) -> np.ndarray:
        for e in events:
            pygame.event.post(e)
        for e in pygame.event.get():
            state.handle(e)
        return state.action()

    yield post_and_read
    pygame.display.quit()


def key(down: bool, k: int) -> pygame.event.Event:
    return pygame.event.Event(pygame.KEYDOWN if down else pygame.KEYUP, key=k, mod=0, unicode="", scancode=0)


def motion(dx: int, dy: int = 0) -> pygame.event.Event:
    return pygame.event.Event(pygame.MOUSEMOTION, rel=(dx, dy), pos=(0, 0), buttons=(0, 0, 0))


def click(down: bool, button: int = 1) -> pygame.event.Event:
    return pygame.event.Event(
        pygame.MOUSEBUTTONDOWN if down else pygame.MOUSEBUTTONUP, button=button, pos=(0, 0)
    )


def test_keys_become_actions(queue):
    s = InputState(frame_skip=2)
    assert np.array_equal(queue(s), SPEC.noop())
    assert np.array_equal(queue(s, key(True, pygame.K_w)), SPEC.make(move=1))
    assert np.array_equal(queue(s), SPEC.make(move=1)), "a held key stays held with no new events"
    assert np.array_equal(queue(s, key(True, pygame.K_s)), SPEC.make()), "forward and back cancel"
    assert np.array_equal(queue(s, key(False, pygame.K_w)), SPEC.make(move=2))
    assert np.array_equal(queue(s, key(False, pygame.K_s), key(True, pygame.K_UP)), SPEC.make(move=1))
    assert np.array_equal(queue(s, key(False, pygame.K_UP), key(True, pygame.K_a)), SPEC.make(strafe=1))
    assert np.array_equal(queue(s, key(False, pygame.K_a), key(True, pygame.K_d)), SPEC.make(strafe=2))
    assert np.array_equal(queue(s, key(False, pygame.K_d), key(True, pygame.K_LCTRL)), SPEC.make(attack=1))
    assert np.array_equal(queue(s, key(False, pygame.K_LCTRL), click(True)), SPEC.make(attack=1))
    assert np.array_equal(queue(s, click(False), key(True, pygame.K_e)), SPEC.make(use=1))
    assert np.array_equal(queue(s, key(False, pygame.K_e), key(True, pygame.K_SPACE)), SPEC.make(use=1))
    assert np.array_equal(queue(s, key(False, pygame.K_SPACE)), SPEC.noop())
    both = queue(s, key(True, pygame.K_w), key(True, pygame.K_d), click(True), key(True, pygame.K_e))
    assert np.array_equal(both, SPEC.make(move=1, strafe=2, attack=1, use=1))
    s.release_all()
    assert np.array_equal(s.action(), SPEC.noop())


def test_arrow_keys_turn_at_a_fixed_bin(queue):
    s = InputState(frame_skip=2)
    assert queue(s, key(True, pygame.K_RIGHT))[2] == TURN[3.5]
    assert queue(s, key(True, pygame.K_LSHIFT))[2] == TURN[7.0], "shift runs: Doom's fast turn"
    assert (
        queue(s, key(False, pygame.K_LSHIFT), key(False, pygame.K_RIGHT), key(True, pygame.K_LEFT))[2]
        == TURN[-3.5]
    )
    assert queue(s, key(False, pygame.K_LEFT))[2] == SPEC.turn_none


def test_mouse_motion_turns_to_the_nearest_bin(queue):
    s = InputState(frame_skip=2, config=InputConfig(sensitivity=0.1))
    # 70 px * 0.1 deg/px = 7 degrees this frame = 3.5 degrees per tic at frame_skip 2: turn right.
    assert queue(s, motion(30), motion(40))[2] == TURN[3.5], "motion of one frame adds up"
    assert queue(s)[2] == SPEC.turn_none, "motion is used once"
    assert queue(s, motion(-140))[2] == TURN[-7.0]
    assert queue(s, motion(-5000))[2] == TURN[-7.0], "a flick beyond the largest bin is clipped"
    assert queue(s)[2] == SPEC.turn_none, "and not queued for later frames"
    assert queue(s, motion(0, 300))[2] == SPEC.turn_none, "vertical motion does not turn"
    inverted = InputState(frame_skip=2, config=InputConfig(sensitivity=0.1, invert=True))
    assert queue(inverted, motion(70))[2] == TURN[-3.5]


def test_slow_mouse_motion_still_turns():
    """Motion below the smallest bin is carried over frames instead of lost (error diffusion)."""
    s = InputState(frame_skip=2, config=InputConfig(sensitivity=0.1))
    turns = []
    for _ in range(20):  # 5 px = 0.5 degree a frame, 0.25 per tic: less than the 1-degree bin
        s.handle(motion(5))
        turns.append(SPEC.turn_degrees_per_tic[s.action()[2]] * 2)
    assert sum(turns) == pytest.approx(20 * 0.5, abs=2.0)
    assert set(turns) <= {0.0, 2.0}


def test_nearest_bin():
    assert nearest_bin(0.2) == SPEC.turn_none
    assert nearest_bin(2.0) == TURN[1.0]
    assert nearest_bin(-100) == TURN[-7.0]


def test_script_named_and_numeric_lines(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("# demo\n3 fwd turn=3.4 fire  # comment\n\nsteps 3\n2 1 2 0 0 1\nreset\n1\n")
    cmds = read_script(path)
    assert [c.kind for c in cmds] == ["action", "steps", "action", "reset", "action"]
    assert cmds[0].frames == 3 and np.array_equal(cmds[0].action, SPEC.make(move=1, turn=TURN[3.5], attack=1))
    assert cmds[1].value == 3
    assert np.array_equal(cmds[2].action, SPEC.make(move=1, strafe=2, turn=0, use=1))
    assert np.array_equal(cmds[4].action, SPEC.noop())
    frames = list(per_frame(cmds, 10))
    assert len(frames) == 10, "a short script starts again from the top"
    assert [len(p) for p, _ in frames] == [0, 0, 0, 1, 0, 1, 0, 0, 0, 1]
    assert [p[0].kind for p, _ in frames if p] == ["steps", "reset", "steps"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("3 jump\n", "in.txt:1: unknown token 'jump'"),
        ("\n2 1 0 9 0 0\n", "in.txt:2: values out of range"),
        ("0 fwd\n", "in.txt:1: a run must last at least one frame"),
        ("steps 0\n", "in.txt:1: want 'steps <n>'"),
        ("fwd 3\n", "in.txt:1: a line starts with a frame count"),
        ("3 turn=left\n", "bad turn rate"),
        ("reset\n", "no action lines"),
    ],
)
def test_script_errors_name_file_and_line(text, message):
    with pytest.raises(ScriptError, match=message):
        parse_script(text, "in.txt")


def test_missing_script_is_a_clear_error(tmp_path):
    with pytest.raises(ScriptError, match="nope.txt: cannot read input script"):
        read_script(tmp_path / "nope.txt")


def test_example_script_parses():
    from play.app import EXAMPLE_INPUTS

    assert sum(c.frames for c in read_script(EXAMPLE_INPUTS)) > 100


def test_focus_lost_releases_held_keys(queue):
    s = InputState(frame_skip=2)
    assert queue(s, key(True, pygame.K_w), click(True))[0] == 1
    assert np.array_equal(queue(s, pygame.event.Event(pygame.WINDOWFOCUSLOST, window=None)), SPEC.noop())
