"""A fight, real and dreamed: the contact sheet of a model's card that shows whether a monster the player
shoots falls.

    python docs/fight_sheet.py --ckpt checkpoints/default --heldout datasets/arena_heldout \
        --out docs/arena_fight.png

It finds the held-out kills (the KILLCOUNT game variable going up), starts the dream from the real frames
`--before` frames ahead of each of the first `--fights` kills, feeds it the recorded actions, and puts real
(top) and dream (below) side by side every `--every` frames, through the kill and `--after` frames past it.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image, ImageDraw

from data.dataset import Dataset
from world_model.evaluation.rollout import Dreamer, load_heldout
from world_model.model.checkpoint import load_world_model

LABEL = 12


def kills(held, variables: np.ndarray) -> list[int]:
    """Frame indices where the kill count goes up, within one episode and far enough from its start."""
    out = []
    for s, n in zip(held.starts, held.lengths, strict=True):
        kc = variables[s : s + n]
        out += [s + i for i in np.flatnonzero(np.diff(kc) > 0) + 1]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--heldout", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--fights", type=int, default=3)
    p.add_argument("--before", type=int, default=12)
    p.add_argument("--after", type=int, default=12)
    p.add_argument("--every", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    device = torch.device("cpu")
    ck = load_world_model(a.ckpt, device)
    ds = Dataset(a.heldout)
    held = load_heldout(ds, list(ds.episodes), [], ck, device, limit=10**6)
    kc = np.concatenate([ep.variable("KILLCOUNT") for _, ep in ds.iter_episodes(list(ds.episodes))])
    found = [i for i in kills(held, kc) if i - a.before - 1 >= held.starts[held.episode_of(np.array([i]))[0]]]
    found = [i for i in found if i + a.after < len(held.frames)][: a.fights]
    if not found:
        raise SystemExit(f"{a.heldout}: no kill with {a.before} frames before it in an episode")
    dreamer = Dreamer(ck, device, ck.diffusion.sampling_steps)
    rows = []
    for kill in found:
        last = kill - a.before - 1  # the last real frame the dream starts from
        context, led_in = held.start_context(torch.tensor([last]))
        horizon = a.before + 1 + a.after
        actions = held.actions[last : last + horizon][None]  # (1, T, fields): a[last] leads into last + 1
        dream = np.stack([f[0] for f in dreamer.rollout(context, led_in, actions, a.seed)])  # (T, H, W, 3)
        real = held.frames[last + 1 : last + 1 + horizon]
        cols = list(range(0, horizon, a.every))
        rows.append((kill - last - 1, cols, real[cols], dream[cols]))
    h, w = held.frames.shape[1:3]
    ncol = max(len(c) for _, c, _, _ in rows)
    sheet = Image.new("RGB", (ncol * w, len(rows) * (2 * h + LABEL)), "black")
    draw = ImageDraw.Draw(sheet)
    for r, (at, cols, real, dream) in enumerate(rows):
        y = r * (2 * h + LABEL)
        for c, t in enumerate(cols):
            sheet.paste(Image.fromarray(real[c]), (c * w, y + LABEL))
            sheet.paste(Image.fromarray(dream[c]), (c * w, y + LABEL + h))
            label = f"+{t + 1}" + (" kill" if t <= at < t + a.every else "")
            draw.text((c * w + 2, y), label, fill=(255, 255, 0) if "kill" in label else (255, 255, 255))
    sheet.save(a.out)
    print(f"{len(rows)} fights (real above, dream below) -> {a.out}")


if __name__ == "__main__":
    main()
