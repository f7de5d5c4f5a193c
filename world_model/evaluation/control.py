"""Control and long-run stability, judged against the real engine.

The engine is the ground truth: a held-out episode written by `collect` knows its seed, so replaying
the seed and the recorded actions brings VizDoom to any of its frames, from where it can be fed other
inputs than the player's. world_model never imports the engine; the caller passes a factory.

- control: from a start frame, 16 steps in the dream and in the engine under (a) the recorded actions
  and (b) a counterfactual (turns mirrored, forward and back swapped). Action response = the dream's
  edge correlation with the engine's (a) frames when fed (a), minus the same when fed (b): positive
  when the dream follows the player. Counterfactual fidelity = dream (b) against engine (b). Turn sign:
  does the place probe see the dream turn the way the engine turned?
- control by image motion: how far the view moves sideways from one frame to the next
  (motion.py), in the dream beside the engine. It reads a turn in every world, including the
  round arena whose uniform wall leaves the place probe unable to read the angle. One step ahead from real
  starts and over the 16-step cases: the dream's motion against the engine's under the recorded actions
  (their correlation, and how often the dream moves the engine's way), and under forced fast right and
  fast left turns with nothing else pressed: turn gain = (dream right - left) / (engine right - left), 1
  for a dream that turns as far as the engine, 0 for one that ignores the turn; and the share of starts
  whose dream right-minus-left has the engine's sign.
- stability: a long dream run from a real start under a scripted input, beside the engine fed the
  same input: when does the dream's structure fall to the floor for a second, and does it come back?
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from data.actions import ActionSpec
from data.dataset import Manifest
from world_model.evaluation.hold import HoldMeter
from world_model.evaluation.metrics import scene_edge_corr
from world_model.evaluation.motion import view_shift
from world_model.evaluation.probe import PlaceProbe, angle_diff
from world_model.evaluation.rollout import Dreamer, HeldOut

CONTROL_STEPS = 16
TURN_THRESHOLD_DEG = 10.0  # engine turns smaller than this have no sign worth checking
MIN_PX = 2.0  # a dream's right-minus-left motion counts as a turn the right way above this (px)
TURNING_PX = 10.0  # engine motion over a step or a case smaller than this has no sign worth checking
SHEET_TURN_STEPS = (1, 4)  # steps of a held fast turn the contact sheet shows
PROBE_READS_WORLD = 0.8  # the probe reads a world's angle if it signs the engine's own turns this well


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
    motion: bool = True,
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
    left_bin, right_bin = fast_turns(spec)
    forced = {"right": turn_only(spec, right_bin), "left": turn_only(spec, left_bin)}
    engine_b, exact, angles_a, angles_b = [], [], [], []
    engine_forced: dict[str, list[np.ndarray]] = {name: [] for name in forced}
    motion_s = 0.0  # what control by motion adds: the forced-turn engine runs and dreams, and the estimator
    ep_of = held.episode_of(start_t.numpy())
    for s, e, acts in tqdm(list(zip(starts, ep_of, cf.numpy())), desc="eval control (engine)"):
        engine = engines[int(e)]
        s0 = held.starts[e]
        replay = (held.frames[s0 : s + 1], held.actions[s0 : s + 1].numpy())
        frame = engine.reset(*replay)
        exact.append(bool(np.array_equal(frame, held.frames[s])))
        ang = [float(engine.variables[ai])]
        frames = []
        for a in acts:
            frames.append(engine.step(a))
            ang.append(float(engine.variables[ai]))
        engine_b.append(np.stack(frames))
        angles_b.append(ang)
        angles_a.append(held.place[s : s + CONTROL_STEPS + 1, 2])
        if motion:  # the engine from the same frame under a held fast turn each way, nothing else pressed
            t0 = time.perf_counter()
            for name, a in forced.items():
                engine.reset(*replay)
                engine_forced[name].append(np.stack([engine.step(a) for _ in range(CONTROL_STEPS)]))
            motion_s += time.perf_counter() - t0
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
    if motion:
        t0 = time.perf_counter()
        start = held.frames[start_t.numpy()]
        moved = {}
        turn_rows = []
        for name, a in forced.items():
            held_turn = torch.from_numpy(np.tile(a, (len(starts), CONTROL_STEPS, 1)))
            dream = np.stack(list(dreamer.rollout(context, led_in, held_turn, seed)), 1)
            engine_run = np.stack(engine_forced[name])
            moved[f"dream_{name}"] = step_motion(start, dream).sum(1)  # (B,) px over the case
            moved[f"engine_{name}"] = step_motion(start, engine_run).sum(1)
            for t in SHEET_TURN_STEPS:
                turn_rows.append(
                    (
                        engine_run[0, t - 1],
                        dream[0, t - 1],
                        f"fast {name} turn held, step {t}: engine | dream "
                        f"(view moved {step_motion(start[:1], engine_run[:1, :t]).sum():+.0f} | "
                        f"{step_motion(start[:1], dream[:1, :t]).sum():+.0f} px)",
                    )
                )
        report["motion"] = {
            "cases": len(starts),
            "steps": CONTROL_STEPS,
            "engine_right_px": float(moved["engine_right"].mean()),
            "engine_left_px": float(moved["engine_left"].mean()),
            **motion_figures(
                moved["dream_right"],
                moved["dream_left"],
                moved["engine_right"] - moved["engine_left"],
                step_motion(start, dream_a),  # (B, T): per step, under the recorded actions
                step_motion(start, engine_a),
            ),
            "seconds": round(motion_s + time.perf_counter() - t0, 1),
        }
        report["_turn_rows"] = turn_rows  # for the contact sheet: the first case under each held turn
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


# --- control by image motion -----------------------------------------------------------------------------


def fast_turns(spec: ActionSpec) -> tuple[int, int]:
    """The turn bins of the fastest turn left and right."""
    return 0, len(spec.turn_degrees_per_tic) - 1


def turn_only(spec: ActionSpec, turn_bin: int) -> np.ndarray:
    """The action that turns by `turn_bin` with nothing else pressed (fields,)."""
    a = np.asarray(spec.noop(), np.int64).copy()
    a[spec.fields.index("turn")] = turn_bin
    return a


def forced_turn(actions: torch.Tensor, spec: ActionSpec, turn_bin: int) -> torch.Tensor:
    """(B, K+1, fields) with the current action replaced by `turn_bin` and nothing else pressed."""
    out = actions.clone()
    out[:, -1] = torch.from_numpy(turn_only(spec, turn_bin))
    return out


def engine_turn_motion(held: HeldOut, spec: ActionSpec) -> dict:
    """The engine's view motion (px) on the held-out play's own fast turns in place: median right, median
    left, how many of each (an episode's first frames, where the engine ignores turning, left out), and the
    share of them the motion estimator reads the right way (how well it can read this world)."""
    acts = held.actions.numpy()
    turn, fields = spec.fields.index("turn"), spec.fields
    still = (acts[:, fields.index("move")] == 0) & (acts[:, fields.index("strafe")] == 0)
    idx = np.arange(len(acts) - 1)
    ep = held.episode_of(idx)
    inside = (idx + 1 < np.asarray(held.starts)[ep] + np.asarray(held.lengths)[ep]) & (
        idx - np.asarray(held.starts)[ep] >= 4
    )
    out, right_way = {}, []
    for name, b, sign in zip(("left", "right"), fast_turns(spec), (-1, 1), strict=True):
        pick = idx[inside & still[:-1] & (acts[:-1, turn] == b)]
        shifts = view_shift(held.frames[pick], held.frames[pick + 1]) if len(pick) else np.zeros(0)
        out[name] = float(np.median(shifts)) if len(shifts) else None
        out[f"{name}_frames"] = len(pick)
        right_way.append(sign * shifts > 0)
    both = np.concatenate(right_way)
    out["estimator_right_way"] = float(both.mean()) if len(both) else None
    return out


@torch.no_grad()
def turn_response(
    dreamer: Dreamer, context: torch.Tensor, acts: torch.Tensor, last: np.ndarray, spec: ActionSpec, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The dream's view motion (px) from the real last frames `last` one step under a forced fast right and
    a forced fast left turn: (right (B,), left (B,))."""
    left_bin, right_bin = fast_turns(spec)
    out = []
    for b in (right_bin, left_bin):
        turned = dreamer.decode(dreamer.predict(context, forced_turn(acts, spec, b), seed))
        out.append(view_shift(last, turned))
    return out[0], out[1]


def _corr(x: np.ndarray, y: np.ndarray) -> float | None:
    x, y = np.ravel(x).astype(np.float64), np.ravel(y).astype(np.float64)
    if len(x) < 3 or x.std() < 1e-9 or y.std() < 1e-9:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def motion_figures(
    dream_right: np.ndarray,
    dream_left: np.ndarray,
    engine_diff: float | np.ndarray | None,
    dream_recorded: np.ndarray,
    engine_recorded: np.ndarray,
) -> dict:
    """Turn gain and right-way share under the forced turns (engine_diff: the engine's right minus left, one
    figure for all starts or one per start), and the dream's motion against the engine's under the recorded
    actions (any shape, alike)."""
    diff = dream_right - dream_left
    out: dict = {
        "dream_right_px": float(dream_right.mean()),
        "dream_left_px": float(dream_left.mean()),
    }
    if engine_diff is None:
        # No engine figure to scale by (held-out play with no fast turn in place): no gain, and the right
        # way is the estimator's own sign, positive as when turning right.
        out.update(
            engine_right_minus_left_px=None,
            turn_gain=None,
            right_way_share=float((diff > MIN_PX).mean()),
            judged=len(diff),
        )
    else:
        e = np.broadcast_to(np.asarray(engine_diff, np.float64), diff.shape)
        ok = np.abs(e) > MIN_PX  # starts where the engine's own turn moved its view
        out.update(
            engine_right_minus_left_px=float(e[ok].mean()) if ok.any() else None,
            turn_gain=float(diff[ok].mean() / e[ok].mean()) if ok.any() else None,
            right_way_share=float((np.sign(e[ok]) * diff[ok] > MIN_PX).mean()) if ok.any() else None,
            judged=int(ok.sum()),
        )
    turning = np.abs(engine_recorded) >= TURNING_PX
    out["recorded"] = {
        "correlation": _corr(dream_recorded, engine_recorded),
        "dream_mean_abs_px": float(np.abs(dream_recorded).mean()),
        "engine_mean_abs_px": float(np.abs(engine_recorded).mean()),
        "turning": int(turning.sum()),
        # where the engine's view moved by TURNING_PX or more: the dream moved the same way
        "same_way_share": (
            float((np.sign(dream_recorded[turning]) == np.sign(engine_recorded[turning])).mean())
            if turning.any()
            else None
        ),
    }
    return out


@torch.no_grad()
def evaluate_motion_one_step(
    dreamer: Dreamer, held: HeldOut, targets: torch.Tensor, spec: ActionSpec, seed: int, batch: int = 64
) -> dict:
    """Control by image motion one step ahead from the real starts `targets` (frame indices)."""
    engine = engine_turn_motion(held, spec)
    right, left, dream_rec, engine_rec = [], [], [], []
    for i in range(0, len(targets), batch):
        t = targets[i : i + batch]
        idx = t.numpy()
        context, acts = held.context(t)
        last = held.frames[idx - 1]
        pred = dreamer.decode(dreamer.predict(context, acts, seed + i))
        dream_rec.append(view_shift(last, pred))
        engine_rec.append(view_shift(last, held.frames[idx]))
        r, lf = turn_response(dreamer, context, acts, last, spec, seed + i)
        right.append(r)
        left.append(lf)
    diff = None if engine["right"] is None or engine["left"] is None else engine["right"] - engine["left"]
    return {
        "starts": len(targets),
        "engine_fast_turns": engine,
        **motion_figures(
            *(np.concatenate(x) for x in (right, left)),
            diff,
            *(np.concatenate(x) for x in (dream_rec, engine_rec)),
        ),
    }


def step_motion(start: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Per-step view motion of sequences: start (B, H, W, 3), frames (B, T, H, W, 3) -> (B, T) px."""
    prev = np.concatenate([start[:, None], frames[:, :-1]], 1)
    return view_shift(prev, frames)


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
    engine_frames = float((np.sign(engine[turning]) == np.sign(truth[turning])).mean())
    return {
        "cases": int(turning.sum()),
        "model": float(agree.mean()),
        # the probe read off the engine's own frames: the most a dream can score with this probe
        "engine_frames": engine_frames,
        # below PROBE_READS_WORLD the probe cannot read this world's angle (a round arena's uniform wall), and
        # its turn sign says nothing of the dream: control by motion does
        "reads_this_world": engine_frames >= PROBE_READS_WORLD,
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
    hold: HoldMeter | None = None,
) -> dict:
    """A `frames`-long dream from the first context of an episode with an engine, beside the engine; with
    `hold`, also judged per second with no reference (world_model/evaluation/hold.py)."""
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
    dream = dreamer.rollout_latents(context, led_in, torch.from_numpy(inputs)[None], seed)
    samples, chunk = [], []
    for t, (dreamed, z) in enumerate(tqdm(dream, total=frames, desc="eval stability")):
        if hold is not None:
            hold.add(dreamed, z)
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
        **({"hold": hold.summary(fps)} if hold is not None else {}),
        "_samples": samples,
    }
