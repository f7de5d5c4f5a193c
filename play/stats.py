"""Figures of a running game with no drawing in them: rolling step times and rates, and PSNR between the
dream and the real engine. Kept apart from play/display.py so the session needs no pygame."""

from __future__ import annotations

import time

import numpy as np


class RollingTimes:
    """Event times and durations in a fixed ring buffer; rate and median over the last second."""

    def __init__(self, capacity: int = 1024):
        self.at = np.full(capacity, -np.inf)
        self.value = np.zeros(capacity)
        self.i = 0

    def add(self, value: float, at: float | None = None) -> None:
        self.at[self.i] = time.perf_counter() if at is None else at
        self.value[self.i] = value
        self.i = (self.i + 1) % len(self.at)

    def _recent(self, window: float) -> np.ndarray:
        return self.at > time.perf_counter() - window

    def rate(self, window: float = 1.0) -> float:
        """Events per second over the last `window` seconds."""
        return float(self._recent(window).sum()) / window

    def median(self, window: float = 1.0) -> float:
        recent = self._recent(window)
        return float(np.median(self.value[recent])) if recent.any() else float("nan")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB) of two uint8 frames of one shape; inf when identical."""
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)
