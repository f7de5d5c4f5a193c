import json

import numpy as np
import pytest
from PIL import Image

from conftest import make_episode
from data.actions import DEFAULT_ACTIONS
from data.coverage import BACKGROUND, TITLE_HEIGHT, grid_cells, measure, render
from data.dataset import Manifest, ShardWriter, default_recorder
from data.episode import VARIABLES
from play.cli import main


def walk(rng, path: list[tuple[float, float]], kills: int = 0, items: int = 0):
    """An episode whose player walks along `path` (one position per step)."""
    ep = make_episode(rng, steps=len(path))
    ep.variables[:] = 0
    ep.variables[:, [VARIABLES.index("POSITION_X"), VARIABLES.index("POSITION_Y")]] = path
    ep.variables[-1, VARIABLES.index("KILLCOUNT")] = kills
    ep.variables[-1, VARIABLES.index("ITEMCOUNT")] = items
    return ep


def write_dataset(root, episodes):
    manifest = Manifest(
        scenario="e1m1",
        map="E1M1",
        resolution=(32, 24),
        frame_skip=2,
        recorder=default_recorder("test"),
        action_contract=DEFAULT_ACTIONS.to_dict(),
    )
    writer = ShardWriter(root / "shard", manifest)
    for ep in episodes:
        writer.write(ep)


def test_grid_cells_and_measure():
    assert grid_cells(np.array([[0, 0], [63, 63], [64, 0], [-1, 0]]), 64) == {(0, 0), (1, 0), (-1, 0)}
    assert grid_cells(np.zeros((0, 2))) == set()
    a = np.array([[0.0, 0.0], [100.0, 0.0], [200.0, 0.0]])
    b = np.array([[200.0, 0.0], [200.0, 100.0]])
    counts = np.zeros((3, 3))
    counts[-1] = [2, 1, 0]
    cov = measure([("a", a, counts), ("b", b, np.zeros((2, 3)))], cell_size=64)
    assert [e.cells for e in cov.episodes] == [3, 2]
    assert cov.total_cells == 4
    assert cov.mean("kills") == 1.0 and cov.mean("items") == 0.5
    assert cov.to_dict()["cells_per_episode"] == 2.5


def test_render_draws_visited_path_north_up():
    xy = np.array([[0.0, 0.0], [400.0, 0.0], [400.0, 400.0]])  # east, then north
    pic = np.asarray(render([("a", xy, np.zeros((3, 3)))], bounds=(-80, -80, 480, 480), units_per_pixel=8))
    assert pic.shape == (70, 70, 3)
    assert (pic[35, 70 - 10] != BACKGROUND).any()  # x=400, y=200: on the northward leg
    assert (pic[35, 10] == BACKGROUND).all()  # x=0, y=200: never visited
    assert (pic[70 - 10, 35] != BACKGROUND).any()  # x=200, y=0: on the eastward leg, near the bottom
    with pytest.raises(ValueError, match="no positions"):
        render([("a", np.zeros((0, 2)), np.zeros((0, 3)))])
    with pytest.raises(ValueError, match="bounds"):
        render([("a", xy, np.zeros((3, 3)))], bounds=(0, 0, -1, 10))


def test_cli_data_coverage(tmp_path, capsys, rng):
    root = tmp_path / "ds"
    write_dataset(
        root,
        [
            walk(rng, [(x, 0.0) for x in range(0, 640, 16)], kills=1, items=2),
            walk(rng, [(0.0, y) for y in range(0, 320, 16)]),
        ],
    )
    out = tmp_path / "map.png"
    assert main(["data", "coverage", str(root), "--out", str(out), "--json", "--per-episode"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["episodes"] == 2 and d["cells_per_episode"] == 7.5 and d["total_cells"] == 14
    assert d["kills_per_episode"] == 0.5 and d["items_per_episode"] == 1.0
    assert [e["cells"] for e in d["per_episode"]] == [10, 5]
    pic = Image.open(out)
    assert pic.mode == "RGB" and pic.height > TITLE_HEIGHT

    assert main(["data", "coverage", str(root), "--out", str(out)]) == 0
    assert "14 over the dataset" in capsys.readouterr().out
    assert main(["data", "coverage", str(root), "--out", str(out), "--bounds", "1,2"]) == 2
    assert "--bounds" in capsys.readouterr().err
    assert main(["data", "coverage", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "nothing" in capsys.readouterr().err
