"""What a run writes besides its checkpoints: one ``metrics.jsonl`` line per evaluation, and at the end
``loss.png`` (train and validation curves) and ``summary.json``.

Under torchrun rank 0 alone writes (:class:`RunRecords` does nothing on the other ranks).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from minipt.plots import plot_loss_curves, read_metrics
from minipt.runs.folder import write_atomic, write_json
from minipt.training import distributed

__all__ = ["RunRecords"]


class RunRecords:
    """``metrics.jsonl``, ``loss.png`` and ``summary.json`` of the run in ``run_dir`` (``loss_unit``: what one loss
    value averages over, the label of ``loss.png``)."""

    def __init__(self, run_dir: Path, loss_unit: str) -> None:
        self.metrics = run_dir / "metrics.jsonl"
        self.run_dir, self.loss_unit = run_dir, loss_unit

    def continue_from(self, step: int) -> None:
        """On resume: keep only the records up to ``step`` (later lines belong to the lost future)."""
        if distributed.is_main() and self.metrics.exists():
            records = [record for record in read_metrics(self.metrics) if record["step"] <= step]
            write_atomic(self.metrics, "".join(json.dumps(record) + "\n" for record in records))

    def evaluation(self, loop: Any, evaluation: dict[str, float], lr: float, tokens_per_second: float) -> dict:
        """Append the line of an evaluation at ``loop.step`` (a :class:`~minipt.training.state.LoopState`) and flush
        it to disk (a crash loses at most the line being written); return it. Its train loss is the mean since the
        last evaluation, over the ranks."""
        train_loss = distributed.all_reduce_mean(loop.train_loss_sum / loop.train_loss_count)
        record = {"step": loop.step, "tokens": loop.tokens_seen, "train_loss": train_loss, **evaluation, "lr": lr,
                  "elapsed_seconds": round(loop.elapsed_seconds, 3), "tokens_per_second": round(tokens_per_second, 1)}
        if distributed.is_main():
            with self.metrics.open("a", encoding="utf-8") as file:
                file.write(json.dumps(record) + "\n")
        return record

    def finish(self, result: Any, elapsed_seconds: float) -> None:
        """``loss.png`` from ``metrics.jsonl``, and ``summary.json``: the loop's ``result`` (a dataclass) and the
        elapsed time."""
        if not distributed.is_main():
            return
        if self.metrics.exists():
            plot_loss_curves(read_metrics(self.metrics), self.run_dir / "loss.png", loss_unit=self.loss_unit)
        write_json(self.run_dir / "summary.json", {**asdict(result), "elapsed_seconds": elapsed_seconds})
