"""Nothing written is lost: concurrent writers, damaged files, missing manifests, orphaned engines, reruns.

Each test reproduces a way data was lost or a command lied, on real files (and a real VizDoom where an
engine is involved)."""

import errno
import json
import multiprocessing as mp
import os
import secrets
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import make_episode
from data.actions import DEFAULT_ACTIONS
from data.dataset import Dataset, Manifest, ShardWriter, default_recorder, new_shard_name
from data.episode import VARIABLES, EpisodeError, EpisodeRecorder, read_episode, write_episode
from data.info import summarize
from play.cli import main

SIZE = (8, 6)


def manifest() -> Manifest:
    return Manifest("basic", "MAP01", SIZE, 2, default_recorder("test"), DEFAULT_ACTIONS.to_dict())


def episode(seed: int, steps: int = 3):
    meta = {"policy": "test", "n": seed}
    return make_episode(np.random.default_rng(seed), steps=steps, size=SIZE, meta=meta)


# --- 1. concurrent writers ------------------------------------------------------------------------------


def _write_many(folder: str, start: int, count: int, barrier) -> None:
    writer = ShardWriter(folder, manifest())
    barrier.wait()
    for i in range(start, start + count):
        writer.write(episode(i))


def test_two_writers_on_one_shard_keep_every_episode(tmp_path):
    """Even writers that pick the same shard folder (a name collision, a reopened shard) lose nothing."""
    a, b = ShardWriter(tmp_path / "s", manifest()), ShardWriter(tmp_path / "s", manifest())
    assert a.next_index == b.next_index == 0
    paths = [a.write(episode(0)), b.write(episode(1)), b.write(episode(2)), a.write(episode(3))]
    recording = EpisodeRecorder()  # a streaming recording whose name is taken moves on too
    for t, frame in enumerate(episode(4).frames):
        recording.add(frame, DEFAULT_ACTIONS.noop(), np.zeros(len(VARIABLES), np.float32), reward=t)
    c = ShardWriter(tmp_path / "s", manifest())
    a.write(episode(5))
    paths += [c.write_recording(recording, {"n": 4})]
    assert len(set(paths)) == 5 and read_episode(paths[-1]).meta == {"n": 4}
    # Four processes at once, 12 episodes each, into one shard folder.
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(4)
    folder = str(tmp_path / "t")
    procs = [ctx.Process(target=_write_many, args=(folder, 100 * w, 12, barrier)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert all(p.exitcode == 0 for p in procs)
    kept = sorted(ep.meta["n"] for _, ep in Dataset(tmp_path / "t").iter_episodes(strict=True))
    assert kept == sorted(100 * w + i for w in range(4) for i in range(12))


def test_shard_names_differ_even_within_one_second():
    names = {new_shard_name("random-s0") for _ in range(1000)}
    assert len(names) == 1000


def _collect_cmd(out: Path, episodes: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "play.cli",
        "collect",
        "--scenario",
        "basic",
        "--policy",
        "random",
        "--episodes",
        str(episodes),
        "--workers",
        "2",
        "--max-steps",
        "12",
        "--out",
        str(out),
        *extra,
    ]


def test_two_collectors_started_together_into_one_folder_keep_every_episode(tmp_path):
    out = tmp_path / "ds"
    runs = [subprocess.Popen(_collect_cmd(out, 6, "--seed", "0"), stdout=subprocess.PIPE) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0].decode() for p in runs]
    assert [p.returncode for p in runs] == [0, 0] and all("collected 6 episodes" in o for o in outputs)
    ds = Dataset(out)
    assert len(ds.shards) == 4 and len(ds) == 12
    assert len(list(ds.iter_episodes(strict=True))) == 12


# --- 4. damaged files -----------------------------------------------------------------------------------


def flipped(data: bytes, i: int) -> bytes:
    b = bytearray(data)
    b[i] ^= 0xFF
    return bytes(b)


def test_a_flipped_byte_anywhere_is_skipped_with_its_name(tmp_path):
    shard = tmp_path / "s"
    good = ShardWriter(shard, manifest()).write(episode(0))
    data = good.read_bytes()
    # Both ends of the file (zip headers, central directory, checksum) byte by byte, the middle sampled.
    rng = np.random.default_rng(0)
    ends = [*range(0, 160), *range(len(data) - 220, len(data))]
    positions = sorted({*ends, *rng.choice(len(data), 120, replace=False).tolist()})
    for n, i in enumerate(positions):
        (shard / f"ep_{n + 1:06d}.npz").write_bytes(flipped(data, i))
    ds = Dataset(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kept = [ref.path for ref, _ in ds.iter_episodes()]
    assert kept == [good]
    assert len(ds.errors) == len(positions)
    for n in range(len(positions)):
        name = f"ep_{n + 1:06d}.npz"
        assert sum(name in e for e in ds.errors) == 1
        assert sum(name in str(w.message) and "skipping episode" in str(w.message) for w in caught) == 1
    # Reading only the small arrays (as `data info` does) never fails in any other way than EpisodeError.
    for n in range(len(positions)):
        try:
            read_episode(shard / f"ep_{n + 1:06d}.npz", keys=("actions", "rewards"))
        except EpisodeError as e:
            assert f"ep_{n + 1:06d}.npz" in str(e)


def legacy_file(path: Path, **change) -> Path:
    """An episode file as written before whole-file checksums, with some arrays replaced."""
    write_episode(path, episode(1))
    with np.load(path, allow_pickle=False) as z:
        arrays = dict(z)
    arrays.update(change)
    for k in [k for k, v in arrays.items() if v is None]:
        del arrays[k]
    np.savez(path, **arrays)
    return path


def test_every_kind_of_damage_is_a_named_skip_and_verify_finds_frame_damage(tmp_path, capsys):
    shard = tmp_path / "s"
    ShardWriter(shard, manifest()).write(episode(0))
    with np.load(shard / "ep_000000.npz", allow_pickle=False) as z:
        blob, shape, header = z["frames_zstd"], z["frames_shape"], json.loads(str(z["header"]))
    frame_damage = {
        "flipped frame byte": dict(frames_zstd=flipped(blob.tobytes(), len(blob) // 2)),
        "truncated frames": dict(frames_zstd=blob[: len(blob) // 2]),
        "longer shape": dict(frames_shape=shape * [2, 1, 1, 1]),
        "negative shape": dict(frames_shape=shape * [-1, 1, 1, 1]),
        "3-d shape": dict(frames_shape=shape[1:]),
        "4 channels": dict(frames_shape=np.array([*shape[:3], 4])),
        "no frames": dict(frames_zstd=None),
    }
    other_damage = {
        "header a JSON list": dict(header=np.array(json.dumps([header]))),
        "meta a string": dict(header=np.array(json.dumps({**header, "meta": "x"}))),
        "actions 0-d": dict(actions=np.array(3, np.int8)),
        "rewards too short": dict(rewards=np.zeros(1, np.float32)),
    }
    names = {}
    for n, (kind, change) in enumerate({**frame_damage, **other_damage}.items(), start=1):
        if isinstance(change.get("frames_zstd"), bytes):
            change["frames_zstd"] = np.frombuffer(change["frames_zstd"], np.uint8)
        names[kind] = legacy_file(shard / f"ep_{n:06d}.npz", **change).name
    (shard / "ep_000050.npz").symlink_to(tmp_path / "gone.npz")  # a dangling linked episode
    (shard / "ep_000051.npz").write_bytes(np.zeros(3).tobytes())  # not a zip at all
    np.save(shard / "ep_000052.npy", np.zeros(3))
    os.replace(shard / "ep_000052.npy", shard / "ep_000052.npz")  # a .npy under an episode's name
    # Without --verify, frames are not decoded: frame damage is not seen, everything else is.
    with pytest.warns(UserWarning):
        quick = summarize(Dataset(tmp_path))
    bad = "\n".join(quick["bad_episodes"])
    assert all(names[k] in bad for k in other_damage) and "ep_000050.npz" in bad and "ep_000051.npz" in bad
    assert "ep_000052.npz" in bad
    with pytest.warns(UserWarning):
        assert main(["data", "info", str(tmp_path), "--verify", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["episodes"] == 1 and report["verified"]
    bad = "\n".join(report["bad_episodes"])
    assert len(report["bad_episodes"]) == len(frame_damage) + len(other_damage) + 3
    assert all(names[k] in bad for k in {**frame_damage, **other_damage})


# --- 5. missing or damaged manifests --------------------------------------------------------------------


def test_a_shard_without_a_readable_manifest_is_reported(tmp_path, capsys):
    for name in ("a", "b", "c"):
        w = ShardWriter(tmp_path / name, manifest())
        w.write(episode(0))
        w.write(episode(1))
    (tmp_path / "b" / "manifest.json").unlink()
    (tmp_path / "c" / "manifest.json").write_text("[1, 2]")
    with pytest.warns(UserWarning, match=r"skipping shard: .*b: no manifest\.json, so its 2 episode"):
        ds = Dataset(tmp_path)
    assert len(ds) == 2 and len(ds.shard_errors) == 2
    with pytest.warns(UserWarning):
        assert main(["data", "info", str(tmp_path)]) == 1
    shown = capsys.readouterr().out
    assert "SKIPPED     2 shard(s)" in shown
    assert "/b: no manifest.json" in shown and "/c/manifest.json" in shown


# --- 6. engines die with their collector ----------------------------------------------------------------


def _processes() -> dict[int, tuple[str, int, str]]:
    """pid -> (command name, parent pid, state) of every process, read from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            rest = stat.rsplit(")", 1)[1].split()
            found[int(entry.name)] = (stat[stat.index("(") + 1 : stat.rindex(")")], int(rest[1]), rest[0])
    return found


def _engines_of(root: int) -> set[int]:
    """Live VizDoom engines descending from process `root`."""
    procs = _processes()

    def descends(pid: int) -> bool:
        while pid > 1 and pid in procs:
            if pid == root:
                return True
            pid = procs[pid][1]
        return False

    return {p for p, (name, _, state) in procs.items() if name == "vizdoom" and state != "Z" and descends(p)}


def _alive(pids: set[int]) -> set[int]:
    procs = _processes()
    return {p for p in pids if p in procs and procs[p][2] not in "ZX"}


def _wait_for_engines(proc: subprocess.Popen, count: int, out: Path) -> set[int]:
    deadline = time.time() + 90
    engines: set[int] = set()
    while time.time() < deadline and not (len(engines) >= count and list(out.rglob("ep_*.npz"))):
        engines = _engines_of(proc.pid)
        time.sleep(0.1)
    assert len(engines) >= count, "the collector's engines never started"
    return engines


def _gone_within(pids: set[int], seconds: float) -> set[int]:
    deadline = time.time() + seconds
    while _alive(pids) and time.time() < deadline:
        time.sleep(0.1)
    return _alive(pids)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_a_killed_collector_leaves_no_engine(tmp_path, sig):
    out = tmp_path / "ds"
    proc = subprocess.Popen(_collect_cmd(out, 400), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    engines = _wait_for_engines(proc, 2, out)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    assert not _gone_within(engines, 15), "VizDoom engines outlived their collector"
    ds = Dataset(out)
    assert len(list(ds.iter_episodes(strict=True))) == len(ds) >= 1  # what was finished is whole


def test_a_killed_worker_is_reported_and_its_engine_reaped(tmp_path):
    out = tmp_path / "ds"
    proc = subprocess.Popen(_collect_cmd(out, 400), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    engines = _wait_for_engines(proc, 2, out)
    procs = _processes()
    victim = next(iter(engines))
    os.kill(procs[victim][1], signal.SIGKILL)  # the worker that owns this engine, as the OOM killer would
    _, err = proc.communicate(timeout=240)  # the other worker plays its 200 episodes to the end
    assert proc.returncode == 1 and b"died without finishing" in err
    assert not _gone_within(engines, 15)


def _tagged_engines(tag: str) -> set[int]:
    """Live VizDoom engines whose environment carries `tag` (they inherit it from the worker)."""
    found = set()
    for pid, (name, _, state) in _processes().items():
        if name == "vizdoom" and state not in "ZX":
            try:
                if f"DREAMDOOM_TEST_TAG={tag}".encode() in Path(f"/proc/{pid}/environ").read_bytes():
                    found.add(pid)
            except OSError:
                pass
    return found


def test_a_failing_worker_leaves_no_engine(tmp_path, monkeypatch):
    from agent.collect import CollectConfig, CollectError, collect

    tag = secrets.token_hex(8)
    monkeypatch.setenv("DREAMDOOM_TEST_TAG", tag)
    # A recorder entry that is not JSON: the worker fails writing its manifest, after its engine started.
    cfg = CollectConfig(str(tmp_path), "basic", "random", episodes=2, workers=2, seed=0, extra={"bad": {1}})
    with pytest.raises(CollectError, match="not JSON serializable"):
        collect(cfg, progress=False)
    assert not _gone_within(_tagged_engines(tag), 10) and not _tagged_engines(tag)


def test_a_failing_worker_is_one_line_and_its_traceback_only_on_debug(tmp_path, capsys):
    from agent.collect import CollectConfig, main

    cfg = CollectConfig(str(tmp_path), "basic", "random", episodes=1, workers=1, seed=0, extra={"bad": {1}})
    assert main(cfg) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "dreamdoom collect: worker 0 failed: TypeError: Object of type set is not JSON serializable"
    )
    assert main(cfg, debug=True) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "dreamdoom collect: worker 0 failed" in err.strip().splitlines()[-1]


# --- 7. reruns do not copy episodes, and copies do not leak into the held-out split ----------------------


def test_reruns_draw_new_seeds_unless_one_is_given(tmp_path):
    from agent.collect import CollectConfig, collect

    def run(out, seed=None):
        cfg = CollectConfig(str(out), "basic", "random", episodes=2, workers=1, seed=seed, max_steps=8)
        stats = collect(cfg, progress=False)
        return stats.seed, [ep.actions for _, ep in Dataset(out).iter_episodes(strict=True)]

    (s1, a1), (s2, a2) = run(tmp_path / "a"), run(tmp_path / "b")
    assert s1 != s2 and not all(np.array_equal(x, y) for x, y in zip(a1, a2))
    (s3, a3), (s4, a4) = run(tmp_path / "c", seed=5), run(tmp_path / "d", seed=5)
    assert s3 == s4 == 5 and all(np.array_equal(x, y) for x, y in zip(a3, a4))


def test_copies_of_an_episode_stay_on_one_side_of_the_split(tmp_path):
    # 40 distinct episodes; 10 of them copied into 3 more shards, as reruns with one seed would.
    for shard in range(4):
        w = ShardWriter(tmp_path / f"run{shard}", manifest())
        for i in range(40 if shard == 0 else 10):
            w.write(episode(i))
    ds = Dataset(tmp_path)
    for fraction in (0.1, 0.3, 0.5):
        train, held = ds.split(fraction)
        assert held and set(train).isdisjoint(held) and len(train) + len(held) == len(ds)
        train_content = {r.content_key() for r in train}
        assert not any(r.content_key() in train_content for r in held)
        # Episodes without copies keep the split they always had (by name).
        copied = {r for g in ds.duplicates() for r in g}
        assert all(r.is_heldout(fraction) == (r in held) for r in ds.episodes if r not in copied)
    assert len(ds.duplicates()) == 10 and all(len(g) == 4 for g in ds.duplicates())


# --- 9. an agent run killed early can be resumed ----------------------------------------------------------


def test_an_agent_run_killed_in_its_first_minute_can_be_resumed(tmp_path):
    from agent.ppo import read_meta

    tag = secrets.token_hex(8)
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "play.cli", "agent", "train", "--scenario", "basic", "--envs", "1"]
    argv += ["--n-steps", "32", "--max-episode-steps", "20", "--out", str(run), "--no-progress"]
    env = dict(os.environ, DREAMDOOM_TEST_TAG=tag)
    proc = subprocess.Popen(
        [*argv, "--steps", "100000", "--checkpoint-minutes", "0.01"], env=env, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not (run / "policy.zip").exists():
            time.sleep(0.1)
        time.sleep(1.0)  # a few more saves: the kill may land in the middle of one
    finally:
        proc.kill()
        proc.wait()
    assert not _gone_within(_tagged_engines(tag), 15)  # the engine died with its trainer
    done = read_meta(run / "policy.zip")["num_timesteps"]
    assert 0 < done < 100000
    resumed = subprocess.run([*argv, "--steps", str(done + 32), "--resume"], env=env, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert read_meta(run / "policy.zip")["num_timesteps"] >= done + 32


def test_a_killed_agent_trainer_leaves_no_engine(tmp_path):
    """`agent train` runs its engines as its own children (`--vec dummy`): a SIGKILL, which no handler sees,
    must take them down too."""
    tag = secrets.token_hex(8)
    argv = [sys.executable, "-m", "play.cli", "agent", "train", "--scenario", "basic", "--envs", "2"]
    argv += ["--n-steps", "32", "--steps", "100000", "--out", str(tmp_path / "run")]
    proc = subprocess.Popen(
        [*argv, "--no-progress"],
        env=dict(os.environ, DREAMDOOM_TEST_TAG=tag),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 90
        while time.time() < deadline and len(_tagged_engines(tag)) < 2:
            time.sleep(0.1)
        engines = _tagged_engines(tag)
        assert len(engines) == 2, "the trainer's engines never started"
        time.sleep(1.0)  # playing, not starting up
    finally:
        proc.kill()
        proc.wait()
    left = _gone_within(engines, 15)
    for pid in left:  # do not leave them to the next test
        os.kill(pid, signal.SIGKILL)
    assert not left, "VizDoom engines outlived their trainer"


# --- 10. outputs are written whole or not at all ------------------------------------------------------------


def _full_disk_for(monkeypatch, name_part: str) -> None:
    """fsync of a file whose path holds `name_part` fails, as it does on a full disk."""
    real = os.fsync

    def fsync(fd: int) -> None:
        if name_part in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> Path:
    from world_model.model.checkpoint import make_untrained_checkpoint

    # of the world of `dataset` (basic), which eval checks
    ckpt = tmp_path_factory.mktemp("untrained") / "ckpt"
    return make_untrained_checkpoint(ckpt, preset="tiny", scenario="basic", map_name="MAP01")


@pytest.mark.parametrize(
    "command, name",
    [
        ("wm bench --ckpt {ckpt} --steps 1 --frames 1 --out {out}/bench.json", "bench"),
        ("wm encode --data {data} --ae {ckpt} --out {out}/latents.safetensors", "latents"),
        (
            "wm eval --ckpt {ckpt} --data {data} --out {out} --no-engine --no-probe --transitions 2 "
            "--rollouts 1 --horizon 2 --stability-frames 0",
            "report.json",
        ),
        (
            "wm eval --ckpt {ckpt} --data {data} --out {out} --no-engine --no-probe --transitions 2 "
            "--rollouts 1 --horizon 2 --stability-frames 0",
            "side_by_side",
        ),
    ],
    ids=["bench", "latent cache", "eval report", "eval video"],
)
def test_a_full_disk_leaves_the_earlier_output_whole(
    dataset, untrained, tmp_path, monkeypatch, capsys, command, name
):
    argv = command.format(ckpt=untrained, data=dataset, out=tmp_path).split()
    assert main(argv) == 0
    written = next(p for p in tmp_path.iterdir() if p.name.startswith(name.split(".")[0]))
    before = written.read_bytes()
    capsys.readouterr()
    _full_disk_for(monkeypatch, name)
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("No space left on device")
    assert written.read_bytes() == before
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]  # no temp file left behind


@pytest.mark.parametrize("name", ["table.json", "table.md", "sheet"])
def test_a_full_disk_leaves_the_ablation_tables_whole(tmp_path, monkeypatch, name):
    """wm ablate rewrites its tables after every variant: a failed rewrite keeps those of the last one."""
    from world_model.training.ablate import AblateArgs, row_of, write_results

    a = AblateArgs(data="d", ae="ae", heldout="h", out=str(tmp_path), variant=("base", "x0"), minutes=1.0)
    report = {"view": {"teacher_forced": {"edge_corr": {"model": 0.5, "copy_last": 0.4, "ceiling": 0.9}}}}
    report["view"]["rollout"] = {"edge_corr": {"1": {"model": 0.3}}}
    rows = [row_of(v, (), report, {"step": 3}, {"ms": 2.0}) for v in ("base", "x0")]
    frame = np.zeros((12, 16, 3), np.uint8)
    frames = {v: {1: (frame, frame + 40 * i, 0.5)} for i, v in enumerate(("base", "x0"))}
    write_results(tmp_path, rows[:1], {"base": frames["base"]}, a)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(before) == ["sheet.png", "table.json", "table.md"]
    _full_disk_for(monkeypatch, name)
    with pytest.raises(OSError, match="No space left"):
        write_results(tmp_path, rows, frames, a)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(after) == sorted(before)  # no temp file left behind
    assert [after[f] == before[f] for f in after if f.startswith(name)] == [True]


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_checked_file_a_kill_interrupted_still_matches_its_checksum(tmp_path, monkeypatch, when):
    """A kill just before or just after the new file takes the name leaves a file its sidecar vouches for."""
    from data import durable

    path = tmp_path / "policy.zip"
    durable.write_checked(path, lambda tmp: tmp.write_bytes(b"old"))
    real = durable.publish

    def killed(tmp, dst, exclusive):  # the kill lands at the rename of the file itself, not of its sidecar
        if dst != path or when == "after":
            real(tmp, dst, exclusive)
        if dst == path:
            raise KeyboardInterrupt

    monkeypatch.setattr(durable, "publish", killed)
    with pytest.raises(KeyboardInterrupt):
        durable.write_checked(path, lambda tmp: tmp.write_bytes(b"new"))
    assert path.read_bytes() == (b"new" if when == "after" else b"old")
    assert durable.checksum_error(path) is None
    monkeypatch.undo()
    durable.write_checked(path, lambda tmp: tmp.write_bytes(b"newer"))
    assert durable.checksum_path(path).read_text().count("\n") == 1  # only the file that is there
    path.write_bytes(b"nEwer")
    assert "checksum mismatch" in durable.checksum_error(path)


def test_a_folder_store_swaps_whole_copies_and_finds_the_newest_a_kill_left(tmp_path, monkeypatch):
    """The folder transaction on its own (checkpoints are one user): a kill before the index leaves the old
    copy, a kill between the two renames leaves both beside the folder, and recover puts the newest back."""
    from data import durable

    store = durable.FolderStore("index.json", rank=lambda index: index["version"])
    folder = tmp_path / "run"

    def files(text: str):
        return lambda tmp: (tmp / "a.txt").write_text(text)

    store.write(folder, {"version": 1}, files("one"))
    index = json.loads((folder / "index.json").read_text())
    assert index["files"]["a.txt"]["bytes"] == 3 and store.file_error(folder / "a.txt", index) is None
    (folder / "a.txt").write_text("two")
    assert "checksum mismatch with index.json" in store.file_error(folder / "a.txt", index)
    (folder / "a.txt").write_text("one")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:  # killed before the index: the new copy is incomplete
        m.setattr(durable, "write_atomic", killed)
        with pytest.raises(KeyboardInterrupt):
            store.write(folder, {"version": 2}, files("two"))
    assert store.find(folder) == folder and store.complete(folder.with_name(".run.tmp")) is None

    real, renames = durable._rename, []

    def rename_once(src, dst):  # killed after the old copy moved aside, before the new one moved in
        if renames:
            raise KeyboardInterrupt
        renames.append(dst)
        real(src, dst)

    with monkeypatch.context() as m:
        m.setattr(durable, "_rename", rename_once)
        with pytest.raises(KeyboardInterrupt):
            store.write(folder, {"version": 2}, files("two"))
    assert not folder.exists() and store.find(folder) == folder.with_name(".run.tmp")
    assert store.recover(folder) == folder and (folder / "a.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
