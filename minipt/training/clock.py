"""The loop's clock: the elapsed time of a run (carried over a resume) and its throughput in tokens per second.

Two throughputs are measured: per step (the progress bar shows it) and over the training since the last
evaluation ended (``metrics.jsonl`` records it: evaluating and saving are not counted as training).
"""

from __future__ import annotations

import time

__all__ = ["Clock"]


class Clock:
    """Started (or resumed) with ``elapsed_seconds`` of the run behind it and ``tokens_seen`` tokens trained."""

    def __init__(self, elapsed_seconds: float, tokens_seen: int) -> None:
        now = time.perf_counter()
        self.start = now - elapsed_seconds
        self.step_time, self.step_tokens = now, tokens_seen
        self.mark_time, self.mark_tokens = now, tokens_seen

    def step_started(self, tokens_seen: int) -> None:
        self.step_time, self.step_tokens = time.perf_counter(), tokens_seen

    def step_done(self, tokens_seen: int) -> tuple[float, float]:
        """The elapsed seconds of the run, and the step's tokens per second."""
        now = time.perf_counter()
        return now - self.start, (tokens_seen - self.step_tokens) / max(now - self.step_time, 1e-9)

    def tokens_per_second(self, tokens_seen: int) -> float:
        """Training throughput since :meth:`mark` (the end of the last evaluation)."""
        return (tokens_seen - self.mark_tokens) / max(time.perf_counter() - self.mark_time, 1e-9)

    def mark(self, tokens_seen: int) -> None:
        """Restart the throughput clock (after an evaluation and its saves)."""
        self.mark_time, self.mark_tokens = time.perf_counter(), tokens_seen
