"""Drawing: the frame scaled up with a chosen filter, the mirror beside it, and the HUD text over it.

Everything is drawn into surfaces made once (per size), so a frame allocates nothing that stays; the
HUD text is re-rendered only when it changes (a few times a second).
"""

from __future__ import annotations

import numpy as np
import pygame

FILTERS = ("nearest", "smooth", "scale2x")
HUD_FONT_PX = 16
HUD_MARGIN = 4
HUD_BACKGROUND = (0, 0, 0, 150)
HUD_COLOR = (255, 255, 120)
LABEL_COLOR = (200, 200, 200)


class Display:
    """Composes one picture: dream (left), optional mirror (right), HUD; onto any target surface."""

    def __init__(self, size: tuple[int, int], scale: int = 4, filter: str = "nearest"):
        if filter not in FILTERS:
            raise ValueError(f"--filter {filter!r}: choose one of {', '.join(FILTERS)}")
        if scale < 1:
            raise ValueError(f"--scale {scale}: must be at least 1")
        self.w, self.h = size
        self.scale = scale
        self.filter = filter
        # One pixel format for the scaling chain (smoothscale and scale2x want source and destination
        # alike); the target, whatever its format, gets one converting blit.
        self.src = pygame.Surface((self.w, self.h), depth=32)
        self.src2x = pygame.Surface((2 * self.w, 2 * self.h), depth=32)
        self.big = pygame.Surface((self.w * scale, self.h * scale), depth=32)
        if not pygame.font.get_init():
            pygame.font.init()
        self.font = pygame.font.Font(None, max(HUD_FONT_PX, 6 * scale + 4))
        self._labels = {text: self.font.render(text, True, LABEL_COLOR) for text in ("dream", "engine")}
        self._hud_text: tuple[str, ...] = ()
        self._hud: pygame.Surface | None = None

    def canvas_size(self, mirror: bool) -> tuple[int, int]:
        """Pixels the composed picture needs."""
        return (self.w * self.scale * (2 if mirror else 1), self.h * self.scale)

    def _blit_frame(self, frame: np.ndarray, target: pygame.Surface, x: int) -> None:
        pygame.surfarray.blit_array(self.src, frame.swapaxes(0, 1))  # (W, H, 3) view of (H, W, 3)
        size = self.big.get_size()
        if self.scale == 1:
            target.blit(self.src, (x, 0))
            return
        if self.filter == "smooth":
            pygame.transform.smoothscale(self.src, size, self.big)
        elif self.filter == "scale2x":
            pygame.transform.scale2x(self.src, self.src2x)
            pygame.transform.scale(self.src2x, size, self.big)
        else:
            pygame.transform.scale(self.src, size, self.big)
        target.blit(self.big, (x, 0))

    def draw(
        self,
        target: pygame.Surface,
        frame: np.ndarray,
        mirror: np.ndarray | None = None,
        hud: tuple[str, ...] | None = None,
    ) -> None:
        """Draw `frame` (H, W, 3) uint8, the mirror frame beside it, and HUD lines over the top left."""
        self._blit_frame(frame, target, 0)
        if mirror is not None:
            self._blit_frame(mirror, target, self.w * self.scale)
            self._label(target, "dream", 0)
            self._label(target, "engine", self.w * self.scale)
        if hud:
            if hud != self._hud_text:
                self._hud_text = hud
                self._hud = self._render_hud(hud)
            target.blit(self._hud, (HUD_MARGIN, HUD_MARGIN))

    def _label(self, target: pygame.Surface, text: str, x: int) -> None:
        surf = self._labels[text]
        # Top right: the bottom of a Doom frame is its status bar.
        target.blit(surf, (x + self.w * self.scale - surf.get_width() - HUD_MARGIN, HUD_MARGIN))

    def _render_hud(self, lines: tuple[str, ...]) -> pygame.Surface:
        rendered = [self.font.render(line, True, HUD_COLOR) for line in lines]
        width = max(r.get_width() for r in rendered) + 2 * HUD_MARGIN
        height = sum(r.get_height() for r in rendered) + 2 * HUD_MARGIN
        box = pygame.Surface((width, height), pygame.SRCALPHA)
        box.fill(HUD_BACKGROUND)
        y = HUD_MARGIN
        for r in rendered:
            box.blit(r, (HUD_MARGIN, y))
            y += r.get_height()
        return box
