"""The video writer on machines with and without an mp4 encoder (a missing module is simulated by
putting None in sys.modules, which makes its import fail as on a machine that lacks it)."""

import sys

import numpy as np
import pytest

from data.video import read_video, video_backend, write_video


def blocks(n: int = 6, h: int = 24, w: int = 32) -> np.ndarray:
    """Frames of flat 8x8 colour blocks that move: what codecs and palettes keep nearly exactly."""
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    tiles[0, 0] = (255, 255, 255)
    return np.stack([np.roll(tiles, i, axis=1).repeat(8, 0).repeat(8, 1) for i in range(n)])


@pytest.fixture
def no_ffmpeg(monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)


@pytest.fixture
def no_encoder(no_ffmpeg, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)


def test_mp4_round_trip_with_the_installed_encoder(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    frames = blocks()
    assert video_backend() == "ffmpeg"
    assert write_video(frames, tmp_path / "v.mp4", fps=10, scale=2) == len(frames)
    back = read_video(tmp_path / "v.mp4")
    assert back.shape == (len(frames), 48, 64, 3)
    assert np.abs(back[:, ::2, ::2].astype(int) - frames).mean() < 8  # lossy codec, same pictures


def test_opencv_writes_the_mp4_without_imageio_ffmpeg(no_ffmpeg, tmp_path):
    pytest.importorskip("cv2")
    frames = blocks()
    assert video_backend() == "opencv"
    assert write_video(frames, tmp_path / "v.mp4", fps=10, scale=2) == len(frames)
    back = read_video(tmp_path / "v.mp4")
    assert back.shape == (len(frames), 48, 64, 3)
    assert np.abs(back[:, ::2, ::2].astype(int) - frames).mean() < 12


def test_without_any_mp4_encoder_a_gif_is_written_with_a_notice(no_encoder, tmp_path, capsys):
    frames = blocks()
    assert video_backend() == "gif"
    assert write_video(iter(frames), tmp_path / "v.mp4", fps=10, scale=1) == len(frames)
    assert not (tmp_path / "v.mp4").exists()
    assert f"writing {tmp_path / 'v.gif'} instead" in capsys.readouterr().err
    back = read_video(tmp_path / "v.gif")
    assert back.shape == frames.shape
    assert np.abs(back.astype(int) - frames).max() <= 8  # a palette of 256 holds these few colours


def test_no_frames_is_an_error_and_leaves_no_file(no_encoder, tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        write_video([], tmp_path / "v.mp4", fps=10)
    assert list(tmp_path.iterdir()) == []


def test_data_view_does_not_crash_without_an_mp4_encoder(no_encoder, tmp_path, capsys):
    from agent.collect import CollectConfig, collect
    from data.dataset import Dataset
    from play.cli import main

    data = tmp_path / "data"
    collect(
        CollectConfig(out=str(data), scenario="basic", policy="random", episodes=1, workers=1, max_steps=8),
        progress=False,
    )
    assert main(["data", "view", str(data), "--episode", "0", "--out", str(tmp_path / "ep.mp4")]) == 0
    assert "ep.gif" in capsys.readouterr().err
    assert len(read_video(tmp_path / "ep.gif")) == len(Dataset(data).load(0))
