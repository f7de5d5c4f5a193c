import os
import subprocess
import sys

from data.video import read_video


def test_play_with_no_display_and_no_ckpt_writes_a_demo_of_the_default_model(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")}
    done = subprocess.run(
        [sys.executable, "-m", "play.cli", "play", "--frames", "12"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "no display found" in done.stderr and "demo.mp4" in done.stderr
    frames = read_video(tmp_path / "demo.mp4")
    assert len(frames) == 12 and frames.std() > 10  # the dream beside the real engine, not a blank video
