"""`dreamdoom web`: the page folder it writes (graphs, start context, runtime, meta.json) and the bad inputs
it refuses in one line. ONNX Runtime Web's files come from npm the first time (play/web_runtime.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

from play.cli import main
from play.engine import EngineBackend
from play.web import SERVE_HEADERS
from play.web_dream import PageDream, read_start
from play.web_runtime import RUNTIME_FILES
from world_model.model.checkpoint import make_untrained_checkpoint
from world_model.model.env import WorldModelEnv


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny untrained model of VizDoom's basic scenario (a quick engine for the start context)."""
    root = tmp_path_factory.mktemp("web_ckpt")
    return make_untrained_checkpoint(root / "ckpt", preset="tiny", scenario="basic", map_name="MAP01")


@pytest.fixture(scope="module")
def page(ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("web_page") / "page"
    assert main(["web", "--ckpt", str(ckpt), "--out", str(out), "--steps", "2,1"]) == 0
    return out


def test_page_folder_holds_the_graphs_the_start_and_the_runtime(page, ckpt):
    meta = json.loads((page / "meta.json").read_text())
    assert meta["kind"] == "dreamdoom-web"
    assert meta["steps"] == {"1": "step_1.onnx", "2": "step_2.onnx"}
    assert meta["default_steps"] == 2  # the checkpoint's own count
    for name in ("index.html", "dream.js", *meta["steps"].values()):
        assert (page / name).is_file()
    for name in RUNTIME_FILES:
        assert (page / "ort" / name).stat().st_size > 0
    sizes = meta["sizes"]  # two step counts share one copy of the weights (no encoder, no EMA twin)
    assert (page / "weights.bin").stat().st_size == sizes["weights"] < sizes["safetensors"]
    # The start context is play's: the engine's first K frames, encoded as WorldModelEnv.reset encodes them.
    env = WorldModelEnv.from_checkpoint(ckpt, capture=False)
    engine = EngineBackend("basic", env.frame_skip, env.resolution)
    context = engine.start_context(env.context_len)
    engine.close()
    shown = env.reset(context.frames, context.actions)
    latents, led_in, frame = read_start(page, meta)
    np.testing.assert_allclose(latents, env.context[0], atol=1e-5)
    assert np.array_equal(led_in, env.context[1])
    assert np.array_equal(frame, shown)
    # And the page's graph plays from it.
    frames = PageDream.of_page(page).play("2*1,0,5,0,0", 3)
    assert frames.shape == (3, *meta["frame"], 3) and frames.dtype == np.uint8


def test_writing_again_replaces_the_page(page, ckpt):
    (page / "step_1.onnx").write_bytes(b"stale")
    assert main(["web", "--ckpt", str(ckpt), "--out", str(page)]) == 0
    meta = json.loads((page / "meta.json").read_text())
    assert meta["steps"] == {"2": "step_2.onnx"}
    assert not (page / "step_1.onnx").exists()
    assert not list(page.parent.glob(".page.*"))  # no temporary folder left beside it


def test_serve_sends_the_isolation_headers(page, ckpt):
    """--serve on port 0 prints its address; every answer carries COOP/COEP and the right types."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "play.cli",
            "web",
            "--ckpt",
            str(ckpt),
            "--out",
            str(page),
            "--serve",
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = serving_url(proc)
        for path, kind in (
            ("", "text/html"),
            ("dream.js", "text/javascript"),
            ("ort/ort-wasm-simd-threaded.wasm", "application/wasm"),
        ):
            with urllib.request.urlopen(url + path, timeout=30) as answer:
                assert answer.headers["Content-Type"].startswith(kind)
                for name, value in SERVE_HEADERS.items():
                    assert answer.headers[name] == value
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def serving_url(proc: subprocess.Popen) -> str:
    """The address a `dreamdoom web --serve` process prints once the page is written."""
    for line in proc.stdout:
        if line.startswith("serving "):
            return line.split(" at ", 1)[1].split()[0]
    raise AssertionError(f"no address printed: {proc.stderr.read()}")


def one_line_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dreamdoom web: "), lines
    return lines[0]


def test_a_bad_ckpt_is_one_line(tmp_path, capsys):
    line = one_line_error(["web", "--ckpt", str(tmp_path / "nope"), "--out", str(tmp_path / "o")], capsys)
    assert f"--ckpt {tmp_path / 'nope'}: no such checkpoint folder" in line
    (tmp_path / "plain").mkdir()
    line = one_line_error(["web", "--ckpt", str(tmp_path / "plain"), "--out", str(tmp_path / "o")], capsys)
    assert "not a checkpoint folder" in line
    assert not (tmp_path / "o").exists()


def test_an_out_holding_other_files_is_one_line_and_left_alone(ckpt, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    line = one_line_error(["web", "--ckpt", str(ckpt), "--out", str(out)], capsys)
    assert f"--out {out}: holds other files" in line
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    assert (tmp_path / "file").read_text() == "x"
    assert "a file, not a folder" in one_line_error(
        ["web", "--ckpt", str(ckpt), "--out", str(tmp_path / "file")], capsys
    )


def test_a_port_in_use_is_one_line_before_any_work(ckpt, tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_error(
            ["web", "--ckpt", str(ckpt), "--out", str(tmp_path / "o"), "--serve", "--port", str(port)], capsys
        )
    assert f"--port {port}: in use" in line
    assert not (tmp_path / "o").exists()


def test_web_lists_its_options(capsys):
    assert main(["web", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--serve" in out and "--port" in out and "--steps" in out


def test_start_from_a_dataset_episode(ckpt, dataset, tmp_path):
    """--start takes the first K frames and actions of a recorded episode, as play's --start does."""
    from play.engine import dataset_context

    out = tmp_path / "page"
    argv = ["web", "--ckpt", str(ckpt), "--out", str(out), "--start", str(dataset), "--start-episode", "1"]
    assert main(argv) == 0
    meta = json.loads((out / "meta.json").read_text())
    env = WorldModelEnv.from_checkpoint(ckpt, capture=False)
    context = dataset_context(dataset, 1, env.context_len, env.resolution, env.action_spec, env.world)
    assert meta["start"]["source"] == context.source
    env.reset(context.frames, context.actions)
    latents, led_in, frame = read_start(out, meta)
    np.testing.assert_allclose(latents, env.context[0], atol=1e-5)
    assert np.array_equal(led_in, env.context[1]) and np.array_equal(frame, context.frames[-1])
