"""What a run writes besides its checkpoints: one ``metrics.jsonl`` line per evaluation, and at the end
``loss.png`` (train and validation curves) and ``summary.json``.

Under torchrun rank 0 alone writes (:class:`RunRecords` does nothing on the other ranks).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minipt.plots import plot_loss_curves, read_metrics
from minipt.runs.folder import write_atomic, write_json
from minipt.training import distributed
from minipt.training.callbacks import Callback

if TYPE_CHECKING:
    from minipt.training.state import LoopState, TrainingState

__all__ = ["evaluation_record", "RunRecords"]


def evaluation_record(loop: LoopState, evaluation: dict[str, float], lr: float, tokens_per_second: float) -> dict:
    """The ``metrics.jsonl`` line of an evaluation at ``loop.step``. Its train loss is the mean since the last
    evaluation, over the ranks (every rank calls this)."""
    train_loss = distributed.all_reduce_mean(loop.train_loss_sum / loop.train_loss_count)
    return {"step": loop.step, "tokens": loop.tokens_seen, "train_loss": train_loss, **evaluation, "lr": lr,
            "elapsed_seconds": round(loop.elapsed_seconds, 3), "tokens_per_second": round(tokens_per_second, 1)}


class RunRecords(Callback):
    """``metrics.jsonl``, ``loss.png`` and ``summary.json`` of the run in ``run_dir`` (``loss_unit``: what one loss
    value averages over, the label of ``loss.png``): one of the loop's callbacks."""

    def __init__(self, run_dir: Path, loss_unit: str) -> None:
        self.metrics = run_dir / "metrics.jsonl"
        self.run_dir, self.loss_unit = run_dir, loss_unit

    def on_train_start(self, state: TrainingState, resumed: bool) -> None:
        """On resume: keep only the records up to the saved step (later lines belong to the lost future)."""
        if resumed and distributed.is_main() and self.metrics.exists():
            step = state.loop.step
            records = [record for record in read_metrics(self.metrics) if record["step"] <= step]
            write_atomic(self.metrics, "".join(json.dumps(record) + "\n" for record in records))

    def on_evaluation(self, record: dict) -> None:
        """Append the line and flush it to disk (a crash loses at most the line being written)."""
        if distributed.is_main():
            with self.metrics.open("a", encoding="utf-8") as file:
                file.write(json.dumps(record) + "\n")

    def on_train_end(self, result: Any, loop: LoopState) -> None:
        """``loss.png`` from ``metrics.jsonl``, and ``summary.json``: the loop's ``result`` (a dataclass) and the
        elapsed time."""
        if not distributed.is_main():
            return
        if self.metrics.exists():
            plot_loss_curves(read_metrics(self.metrics), self.run_dir / "loss.png", loss_unit=self.loss_unit)
        write_json(self.run_dir / "summary.json", {**asdict(result), "elapsed_seconds": loop.elapsed_seconds})
