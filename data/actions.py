"""The action contract: one action vocabulary for the agent, the dataset, the world model and the player.

A step's action is a small integer vector, one field per control a person has:

    move    0 none, 1 forward, 2 backward
    strafe  0 none, 1 left, 2 right
    turn    index into TURN_DEGREES_PER_TIC (the middle bin is no turn)
    attack  0/1
    use     0/1

Its version and field sizes travel with every dataset and checkpoint; a mismatch is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ACTION_VERSION = 1
FIELDS: tuple[str, ...] = ("move", "strafe", "turn", "attack", "use")

# Doom's own keyboard turn speeds are 640 and 1280 angle units per tic (3.5 and 7 degrees); the
# smallest bin gives fine aiming. VizDoom: a positive TURN_LEFT_RIGHT_DELTA turns right.
TURN_DEGREES_PER_TIC: tuple[float, ...] = (-7.0, -3.5, -1.0, 0.0, 1.0, 3.5, 7.0)

# VizDoom buttons, in the order of the button vector `to_buttons` returns.
BUTTONS: tuple[str, ...] = (
    "MOVE_FORWARD",
    "MOVE_BACKWARD",
    "MOVE_LEFT",
    "MOVE_RIGHT",
    "TURN_LEFT_RIGHT_DELTA",
    "ATTACK",
    "USE",
)


class ActionContractError(ValueError):
    """Two parts of the system disagree about what an action vector means."""


@dataclass(frozen=True)
class ActionSpec:
    """The action contract: field names, their sizes, and the turn rate of each turn bin."""

    version: int = ACTION_VERSION
    fields: tuple[str, ...] = FIELDS
    turn_degrees_per_tic: tuple[float, ...] = field(default=TURN_DEGREES_PER_TIC)

    def __post_init__(self) -> None:
        n = len(self.turn_degrees_per_tic)
        if n % 2 != 1 or self.turn_degrees_per_tic[n // 2] != 0.0:
            raise ActionContractError(
                f"turn bins must be odd in number and centred on 0, got {self.turn_degrees_per_tic}"
            )

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of values of each field."""
        per_field = {"move": 3, "strafe": 3, "turn": len(self.turn_degrees_per_tic), "attack": 2, "use": 2}
        return tuple(per_field[f] for f in self.fields)

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    @property
    def turn_none(self) -> int:
        """Index of the no-turn bin."""
        return len(self.turn_degrees_per_tic) // 2

    def noop(self) -> np.ndarray:
        """The action that does nothing."""
        a = np.zeros(self.num_fields, dtype=np.int64)
        a[self.fields.index("turn")] = self.turn_none
        return a

    def make(
        self, move: int = 0, strafe: int = 0, turn: int | None = None, attack: int = 0, use: int = 0
    ) -> np.ndarray:
        """An action vector from named fields; `turn` is a bin index (default: no turn)."""
        values = {
            "move": move,
            "strafe": strafe,
            "turn": self.turn_none if turn is None else turn,
            "attack": attack,
            "use": use,
        }
        a = np.array([values[f] for f in self.fields], dtype=np.int64)
        self.validate(a)
        return a

    def validate(self, actions: np.ndarray, where: str = "actions") -> None:
        """Raise ActionContractError unless `actions` (..., fields) holds valid values."""
        actions = np.asarray(actions)
        if actions.shape[-1:] != (self.num_fields,):
            raise ActionContractError(
                f"{where}: last dimension must be {self.num_fields} fields, got shape {actions.shape}"
            )
        if actions.size and (
            actions.min() < 0 or np.any(actions.max(axis=tuple(range(actions.ndim - 1))) >= self.sizes)
        ):
            raise ActionContractError(f"{where}: values out of range for field sizes {self.sizes}")

    def to_buttons(self, action: np.ndarray) -> list[float]:
        """One action to a VizDoom button vector (order: BUTTONS)."""
        move, strafe, turn, attack, use = (int(action[self.fields.index(f)]) for f in FIELDS)
        return [
            float(move == 1),
            float(move == 2),
            float(strafe == 1),
            float(strafe == 2),
            self.turn_degrees_per_tic[turn],
            float(attack),
            float(use),
        ]

    def to_dict(self) -> dict:
        """JSON form, written into every dataset manifest and checkpoint."""
        return {
            "version": self.version,
            "fields": list(self.fields),
            "sizes": list(self.sizes),
            "turn_degrees_per_tic": list(self.turn_degrees_per_tic),
        }

    @classmethod
    def from_dict(cls, d: dict, where: str = "action contract") -> ActionSpec:
        try:
            spec = cls(
                version=int(d["version"]),
                fields=tuple(d["fields"]),
                turn_degrees_per_tic=tuple(float(x) for x in d["turn_degrees_per_tic"]),
            )
        except (KeyError, TypeError) as e:
            raise ActionContractError(f"{where}: malformed action contract {d!r} ({e})") from e
        if list(spec.sizes) != list(d.get("sizes", spec.sizes)):
            raise ActionContractError(f"{where}: sizes {d.get('sizes')} disagree with fields {spec.fields}")
        return spec

    def check_compatible(self, other: ActionSpec | dict, where: str) -> None:
        """Raise a clear error if `other` is not this exact contract."""
        if isinstance(other, dict):
            other = ActionSpec.from_dict(other, where)
        if other != self:
            raise ActionContractError(
                f"{where}: action contract mismatch: it has version {other.version}, fields {other.fields}, "
                f"sizes {other.sizes}, turn bins {other.turn_degrees_per_tic}; "
                f"expected version {self.version}, "
                f"fields {self.fields}, sizes {self.sizes}, turn bins {self.turn_degrees_per_tic}"
            )

    def gym_space(self):
        """The gymnasium MultiDiscrete space PPO acts in."""
        from gymnasium.spaces import MultiDiscrete

        return MultiDiscrete(np.array(self.sizes, dtype=np.int64))

    def describe(self, action: np.ndarray) -> str:
        """A short human-readable form, e.g. 'fwd L turn+3.5 fire'."""
        move, strafe, turn, attack, use = (int(action[self.fields.index(f)]) for f in FIELDS)
        parts = [("", "fwd", "back")[move], ("", "strafeL", "strafeR")[strafe]]
        deg = self.turn_degrees_per_tic[turn]
        parts.append(f"turn{deg:+g}" if deg else "")
        parts += ["fire" if attack else "", "use" if use else ""]
        return " ".join(p for p in parts if p) or "idle"


DEFAULT_ACTIONS = ActionSpec()
