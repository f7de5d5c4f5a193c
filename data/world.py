"""Worlds: what a model was trained to dream (DESIGN.md, contract 3).

A world is a scenario and its map, the frame size, the frame_skip and the action contract. It is read off a
dataset's manifests, recorded in every checkpoint, and checked wherever a model meets frames it did not
dream: held-out data, probe data, a start context, an engine. A mismatch is one line naming both worlds,
never a silent comparison of one world's dream with another's frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from data.actions import ActionContractError, ActionSpec

# Checkpoints made before worlds were recorded were all trained on Freedoom E1M1.
LEGACY_SCENARIO, LEGACY_MAP = "e1m1", "E1M1"


class WorldMismatch(ValueError):
    """A model and the frames it meets come from different worlds; the message names both."""


@dataclass(frozen=True)
class World:
    scenario: str
    map: str
    resolution: tuple[int, int]  # (width, height) of the frames
    frame_skip: int  # Doom tics per frame
    action_contract: dict = field(compare=False, hash=False, repr=False)

    def __str__(self) -> str:
        w, h = self.resolution
        return f"{self.scenario} ({self.map}) at {w}x{h}, frame_skip {self.frame_skip}"

    def to_dict(self) -> dict:
        return {
            "scenario": self.scenario,
            "map": self.map,
            "resolution": list(self.resolution),
            "frame_skip": self.frame_skip,
            "action_contract": self.action_contract,
        }

    @classmethod
    def from_dict(cls, d: dict, where: str) -> World:
        try:
            w, h = (int(x) for x in d["resolution"])
            out = cls(
                str(d["scenario"]), str(d["map"]), (w, h), int(d["frame_skip"]), dict(d["action_contract"])
            )
        except (KeyError, TypeError, ValueError) as e:
            raise WorldMismatch(f"{where}: malformed world {d!r} ({e})") from e
        ActionSpec.from_dict(out.action_contract, where)
        return out

    @classmethod
    def of_manifest(cls, m) -> World:
        """The world of a dataset shard (a data.dataset.Manifest)."""
        w, h = m.resolution
        return cls(m.scenario, m.map, (int(w), int(h)), int(m.frame_skip), dict(m.action_contract))

    @classmethod
    def of_checkpoint(cls, config: dict, where: str) -> World:
        """The world a checkpoint's config.json records; one saved before worlds were recorded is E1M1 at the
        resolution and frame_skip it names (160x120, frame_skip 2 for every such model)."""
        if "world" in config:
            return cls.from_dict(config["world"], where)
        try:
            w, h = (int(x) for x in config.get("resolution", (160, 120)))
            return cls(
                LEGACY_SCENARIO,
                LEGACY_MAP,
                (w, h),
                int(config.get("frame_skip", 2)),
                config["action_contract"],
            )
        except (KeyError, TypeError, ValueError) as e:
            raise WorldMismatch(f"{where}: malformed world fields ({e})") from e

    def differences(self, other: World) -> list[str]:
        """The fields where `other` differs from this world, by name."""
        out = [
            k
            for k in ("scenario", "map", "resolution", "frame_skip")
            if getattr(self, k) != getattr(other, k)
        ]
        try:
            ActionSpec.from_dict(self.action_contract).check_compatible(other.action_contract, "")
        except ActionContractError:
            out.append("action contract")
        return out

    def check(self, other: World, mine: str, theirs: str) -> None:
        """Refuse `other` (what `theirs` names: a dataset, an engine) unless it is this world, the one `mine`
        (a checkpoint) dreams: one line naming both."""
        diff = self.differences(other)
        if diff:
            raise WorldMismatch(
                f"{theirs} is {other}, but {mine} dreams {self}: another world ({', '.join(diff)} differ)"
            )


def world_of_shards(manifests: dict, root: str) -> World:
    """The one world of a dataset's shards {folder: Manifest}; shards of several worlds are refused."""
    worlds: dict[World, list] = {}
    for folder, m in manifests.items():
        worlds.setdefault(World.of_manifest(m), []).append(folder)
    if len(worlds) > 1:
        parts = "; ".join(f"{w} ({len(f)} shard(s), e.g. {f[0]})" for w, f in worlds.items())
        raise WorldMismatch(f"{root}: shards of {len(worlds)} worlds: {parts}; a model learns one world")
    return next(iter(worlds))
