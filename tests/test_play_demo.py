import os
import subprocess
import sys

import pytest

from data.video import read_video

NO_DISPLAY = {"DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER"}


@pytest.mark.parametrize(
    "display, said",
    [({}, "no display found"), ({"SDL_VIDEODRIVER": "dummy"}, "SDL_VIDEODRIVER=dummy shows no window")],
    ids=["no display", "dummy video driver"],
)
def test_play_with_no_display_and_no_ckpt_writes_a_demo_of_the_default_model(tmp_path, display, said):
    """The README's first command, where no window can be seen (as in containers and CI), ends with a demo
    video instead of a window nobody sees."""
    env = {k: v for k, v in os.environ.items() if k not in NO_DISPLAY} | display
    done = subprocess.run(
        [sys.executable, "-m", "play.cli", "play", "--frames", "12"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert said in done.stderr and "demo.mp4" in done.stderr
    frames = read_video(tmp_path / "demo.mp4")
    assert len(frames) == 12 and frames.std() > 10  # the dream beside the real engine, not a blank video
