"""Scripted input for headless play: a small text format, one run of frames per line.

    # comment (also after a line)
    <frames> <token> ...        hold one action for <frames> frames
    reset                       back to the start context (R in the window)
    steps <n>                   set the denoising steps ([ and ] in the window)

An action line names what is held, in any order; nothing named means idle:

    fwd | back                  move
    left | right                strafe
    turn=<degrees per tic>      nearest turn bin of the contract (positive = right), e.g. turn=-3.5
    fire                        attack
    use                         use

or gives the five integer fields of the action contract (move strafe turn attack use), e.g.
`10 1 0 3 0 0`. When the script is shorter than the frames asked for, it starts again from the top.
See play/example_inputs.txt.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.actions import DEFAULT_ACTIONS, ActionContractError, ActionSpec
from play.inputs import nearest_bin

MAX_SCRIPT_BYTES = 1_000_000  # an input script is a few lines; more is a wrong file
SHOWN_CHARS = 60  # of a bad line, in an error message


def _shown(text: str) -> str:
    text = text.strip()
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + f"... ({len(text):,} characters)"


class ScriptError(ValueError):
    """An input script is unreadable or malformed; the message names the file and line."""


@dataclass(frozen=True)
class Command:
    """One entry of a script: an action held for `frames` frames, or a `reset` / `steps` command."""

    kind: str  # "action" | "reset" | "steps"
    frames: int = 0
    action: np.ndarray | None = None
    value: int = 0


def _action(tokens: list[str], spec: ActionSpec, where: str) -> np.ndarray:
    if len(tokens) == spec.num_fields and all(t.lstrip("-").isdigit() for t in tokens):
        a = np.array([int(t) for t in tokens], np.int64)
        try:
            spec.validate(a, where)
        except ActionContractError as e:
            raise ScriptError(str(e)) from e
        return a
    fields = {"move": 0, "strafe": 0, "turn": spec.turn_none, "attack": 0, "use": 0}
    named = {
        "fwd": ("move", 1),
        "back": ("move", 2),
        "left": ("strafe", 1),
        "right": ("strafe", 2),
        "fire": ("attack", 1),
        "use": ("use", 1),
    }
    for tok in tokens:
        if tok in named:
            key, value = named[tok]
            fields[key] = value
        elif tok.startswith("turn="):
            try:
                rate = float(tok[5:])
            except ValueError:
                rate = math.nan
            if not math.isfinite(rate):
                raise ScriptError(f"{where}: bad turn rate '{_shown(tok)}' (want turn=<degrees per tic>)")
            fields["turn"] = nearest_bin(rate, spec)
        else:
            raise ScriptError(
                f"{where}: unknown token '{_shown(tok)}' (want fwd back left right turn=<deg> fire use, "
                f"or {spec.num_fields} integer fields)"
            )
    return spec.make(**fields)


def parse_script(text: str, source: str = "<script>", spec: ActionSpec = DEFAULT_ACTIONS) -> list[Command]:
    """Parse script text into commands; raises ScriptError naming `source` and the line."""
    commands = []
    for number, line in enumerate(text.splitlines(), 1):
        tokens = line.split("#", 1)[0].split()
        if not tokens:
            continue
        where = f"{source}:{number}"
        head = tokens[0].lower()
        if head == "reset" and len(tokens) == 1:
            commands.append(Command("reset"))
        elif head == "steps":
            if len(tokens) != 2 or not tokens[1].isdigit() or int(tokens[1]) < 1:
                raise ScriptError(f"{where}: want 'steps <n>' with n >= 1, got '{_shown(line)}'")
            commands.append(Command("steps", value=int(tokens[1])))
        elif head.isdigit():
            if int(head) < 1:
                raise ScriptError(f"{where}: a run must last at least one frame, got {head}")
            commands.append(
                Command(
                    "action", frames=int(head), action=_action([t.lower() for t in tokens[1:]], spec, where)
                )
            )
        else:
            raise ScriptError(
                f"{where}: a line starts with a frame count, 'reset' or 'steps', got '{_shown(line)}'"
            )
    if not any(c.kind == "action" for c in commands):
        raise ScriptError(f"{source}: no action lines; nothing to play")
    return commands


def read_script(path: str | Path, spec: ActionSpec = DEFAULT_ACTIONS) -> list[Command]:
    """Parse an input script file; at most MAX_SCRIPT_BYTES are read (a device or a huge file is refused)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SCRIPT_BYTES + 1)
        text = data.decode()
    except OSError as e:
        raise ScriptError(f"{path}: cannot read input script ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise ScriptError(f"{path}: not a text file ({e.reason} at byte {e.start})") from e
    if len(data) > MAX_SCRIPT_BYTES:
        raise ScriptError(f"{path}: more than {MAX_SCRIPT_BYTES:,} bytes; not an input script")
    return parse_script(text, str(path), spec)


def per_frame(commands: list[Command], frames: int) -> Iterator[tuple[list[Command], np.ndarray]]:
    """Yield, for each of `frames` frames, the commands to apply before it and the action to send."""
    pending: list[Command] = []
    n = 0
    while True:
        for c in commands:
            if c.kind != "action":
                pending.append(c)
                continue
            for _ in range(c.frames):
                if n == frames:
                    return
                yield pending, c.action
                pending = []
                n += 1
