"""`dreamdoom data info`: what a dataset holds, read from manifests and the small arrays only (with
`--verify`, from every byte: frames decoded, whole-file checksums checked)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from data.dataset import Dataset


def summarize(ds: Dataset, verify: bool = False) -> dict:
    """Episodes, frames, per-field action histograms, bytes per frame. Frames are decompressed only to
    `verify` them: without it, damage inside the frames goes unnoticed here (training would skip it)."""
    spec = ds.action_spec
    hist = [np.zeros(n, np.int64) for n in spec.sizes]
    lengths, returns, policies = [], [], Counter()
    for ref, ep in ds.iter_episodes(keys=None if verify else ("actions", "rewards")):
        lengths.append(len(ep))
        returns.append(float(ep.rewards.sum()))
        policies[str(ep.meta.get("policy", ds.shards[ref.shard].recorder.get("policy", "?")))] += 1
        for f, h in enumerate(hist):
            h += np.bincount(ep.actions[:, f], minlength=len(h))
    frames = int(sum(lengths))
    nbytes = sum(r.path.stat().st_size for r in ds.episodes)
    m = ds.manifest
    return {
        "path": str(ds.root),
        "shards": len(ds.shards),
        "scenarios": sorted({s.scenario for s in ds.shards.values()}),
        "maps": sorted({s.map for s in ds.shards.values()}),
        "resolution": list(m.resolution),
        "frame_skip": m.frame_skip,
        "fps": m.fps,
        "episodes": len(lengths),
        "verified": verify,
        "bad_episodes": list(ds.errors),
        "skipped_shards": list(ds.shard_errors),
        "frames": frames,
        "hours": frames / m.fps / 3600,
        "episode_length": {
            "mean": float(np.mean(lengths)) if lengths else 0.0,
            "min": int(min(lengths, default=0)),
            "max": int(max(lengths, default=0)),
        },
        "return_mean": float(np.mean(returns)) if returns else 0.0,
        "policies": dict(policies),
        "bytes": nbytes,
        "bytes_per_frame": nbytes / frames if frames else 0.0,
        "action_contract": spec.to_dict(),
        "action_histogram": {f: h.tolist() for f, h in zip(spec.fields, hist)},
    }


def format_summary(s: dict) -> str:
    lines = [
        f"dataset     {s['path']}  ({s['shards']} shard{'s' * (s['shards'] != 1)})",
        f"scenario    {', '.join(s['scenarios'])}  map {', '.join(s['maps'])}  "
        f"{s['resolution'][0]}x{s['resolution'][1]}  frame_skip {s['frame_skip']} ({s['fps']:.1f} frames/s)",
        f"episodes    {s['episodes']}  (length mean {s['episode_length']['mean']:.0f}, "
        f"min {s['episode_length']['min']}, max {s['episode_length']['max']}; "
        f"mean return {s['return_mean']:.1f})",
        f"frames      {s['frames']:,}  ({s['hours'] * 60:.1f} min of play)",
        f"on disk     {s['bytes'] / 1e6:.1f} MB, {s['bytes_per_frame'] / 1e3:.1f} KB/frame",
        f"policies    {', '.join(f'{k} x{v}' for k, v in s['policies'].items())}",
        "actions (share of steps per value):",
    ]
    turns = s["action_contract"]["turn_degrees_per_tic"]
    labels = {
        "move": ["none", "fwd", "back"],
        "strafe": ["none", "left", "right"],
        "turn": [f"{t:+g}" for t in turns],
        "attack": ["no", "yes"],
        "use": ["no", "yes"],
    }
    for field, h in s["action_histogram"].items():
        total = max(sum(h), 1)
        names = labels.get(field, [str(i) for i in range(len(h))])
        lines.append(f"  {field:<7} " + "  ".join(f"{n} {100 * c / total:4.1f}%" for n, c in zip(names, h)))
    if s["skipped_shards"]:
        lines.append(f"SKIPPED     {len(s['skipped_shards'])} shard(s):")
        lines += [f"  {e}" for e in s["skipped_shards"]]
    if s["bad_episodes"]:
        lines.append(f"UNREADABLE  {len(s['bad_episodes'])} episode file(s):")
        lines += [f"  {e}" for e in s["bad_episodes"]]
    checked = "every byte (--verify)" if s["verified"] else "frames not decoded (--verify checks them)"
    lines.append(f"checked     {checked}")
    return "\n".join(lines)
