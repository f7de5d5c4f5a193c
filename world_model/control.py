"""Control and long-run stability, judged against the real engine.

The engine is the ground truth: a held-out episode written by `collect` knows its seed, so replaying
the seed and the recorded actions brings VizDoom to any of its frames, from where it can be fed other
inputs than the player's. world_model never imports the engine; the caller passes a factory.

- control: from a start frame, 16 steps in the dream and in the engine under (a) the recorded actions
  and (b) a counterfactual (turns mirrored, forward and back swapped). Action response = the dream's
  edge correlation with the engine's (a) frames when fed (a), minus the same when fed (b): positive
  when the dream follows the player. Counterfactual fidelity = dream (b) against engine (b). Turn sign:
  does the place probe see the dream turn the way the engine turned?
- stability: a long dream run from a real start under a scripted input, beside the engine fed the
  same input: when does the dream's structure fall to the floor for a second, and does it come back?
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from data.actions import ActionSpec
from data.dataset import Manifest
from world_model.metrics import scene_edge_corr
from world_model.probe import PlaceProbe, angle_diff
from world_model.rollout import Dreamer, HeldOut

CONTROL_STEPS = 16
TURN_THRESHOLD_DEG = 10.0  # engine turns smaller than this have no sign worth checking


class ReplayEngine(Protocol):
    """The real game, restartable at the episode's seed (play/engine.py EngineBackend has this face)."""

    variables: np.ndarray  # game variables after the last step, data.episode.VARIABLES order

    def reset(self, frames: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Begin the episode and replay actions[:len(frames) - 1]; returns the frame reached."""

    def step(self, action: np.ndarray) -> np.ndarray: ...


EngineFactory = Callable[[dict, Manifest], "ReplayEngine | None"]  # (episode meta, its manifest)


def counterfactual(actions: np.ndarray, spec: ActionSpec) -> np.ndarray:
    """Turns mirrored and forward/backward swapped; strafe, attack and use kept. (..., fields)."""
    out = np.array(actions, copy=True)
    f = spec.fields
    m, t = f.index("move"), f.index("turn")
    out[..., m] = np.array([0, 2, 1])[actions[..., m]]  # none, forward, backward -> none, backward, forward
    out[..., t] = len(spec.turn_degrees_per_tic) - 1 - actions[..., t]
    return out


def _angle_index() -> int:
    from data.episode import VARIABLES

    return VARIABLES.index("ANGLE")


def _turn(angles: np.ndarray) -> np.ndarray:
    """Summed wrapped per-step angle changes along the last axis (..., T+1) -> (...,) degrees."""
    return angle_diff(angles[..., 1:], angles[..., :-1]).sum(-1)


def control_cases(held: HeldOut, spec: ActionSpec, engines: dict[int, ReplayEngine], cases: int) -> list[int]:
    """Start frames (global indices) in episodes with an engine, where the counterfactual differs from
    the recorded actions in at least a quarter of the steps; evenly spread over those episodes."""
    per_ep: list[list[int]] = []
    k = held.windows.k
    for e in engines:
        s0, n = held.starts[e], held.lengths[e]
        ok = []
        for s in range(s0 + k - 1, s0 + n - CONTROL_STEPS - 1):
            a = held.actions[s : s + CONTROL_STEPS].numpy()
            if (counterfactual(a, spec) != a).any(1).sum() >= CONTROL_STEPS // 4:
                ok.append(s)
        if ok:
            per_ep.append(ok)
    chosen: list[int] = []
    for j in range(cases):
        if not per_ep:
            break
        ok = per_ep[j % len(per_ep)]
        chosen.append(ok[(j // len(per_ep) * 7919 + len(ok) // 2) % len(ok)])
    return sorted(set(chosen))


def evaluate_control(
    dreamer: Dreamer,
    held: HeldOut,
    probe: PlaceProbe | None,
    engines: dict[int, ReplayEngine],
    spec: ActionSpec,
    cases: int,
    seed: int,
) -> dict:
    starts = control_cases(held, spec, engines, cases)
    if not starts:
        return {
            "skipped": "no held-out episode with a known seed and a segment that the counterfactual changes"
        }
    ai = _angle_index()
    start_t = torch.tensor(starts)
    rec = held.actions[start_t[:, None] + torch.arange(CONTROL_STEPS)]  # (B, T, fields)
    cf = torch.from_numpy(counterfactual(rec.numpy(), spec))
    engine_a = held.frames[start_t.numpy()[:, None] + np.arange(1, CONTROL_STEPS + 1)]  # (B, T, H, W, 3)
    engine_b, exact, angles_a, angles_b = [], [], [], []
    ep_of = held.episode_of(start_t.numpy())
    for s, e, acts in tqdm(list(zip(starts, ep_of, cf.numpy())), desc="eval control (engine)"):
        engine = engines[int(e)]
        s0 = held.starts[e]
        frame = engine.reset(held.frames[s0 : s + 1], held.actions[s0 : s + 1].numpy())
        exact.append(bool(np.array_equal(frame, held.frames[s])))
        ang = [float(engine.variables[ai])]
        frames = []
        for a in acts:
            frames.append(engine.step(a))
            ang.append(float(engine.variables[ai]))
        engine_b.append(np.stack(frames))
        angles_b.append(ang)
        angles_a.append(held.place[s : s + CONTROL_STEPS + 1, 2])
    engine_b = np.stack(engine_b)  # (B, T, H, W, 3)
    context, led_in = held.start_context(start_t)
    dream_a = np.stack(list(dreamer.rollout(context, led_in, rec, seed)), 1)  # (B, T, H, W, 3)
    dream_b = np.stack(list(dreamer.rollout(context, led_in, cf, seed)), 1)

    def corr(x: np.ndarray, y: np.ndarray) -> np.ndarray:  # (B, T, H, W, 3) twice -> (B, T)
        return scene_edge_corr(x.reshape(-1, *x.shape[2:]), y.reshape(-1, *y.shape[2:])).reshape(x.shape[:2])

    fed_a, fed_b = corr(dream_a, engine_a), corr(dream_b, engine_a)  # (B, T)
    fidelity = corr(dream_b, engine_b)
    start_frames = np.repeat(held.frames[start_t.numpy()][:, None], CONTROL_STEPS, 1)
    report = {
        "cases": len(starts),
        "steps": CONTROL_STEPS,
        "replay_exact": float(np.mean(exact)),
        "action_response": float((fed_a - fed_b).mean()),
        "edge_corr_fed_recorded": float(fed_a.mean()),
        "edge_corr_fed_counterfactual": float(fed_b.mean()),
        "counterfactual_fidelity": {
            "model": float(fidelity.mean()),
            # a dream that ignored the input and played the recorded actions would score this
            "engine_recorded": float(corr(engine_a, engine_b).mean()),
            "copy_last": float(corr(start_frames, engine_b).mean()),
        },
    }
    if probe is not None:
        report["turn_sign"] = _turn_sign(
            probe,
            held.frames[start_t.numpy()],
            dream_a,
            dream_b,
            engine_a,
            engine_b,
            np.array(angles_a),
            np.array(angles_b),
        )
    return report


def _turn_sign(probe, start, dream_a, dream_b, engine_a, engine_b, angles_a, angles_b) -> dict:
    """Share of cases where the probe's summed angle change over the dream has the engine's sign."""

    start_angle = probe.predict(start)[:, 2:3]  # (B, 1), read once for all four sequences

    def probe_turn(frames: np.ndarray) -> np.ndarray:  # (B, T, H, W, 3) -> (B,)
        b, t = frames.shape[:2]
        ang = probe.predict(frames.reshape(-1, *frames.shape[2:]))[:, 2].reshape(b, t)
        return _turn(np.concatenate([start_angle, ang], 1))

    truth = np.concatenate([_turn(angles_a), _turn(angles_b)])
    dream = np.concatenate([probe_turn(dream_a), probe_turn(dream_b)])
    engine = np.concatenate([probe_turn(engine_a), probe_turn(engine_b)])
    turning = np.abs(truth) >= TURN_THRESHOLD_DEG
    if not turning.any():
        return {"cases": 0}
    agree = np.sign(dream[turning]) == np.sign(truth[turning])
    return {
        "cases": int(turning.sum()),
        "model": float(agree.mean()),
        # the probe read off the engine's own frames: the most a dream can score with this probe
        "engine_frames": float((np.sign(engine[turning]) == np.sign(truth[turning])).mean()),
    }


def scripted_inputs(spec: ActionSpec, frames: int) -> np.ndarray:
    """A walk with turns both ways, strafes, doors and fire, repeating every 140 steps: (frames, fields)."""
    f = spec.fields
    pattern: list[dict[str, int]] = []
    n_turn = len(spec.turn_degrees_per_tic)
    for block in (
        [{"move": 1}] * 30,
        [{"turn": n_turn - 2}] * 12,
        [{"move": 1, "use": 1}] * 4,
        [{"move": 1}] * 20,
        [{"turn": 1}] * 18,
        [{"strafe": 1}] * 10,
        [{"move": 2}] * 10,
        [{"move": 1, "turn": n_turn - 3, "attack": 1}] * 16,
        [{"strafe": 2}] * 10,
        [{}] * 10,
    ):
        pattern += block
    base = spec.noop()
    rows = []
    for i in range(frames):
        row = base.copy()
        for name, v in pattern[i % len(pattern)].items():
            row[f.index(name)] = v
        rows.append(row)
    return np.stack(rows).astype(np.int64)


def evaluate_stability(
    dreamer: Dreamer,
    held: HeldOut,
    engines: dict[int, ReplayEngine],
    spec: ActionSpec,
    frames: int,
    floor: float,
    fps: float,
    seed: int,
) -> dict:
    """A `frames`-long dream from the first context of an episode with an engine, beside the engine."""
    if not engines:
        return {"skipped": "no held-out episode with a known seed to start the engine from"}
    e = next(iter(engines))
    k = held.windows.k
    s0, s = held.starts[e], held.starts[e] + min(k, held.lengths[e]) - 1
    engine = engines[e]
    engine.reset(held.frames[s0 : s + 1], held.actions[s0 : s + 1].numpy())
    inputs = scripted_inputs(spec, frames)
    context, led_in = held.start_context(torch.tensor([s]))
    corr = np.zeros(frames)
    dream = dreamer.rollout(context, led_in, torch.from_numpy(inputs)[None], seed)
    samples, chunk = [], []
    for t, dreamed in enumerate(tqdm(dream, total=frames, desc="eval stability")):
        real = engine.step(inputs[t])
        chunk.append((dreamed[0], real))
        if t % max(1, frames // 8) == 0:
            samples.append((t, real, dreamed[0]))
        if (
            len(chunk) == 64 or t == frames - 1
        ):  # score in batches: one frame at a time costs more than the engine
            d, r = (np.stack(x) for x in zip(*chunk))
            corr[t + 1 - len(chunk) : t + 1] = scene_edge_corr(d, r)
            chunk = []
    second = max(1, int(round(fps)))
    low = corr <= floor
    # the first frame from which a whole second stays at or under the floor
    run = np.convolve(low.astype(int), np.ones(second, int), "valid") == second
    lost = int(np.argmax(run)) if run.any() else None
    recovered, later_above = None, None
    if lost is not None:
        # after that: does a whole second come back above the floor, and what share of later seconds do
        rest = corr[lost + second :]
        high = np.convolve((rest > floor).astype(int), np.ones(second, int), "valid") == second
        recovered = bool(high.any())
        secs = rest[: len(rest) // second * second].reshape(-1, second).mean(1)
        later_above = float((secs > floor).mean()) if len(secs) else 0.0
    seg = max(1, int(round(10 * fps)))
    return {
        "frames": frames,
        "seconds_of_play": frames / fps,
        "floor": floor,
        "mean_edge_corr": float(corr.mean()),
        "first_lost_frame": lost,
        "first_lost_second": None if lost is None else lost / fps,
        "recovered": recovered,
        "later_seconds_above_floor": later_above,  # share of the whole seconds after it, by their mean
        "share_above_floor": float((~low).mean()),
        "edge_corr_per_10s": [float(corr[i : i + seg].mean()) for i in range(0, frames, seg)],
        "_samples": samples,
    }
