"""The page in a real browser: headless Chromium loads it from `dreamdoom web --serve`, plays a scripted
input, and its frames match the same script played by the graph on ONNX Runtime in Python."""

from __future__ import annotations

import base64
import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

from data.actions import DEFAULT_ACTIONS
from data.world import World
from play.web_check import browser_paths, page_url, play_page
from play.web_dream import PageDream
from world_model.model.autoencoder import Autoencoder
from world_model.model.checkpoint import dit_config_for, save_world_model
from world_model.model.config import get_preset
from world_model.model.dit import DiT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(browser_paths() is None, reason="chromium and chromedriver are not installed"),
]
pytest.importorskip("selenium")

RES = (160, 120)
FRAMES = 12
KEEP = (1, 6, 12)
SCRIPT = "3*1,0,6,0,0;3*0,2,0,1,0;3*2,0,3,0,1;3*0,1,4,0,0"


def randomized_checkpoint(path):
    """A tiny model of the basic scenario whose DiT and decoder compute something, with EDM, the ego-motion
    warp and guidance: the browser runs every kind of node the sampler makes."""
    p = get_preset("tiny")
    ae = Autoencoder(p.ae)
    dit = DiT(dit_config_for(p.dit, ae, RES, DEFAULT_ACTIONS))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for q in [*dit.parameters(), *ae.decoder.parameters()]:
            q.copy_(torch.randn(q.shape, generator=g) * 0.05)
    diffusion = dataclasses.replace(
        p.diffusion, prediction="edm", ego_warp=True, clean_residual=True, guidance=1.5
    )
    world = World("basic", "MAP01", RES, 2, DEFAULT_ACTIONS.to_dict())
    save_world_model(
        path,
        ae,
        dit,
        dit,
        diffusion,
        p.train,
        DEFAULT_ACTIONS,
        RES,
        2,
        0,
        extra_config={"world": world.to_dict()},
    )
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(page folder, address) of `dreamdoom web --serve --port 0` running on a randomized tiny model."""
    root = tmp_path_factory.mktemp("web_browser")
    ckpt = randomized_checkpoint(root / "ckpt")
    out = root / "page"
    argv = ["web", "--ckpt", str(ckpt), "--out", str(out), "--serve", "--port", "0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "play.cli", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        for line in proc.stdout:
            if line.startswith("serving "):
                yield out, line.split(" at ", 1)[1].split()[0]
                break
        else:
            raise AssertionError(f"dreamdoom web --serve printed no address: {proc.stderr.read()}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("threads", [1, 2])
def test_page_plays_a_script_as_the_python_graph_does(served, threads):
    out, url = served
    result = play_page(page_url(url, FRAMES, SCRIPT, seed=3, keep=KEEP, ep="wasm", threads=threads), 240)
    assert "error" not in result, result
    assert result["frames"] == FRAMES and result["backend"] == "wasm" and result["threads"] == threads
    assert result["isolated"] is True  # --serve's COOP/COEP headers: WebAssembly threads are allowed
    assert result["fps"] > 0 and 0 < result["first_frame_ms"]
    assert len(result["checksum"]) == 8
    want = PageDream.of_page(out, seed=3).play(SCRIPT, FRAMES)  # (N, H, W, 3)
    for n in KEEP:
        got = np.frombuffer(base64.b64decode(result["kept"][str(n)]), np.uint8).reshape(want.shape[1:])
        diff = np.abs(got.astype(int) - want[n - 1].astype(int))
        # WebAssembly's kernels sum in another order than the native ones: a pixel may round the other way.
        assert diff.max() <= 2 and (diff > 0).mean() < 0.01, (n, diff.max(), (diff > 0).mean())
    assert want.std() > 1  # the frames show something


def test_page_opened_as_a_file_says_to_serve_it(served):
    out, _ = served
    result = play_page((out / "index.html").as_uri() + "?frames=1&script=1*0,0,3,0,0", timeout_s=60)
    assert "web server" in result["error"]
