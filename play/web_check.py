"""Open a dream page in headless Chromium, let it play a scripted input, and read what it reports.

For the browser test and the page's figures (frames/s, time to the first frame):

    python -m play.web_check http://127.0.0.1:8000/ --frames 200 --script '20*1,0,3,0,0;20*0,0,5,0,0'

It drives Debian's chromium through chromedriver (selenium), with a fresh profile and nothing running
in the background, and waits for the page to write its result (play/web_page/dream.js, #result).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from data.cli_args import MAX_SEED, Parser, add_options, arg, build

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=720,880",
)


def browser_paths() -> tuple[str, str] | None:
    """(chromium, chromedriver) where both are installed, else None."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def page_url(base: str, frames: int, script: str, seed: int = 0, keep: tuple[int, ...] = (), **more) -> str:
    query = {"frames": frames, "script": script, "seed": seed, **more}
    if keep:
        query["keep"] = ",".join(map(str, keep))
    return base + "?" + urllib.parse.urlencode(query, safe="*,;")


def tree_cpu_seconds(root: int) -> float | None:
    """CPU time (user + system) of the live processes under `root` (Linux /proc; None elsewhere): the
    browser's cost, which a machine shared with other work does not change, unlike frames/s."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    parents, ticks = {}, {}
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        pid = int(stat.parent.name)
        parents[pid], ticks[pid] = int(fields[1]), int(fields[11]) + int(fields[12])
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += ticks.get(pid, 0)
        todo += [child for child, parent in parents.items() if parent == pid]
    return total / os.sysconf("SC_CLK_TCK")


def play_page(url: str, timeout_s: float = 300, screenshot: str | None = None) -> dict:
    """Load `url` (a page_url) and return the page's result: frames/s, first frame, checksum, kept frames."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = browser_paths()
    if paths is None:
        raise OSError("chromium and chromedriver are needed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    with tempfile.TemporaryDirectory() as profile:
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(paths[1]), options=options)
        try:
            driver.get(url)
            deadline = time.monotonic() + timeout_s
            while not driver.title.startswith("dreamdoom:"):
                if time.monotonic() > deadline:
                    hud = driver.find_element("id", "hud").text
                    raise TimeoutError(f"{url}: no result in {timeout_s:.0f} s (the page shows: {hud})")
                time.sleep(0.2)
            result = json.loads(driver.find_element("id", "result").get_attribute("textContent"))
            result["browser_cpu_s"] = tree_cpu_seconds(driver.service.process.pid)
            if screenshot:
                driver.save_screenshot(screenshot)
            return result
        finally:
            driver.quit()


DEFAULT_SCRIPT = "20*1,0,3,0,0;20*0,0,5,0,0;20*1,2,3,0,0;20*0,0,1,1,0"  # walk, turn, strafe, turn and fire


@dataclass
class CheckArgs:
    url: str = arg(help="the page's address (dreamdoom web --serve prints it)", positional=True)
    frames: int = arg(200, "frames to play", ge=1)
    script: str = arg(DEFAULT_SCRIPT, "input script: runs COUNT*move,strafe,turn,attack,use separated by ;")
    seed: int = arg(0, "seed of the page's noise", ge=0, le=MAX_SEED)
    ep: str = arg("wasm", "backend", choices=("wasm", "webgpu"))
    steps: int | None = arg(None, "the exported step count to play (default: the page's)", ge=1)
    threads: int | None = arg(None, "WebAssembly threads (default: the page's choice)", ge=1)
    screenshot: str | None = arg(None, "also save a PNG of the page when it is done")


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m play.web_check", description=__doc__.splitlines()[0])
    add_options(parser, CheckArgs)
    a = build(CheckArgs, parser.parse_args(argv))
    more = {"ep": a.ep, **{k: v for k, v in (("steps", a.steps), ("threads", a.threads)) if v}}
    result = play_page(page_url(a.url, a.frames, a.script, a.seed, **more), screenshot=a.screenshot)
    result.pop("kept", None)
    print(json.dumps(result, indent=1))
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
