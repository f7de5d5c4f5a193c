"""Keyboard and mouse to the action contract, read from the pygame event queue only.

Posted events (tests, scripts) never reach `pygame.key.get_pressed()`, so the pressed-key state is
kept here from KEYDOWN/KEYUP and MOUSEBUTTONDOWN/UP. Mouse x-motion of one frame becomes the turn
bin nearest to the turn rate it asks for; what the bin cannot express is carried to the next frame
(error diffusion), so slow mouse motion still turns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pygame

from data.actions import DEFAULT_ACTIONS, ActionSpec

FORWARD_KEYS = (pygame.K_w, pygame.K_UP)
BACKWARD_KEYS = (pygame.K_s, pygame.K_DOWN)
STRAFE_LEFT_KEYS = (pygame.K_a,)
STRAFE_RIGHT_KEYS = (pygame.K_d,)
TURN_LEFT_KEYS = (pygame.K_LEFT,)
TURN_RIGHT_KEYS = (pygame.K_RIGHT,)
RUN_KEYS = (pygame.K_LSHIFT, pygame.K_RSHIFT)
ATTACK_KEYS = (pygame.K_LCTRL, pygame.K_RCTRL)
USE_KEYS = (pygame.K_e, pygame.K_SPACE)
ATTACK_MOUSE_BUTTON = 1

# Doom's keyboard turn speeds: 640 angle units per tic walking, 1280 running (3.5 and 7 degrees).
ARROW_TURN_DEGREES = 3.5
ARROW_RUN_TURN_DEGREES = 7.0


@dataclass
class InputConfig:
    """How mouse motion becomes turning."""

    sensitivity: float = 0.15  # degrees of view turn per pixel of mouse x-motion
    invert: bool = False  # mouse right turns left


def nearest_bin(degrees_per_tic: float, spec: ActionSpec = DEFAULT_ACTIONS) -> int:
    """Index of the turn bin closest to a turn rate (degrees per tic, positive = right)."""
    return int(np.argmin(np.abs(np.asarray(spec.turn_degrees_per_tic) - degrees_per_tic)))


class InputState:
    """Pressed keys and mouse motion since the last frame; `action()` turns them into one action."""

    def __init__(
        self, frame_skip: int, config: InputConfig | None = None, spec: ActionSpec = DEFAULT_ACTIONS
    ):
        self.spec = spec
        self.frame_skip = frame_skip
        self.config = config or InputConfig()
        self.keys: set[int] = set()
        self.buttons: set[int] = set()
        self.mouse_dx = 0.0  # pixels of x-motion since the last action
        self.carry = 0.0  # degrees of turn asked for but not yet given
        self._largest = max(abs(d) for d in spec.turn_degrees_per_tic) * frame_skip  # degrees per frame
        self._action = spec.noop()

    def handle(self, event: pygame.event.Event) -> bool:
        """Take one event; True if it was a game input (movement, turning, attack, use)."""
        if event.type == pygame.KEYDOWN:
            self.keys.add(event.key)
        elif event.type == pygame.KEYUP:
            self.keys.discard(event.key)
        elif event.type == pygame.MOUSEBUTTONDOWN:
            self.buttons.add(event.button)
        elif event.type == pygame.MOUSEBUTTONUP:
            self.buttons.discard(event.button)
        elif event.type == pygame.MOUSEMOTION:
            self.mouse_dx += event.rel[0]
        elif event.type == pygame.WINDOWFOCUSLOST:  # key-ups while away never arrive
            self.release_all()
            return False
        else:
            return False
        return True

    def release_all(self) -> None:
        """Forget every held key and button (focus lost, reset)."""
        self.keys.clear()
        self.buttons.clear()
        self.mouse_dx = 0.0
        self.carry = 0.0

    def _held(self, keys: tuple[int, ...]) -> bool:
        return any(k in self.keys for k in keys)

    def action(self) -> np.ndarray:
        """The action of the coming frame; consumes the mouse motion gathered since the last call."""
        fwd, back = self._held(FORWARD_KEYS), self._held(BACKWARD_KEYS)
        left, right = self._held(STRAFE_LEFT_KEYS), self._held(STRAFE_RIGHT_KEYS)
        move = 1 if fwd and not back else 2 if back and not fwd else 0
        strafe = 1 if left and not right else 2 if right and not left else 0

        sign = -1.0 if self.config.invert else 1.0
        wanted = sign * self.mouse_dx * self.config.sensitivity + self.carry  # degrees this frame
        self.mouse_dx = 0.0
        turn = nearest_bin(wanted / self.frame_skip, self.spec)
        given = self.spec.turn_degrees_per_tic[turn] * self.frame_skip
        # The rest is carried to the next frame, unless the largest bin could not give what was asked:
        # a fast flick is clipped, not queued for the frames after it.
        self.carry = 0.0 if abs(wanted) > self._largest else wanted - given
        arrow = ARROW_RUN_TURN_DEGREES if self._held(RUN_KEYS) else ARROW_TURN_DEGREES
        t_left, t_right = self._held(TURN_LEFT_KEYS), self._held(TURN_RIGHT_KEYS)
        if t_left != t_right and turn == self.spec.turn_none:
            turn = nearest_bin(-arrow if t_left else arrow, self.spec)

        attack = int(self._held(ATTACK_KEYS) or ATTACK_MOUSE_BUTTON in self.buttons)
        use = int(self._held(USE_KEYS))
        self._action = self.spec.make(move=move, strafe=strafe, turn=turn, attack=attack, use=use)
        return self._action
