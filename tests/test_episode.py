import json
import os
import time

import numpy as np
import pytest

from conftest import make_episode
from data.actions import DEFAULT_ACTIONS, ActionSpec
from data.dataset import STALE_TEMP_SECONDS, Dataset, DatasetError, Manifest, ShardWriter, default_recorder
from data.episode import EpisodeError, read_episode, write_episode


def manifest(size=(32, 24), spec=DEFAULT_ACTIONS) -> Manifest:
    return Manifest(
        scenario="e1m1",
        map="E1M1",
        resolution=size,
        frame_skip=2,
        recorder=default_recorder("test"),
        action_contract=spec.to_dict(),
    )


def test_round_trip_is_identical(tmp_path, rng):
    ep = make_episode(rng, meta={"policy": "test", "step": 5})
    write_episode(tmp_path / "ep.npz", ep)
    back = read_episode(tmp_path / "ep.npz")
    for name in ("frames", "actions", "rewards", "dones", "variables"):
        assert np.array_equal(getattr(back, name), getattr(ep, name)), name
    assert back.meta == ep.meta and back.variable_names == ep.variable_names
    assert not [p for p in tmp_path.iterdir() if p.name != "ep.npz"], "temp files left behind"
    # Reading a subset decompresses only what is asked for.
    small = read_episode(tmp_path / "ep.npz", keys=("actions",))
    assert np.array_equal(small.actions, ep.actions) and len(small) == len(ep)


def test_dataset_of_shards_with_manifest(tmp_path, rng):
    eps = [make_episode(rng, steps=5 + i) for i in range(4)]
    for shard in ("a", "b"):
        w = ShardWriter(tmp_path / shard, manifest())
        for ep in eps[:2] if shard == "a" else eps[2:]:
            w.write(ep)
    ds = Dataset(tmp_path)
    assert len(ds) == 4 and len(ds.shards) == 2
    assert (
        ds.manifest.scenario == "e1m1"
        and tuple(ds.manifest.resolution) == (32, 24)
        and ds.manifest.fps == 17.5
    )
    on_disk = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert on_disk["action_contract"] == DEFAULT_ACTIONS.to_dict() and on_disk["recorder"]["policy"] == "test"
    lengths = sorted(len(ep) for _, ep in ds.iter_episodes(strict=True))
    assert lengths == [5, 6, 7, 8]
    # Merging datasets is copying shard folders; a writer reopened on a shard appends.
    w = ShardWriter(tmp_path / "a", manifest())
    assert w.write(eps[0]).name == "ep_000002.npz"
    train, held = Dataset(tmp_path).split(0.2)
    assert held and set(train).isdisjoint(held) and len(train) + len(held) == 5


def test_dataset_merged_by_linking_shards(tmp_path, rng):
    for shard in ("a", "b"):
        ShardWriter(tmp_path / "src" / shard, manifest()).write(make_episode(rng, steps=6))
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "a").symlink_to(tmp_path / "src" / "a")
    (merged / "all").symlink_to(tmp_path / "src")  # shard b, and a linked a second time
    (tmp_path / "src" / "loop").symlink_to(tmp_path / "src")
    ds = Dataset(merged)
    assert sorted(p.name for p in ds.shards) == ["a", "b"] and len(ds) == 2
    # The held-out split is the same as for the linked folders themselves.
    names = lambda refs: sorted(f"{r.shard.name}/{r.path.name}" for r in refs)  # noqa: E731
    assert names(ds.split(0.5)[1]) == names(Dataset(tmp_path / "src").split(0.5)[1])


