"""The real-time pygame window: input from the event queue, overlapped stepping, frame pacing, HUD.

One loop iteration shows one frame:

    read events -> action a_n -> session.submit(a_n) (worker: frame n+1)
    draw frame n + HUD, flip          (overlaps the worker)
    session.collect()                 (frame n+1 ready)
    wait for the next frame's time    (35 / frame_skip frames/s; no wait with --unlocked)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import pygame

from play.display import Display
from play.inputs import InputConfig, InputState
from play.session import PlaySession
from play.stats import RollingTimes

TICS_PER_SECOND = 35.0
HUD_REFRESH_S = 0.25
MESSAGE_S = 3.0
PAUSED_POLL_S = 0.02


@dataclass
class WindowConfig:
    """How the game is shown and paced."""

    scale: int = 4  # window pixels per frame pixel
    filter: str = "nearest"  # nearest | smooth | scale2x
    unlocked: bool = False  # step as fast as the model allows instead of real time
    hud: bool = True  # start with the HUD shown (H toggles)
    sensitivity: float = 0.15  # degrees of turn per pixel of mouse x-motion
    grab_mouse: bool = True  # relative mouse mode (hidden, captured)
    record_dir: str = "recordings"  # F5 writes dataset shards here
    screenshot_dir: str = "."  # F12 writes PNGs here
    max_frames: int = 0  # quit after this many frames (0: play until Esc)
    meta: dict | None = None  # recorded with every episode (checkpoint, device, ...)


def _db(value: float) -> str:
    return "identical" if math.isinf(value) else f"{value:5.1f} dB"


def hud_lines(
    session: PlaySession, fps: float, target_fps: float | None, message: str = ""
) -> tuple[str, ...]:
    """The HUD text: frames/s, model latency, denoising steps, action, mirror PSNR, state."""
    target = "unlocked" if target_fps is None else f"target {target_fps:.1f}"
    model = session.model_ms.median()
    split = session.timing
    lines = [f"{fps:5.1f} frames/s ({target})"]
    if math.isnan(model):  # no step in the last second: the first frame, or paused
        lines.append(f"{'engine' if session.is_engine else 'model'}    -- ms")
    elif "dit_ms" in split:
        lines.append(f"model {model:5.1f} ms (dit {split['dit_ms']:.1f}, decode {split['decode_ms']:.1f})")
    else:
        lines.append(f"{'engine' if session.is_engine else 'model'} {model:5.1f} ms")
    if session.steps is not None:
        lines.append(f"steps {session.steps}  ([ ])")
    lines.append(f"action {session.spec.describe(session.action)}")
    if session.mirror:
        if session.mirror_steps == 0:  # both show the same start frame: nothing to compare yet
            lines.append("mirror PSNR -- (from the first step)")
        else:
            lines.append(
                f"mirror PSNR {_db(session.psnr)} (mean {_db(session.mean_psnr)} "
                f"over {session.mirror_steps}), engine {session.mirror_ms.median():.1f} ms"
            )
    if session.recorder is not None:
        lines.append(f"REC {session.recorder.frames} frames")
    if session.paused:
        lines.append("PAUSED (P)")
    if message:
        lines.append(message)
    return tuple(lines)


class GameWindow:
    """A window around a PlaySession; `run()` until Esc, window close or `max_frames`."""

    def __init__(self, session: PlaySession, config: WindowConfig | None = None):
        self.session = session
        self.cfg = config or WindowConfig()
        pygame.display.init()
        pygame.font.init()
        pygame.display.set_caption("dreamdoom")
        self.display = Display(session.backend.resolution, self.cfg.scale, self.cfg.filter)
        self.screen = pygame.display.set_mode(self.display.canvas_size(session.mirror))
        self.inputs = InputState(session.backend.frame_skip, InputConfig(self.cfg.sensitivity), session.spec)
        self.period = None if self.cfg.unlocked else session.backend.frame_skip / TICS_PER_SECOND
        self.presented = RollingTimes()
        self.draw_ms = RollingTimes()
        self.show_hud = self.cfg.hud
        self.running = True
        self.frames = 0
        self._message, self._message_until = "", 0.0
        self._hud: tuple[str, ...] = ()
        self._hud_at = 0.0
        self._grab(self.cfg.grab_mouse)

    def _grab(self, on: bool) -> None:
        try:
            pygame.mouse.set_relative_mode(on)
        except pygame.error:  # no mouse (e.g. some headless drivers): keyboard turning still works
            pass

    def say(self, message: str) -> None:
        """Show a line on the HUD for a few seconds (and on the terminal)."""
        print(message)
        self._message, self._message_until = message, time.perf_counter() + MESSAGE_S
        self._hud_at = 0.0

    # -- input ---------------------------------------------------------------------------------------
    def handle_events(self) -> None:
        for event in pygame.event.get():
            if event.type == pygame.QUIT:
                self.running = False
            elif event.type == pygame.KEYDOWN and self.command(event.key):
                continue
            elif self.session.paused and event.type == pygame.MOUSEMOTION:
                continue  # looking around while paused does not queue a turn
            self.inputs.handle(event)

    def command(self, key: int) -> bool:
        """Keys that control the game rather than play it; True if `key` was one."""
        s = self.session
        if key == pygame.K_ESCAPE:
            self.running = False
        elif key == pygame.K_r:
            s.reset()
            self.inputs.release_all()
            self.say("reset to " + s.context.source)
        elif key in (pygame.K_LEFTBRACKET, pygame.K_RIGHTBRACKET):
            if s.steps is None:
                self.say("the real engine has no denoising steps")
            else:
                self.say(
                    f"denoising steps: {s.set_steps(s.steps + (1 if key == pygame.K_RIGHTBRACKET else -1))}"
                )
        elif key == pygame.K_p:
            self.say("paused" if s.toggle_pause() else "resumed")
        elif key == pygame.K_h:
            self.show_hud = not self.show_hud
        elif key == pygame.K_m:
            note = s.set_mirror(not s.mirror)
            self.screen = pygame.display.set_mode(self.display.canvas_size(s.mirror))
            self.say(note or ("mirror on: the real engine beside the dream" if s.mirror else "mirror off"))
        elif key == pygame.K_F5:
            if s.recorder is None:
                s.start_recording(self.cfg.record_dir, self.cfg.meta or {})
                self.say(f"recording to {self.cfg.record_dir}")
            else:
                files = s.stop_recording()
                self.say(f"recorded {len(files)} episode file(s) in {self.cfg.record_dir}")
        elif key == pygame.K_F12:
            name = time.strftime("dreamdoom_%Y%m%d_%H%M%S") + f"_{self.frames:06d}.png"  # frame: unique
            path = Path(self.cfg.screenshot_dir) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            pygame.image.save(self.screen, str(path))
            self.say(f"screenshot {path}")
        else:
            return False
        return True

    # -- output --------------------------------------------------------------------------------------
    def draw(self) -> None:
        t0 = time.perf_counter()
        hud = None
        if self.show_hud:
            if t0 >= self._hud_at:
                message = self._message if t0 < self._message_until else ""
                target = None if self.period is None else 1.0 / self.period
                self._hud = hud_lines(self.session, self.presented.rate(), target, message)
                self._hud_at = t0 + HUD_REFRESH_S
            hud = self._hud
        self.display.draw(self.screen, self.session.frame, self.session.mirror_frame, hud)
        pygame.display.flip()
        now = time.perf_counter()
        self.presented.add(0.0, now)
        self.draw_ms.add(1000 * (now - t0), now)

    def tick(self) -> None:
        """One frame: input, step (overlapping the draw), pacing."""
        self.handle_events()
        if not self.running:
            return
        if self.session.paused:
            self.draw()
            time.sleep(PAUSED_POLL_S)
            return
        self.session.submit(self.inputs.action())
        self.draw()
        self.session.collect()
        self.frames += 1
        if self.cfg.max_frames and self.frames >= self.cfg.max_frames:
            self.running = False

    def run(self) -> int:
        """Play until Esc; returns the number of frames shown."""
        next_t = time.perf_counter()
        try:
            while self.running:
                self.tick()
                if self.period is not None:
                    next_t += self.period
                    wait = next_t - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                    elif wait < -self.period:  # fell behind: do not rush to catch up
                        next_t = time.perf_counter()
        finally:
            written = self.session.close()
            if written:
                print(f"recorded {len(written)} episode file(s) in {self.cfg.record_dir}")
            self._grab(False)
            pygame.display.quit()
        return self.frames

    def latency_summary(self) -> dict:
        """Median step and draw latency over the last second (ms)."""
        return {
            "model_ms": self.session.model_ms.median(),
            "draw_ms": self.draw_ms.median(),
            "fps": self.presented.rate(),
        }