def corrupt_copies(tmp_path, rng):
    """A shard with one good episode and each kind of bad file the reader must name."""
    w = ShardWriter(tmp_path / "s", manifest())
    good = w.write(make_episode(rng))
    data = w.write(make_episode(rng)).read_bytes()
    (tmp_path / "s" / "ep_000001.npz").write_bytes(data[: len(data) // 2])  # truncated
    flipped = bytearray(w.write(make_episode(rng)).read_bytes())  # ep_000002: bit rot inside the frames
    i = flipped.find(b"frames_zstd") + 400
    flipped[i : i + 64] = bytes(64)
    (tmp_path / "s" / "ep_000002.npz").write_bytes(bytes(flipped))
    ep = make_episode(rng)
    ep.action_spec = ActionSpec(turn_degrees_per_tic=(-5.0, 0.0, 5.0))
    ep.actions[:, 2] = 1
    write_episode(tmp_path / "s" / "ep_000003.npz", ep)  # another action contract
    return good


def test_bad_files_raise_errors_naming_the_file_and_others_still_load(tmp_path, rng):
    good = corrupt_copies(tmp_path, rng)
    s = tmp_path / "s"
    with pytest.raises(EpisodeError, match=r"ep_000001\.npz.*(truncated|corrupt)"):
        read_episode(s / "ep_000001.npz")
    with pytest.raises(EpisodeError, match=r"ep_000002\.npz.*(truncated|corrupt)"):
        read_episode(s / "ep_000002.npz")
    with pytest.raises(EpisodeError, match=r"ep_000003\.npz.*action contract mismatch"):
        read_episode(s / "ep_000003.npz")
    ds = Dataset(tmp_path)
    with pytest.warns(UserWarning, match="skipping episode"):
        loaded = [ref.path for ref, _ in ds.iter_episodes()]
    assert loaded == [good] and len(ds.errors) == 3
    with pytest.raises(EpisodeError):
        list(Dataset(tmp_path).iter_episodes(strict=True))


def test_other_schema_version_is_refused(tmp_path, rng):
    path = tmp_path / "ep.npz"
    write_episode(path, make_episode(rng))
    with np.load(path, allow_pickle=False) as z:
        arrays = dict(z)
    header = json.loads(str(arrays["header"]))
    header["schema_version"] = 99
    arrays["header"] = np.array(json.dumps(header))
    np.savez(path, **arrays)
    with pytest.raises(EpisodeError, match=r"ep\.npz.*schema version 99"):
        read_episode(path)


def test_manifest_problems_are_clear(tmp_path, rng):
    with pytest.raises(DatasetError, match="no such dataset folder"):
        Dataset(tmp_path / "missing")
    with pytest.raises(DatasetError, match="no manifest.json"):
        Dataset(tmp_path)
    ShardWriter(tmp_path / "a", manifest()).write(make_episode(rng))
    (tmp_path / "b").mkdir()
    m = manifest().to_dict()
    m["frame_skip"] = 4
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DatasetError, match="frame_skip"):
        Dataset(tmp_path)
    m["frame_skip"], m["action_contract"] = 2, ActionSpec(turn_degrees_per_tic=(-5.0, 0.0, 5.0)).to_dict()
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DatasetError, match=r"b/manifest\.json.*mismatch"):
        Dataset(tmp_path)
    with pytest.raises(DatasetError, match="refusing"):
        ShardWriter(tmp_path / "a", Manifest("basic", "MAP01", (32, 24), 2, {}, DEFAULT_ACTIONS.to_dict()))


def test_killed_writer_leaves_no_partial_episode(tmp_path, rng):
    w = ShardWriter(tmp_path / "s", manifest())
    w.write(make_episode(rng))
    stale = tmp_path / "s" / f".ep_000001.npz.tmp{os.getpid() + 1}"
    stale.write_bytes(b"half an episode")  # what a writer killed mid-write leaves
    live = tmp_path / "s" / f".ep_000002.npz.tmp{os.getpid() + 2}"
    live.write_bytes(b"an episode being written right now")
    old = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(stale, (old, old))
    assert len(Dataset(tmp_path)) == 1  # temp names are never episodes
    ShardWriter(tmp_path / "s", manifest())  # a new writer on the shard clears old ones, not a live one
    assert not stale.exists() and live.exists()


def test_streaming_recorder_writes_the_same_episode(tmp_path, rng):
    from data.episode import EpisodeRecorder

    ep = make_episode(rng, steps=9)
    rec = EpisodeRecorder()
    for t in range(len(ep)):
        rec.add(ep.frames[t], ep.actions[t], ep.variables[t])
        rec.set_outcome(ep.rewards[t], ep.dones[t])
    w = ShardWriter(tmp_path / "s", manifest())
    path = w.write_recording(rec, {"policy": "test"})
    assert len(rec) == 0  # emptied, ready for the next episode
    back = read_episode(path)
    for name in ("frames", "actions", "rewards", "dones", "variables"):
        assert np.array_equal(getattr(back, name), getattr(ep, name)), name
    with pytest.raises(EpisodeError, match="frame 1"):
        rec.add(ep.frames[0], ep.actions[0], ep.variables[0])
        rec.add(ep.frames[0][:, :10], ep.actions[0], ep.variables[0])
    with pytest.raises(DatasetError, match="manifest says"):
        other = EpisodeRecorder()
        other.add(np.zeros((10, 10, 3), np.uint8), ep.actions[0], ep.variables[0])
        w.write_recording(other, {})
