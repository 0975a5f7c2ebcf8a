r"""Matplotlib figures for training runs and notebooks: loss curves, confusion matrices, sample efficiency,
attention maps; and :func:`read_metrics` for a run's ``metrics.jsonl``.

Every function builds a :class:`matplotlib.figure.Figure` object directly, draws on it, saves it as a PNG
when ``path`` is given, and returns it. Such a figure belongs to nobody: it never opens a window, needs no
GUI backend (it works on a server without a display) and does not change the backend a notebook chose.
Nothing has to be closed either, since pyplot never kept a reference to it. In a Jupyter notebook, run
``%matplotlib inline`` once (it tells IPython how to draw a figure; drawing any pyplot figure first does it
too); from then on a returned figure left as the last expression of a cell is shown.

Errors are :class:`PlotError` (a ``ValueError``) naming the function, file or argument.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from minipt.errors import MiniptError

__all__ = [
    "PlotError",
    "read_metrics",
    "plot_loss_curves",
    "plot_confusion_matrix",
    "plot_sample_efficiency",
    "plot_attention",
    "plot_demo_report",
]


PlotError = MiniptError  # a metrics file or a plotting argument cannot be used (the message names which)


def _save(figure: Figure, path: str | os.PathLike | None) -> Figure:
    """Write ``figure`` to ``path`` as a PNG (when a path is given) and hand it back."""
    if path is not None:
        figure.savefig(path, format="png", dpi=120, bbox_inches="tight")
    return figure


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a ``metrics.jsonl`` file: one JSON object per line, blank lines skipped.

    A last line without its closing newline that is not valid JSON is the record a killed run was writing;
    it is left out. Any other bad line is an error naming the file and line number.
    """
    path = Path(path)
    if not path.is_file():
        raise PlotError(f"{path}: no such metrics file")
    lines = path.read_text(encoding="utf-8").split("\n")  # a complete file ends with "\n": last piece is ""
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):  # the unfinished last line of an interrupted run
                break
            raise PlotError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise PlotError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


def plot_loss_curves(
    records: list[dict],
    path: str | os.PathLike | None = None,
    title: str = "Training and validation loss",
    loss_unit: str = "token",
) -> Figure:
    """Train and validation loss against the optimisation step, from ``metrics.jsonl``-style records.

    Each record is a dict with ``step`` and, when measured at that step, ``train_loss`` and/or ``val_loss``
    (mean cross-entropy in nats per ``loss_unit``: per token for a language model, per example for a
    classifier). A curve is drawn for each key that some record has: "train" as
    a line, "validation" as a line with markers (it is measured less often).
    """
    for number, record in enumerate(records):
        if "step" not in record:
            raise PlotError(f"plot_loss_curves: record {number} has no 'step' (keys: {sorted(record)})")
    curves = {}  # label -> [(step, loss), ...]
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        points = [(record["step"], record[key]) for record in records if key in record]
        if points:
            curves[label] = points
    if not curves:
        raise PlotError("plot_loss_curves: no record has a 'train_loss' or 'val_loss' to plot")

    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    for label, points in curves.items():
        steps, losses = zip(*points, strict=True)
        axes.plot(steps, losses, label=label, marker="o" if label == "validation" else None)
    axes.set_xlabel("step")
    axes.set_ylabel(f"loss (nats/{loss_unit})")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, path)


def plot_confusion_matrix(
    confusion: Tensor,
    labels: list[str],
    path: str | os.PathLike | None = None,
    title: str = "Confusion matrix",
) -> Figure:
    """A heatmap of a ``(C, C)`` confusion matrix (rows true class, columns predicted) with the counts written
    in the cells; ``labels[c]`` names row and column ``c``. Darker cells hold more examples."""
    confusion = torch.as_tensor(confusion).cpu()
    num_classes = len(labels)
    if confusion.shape != (num_classes, num_classes):
        raise PlotError(
            f"plot_confusion_matrix: confusion has shape {tuple(confusion.shape)}, "
            f"expected ({num_classes}, {num_classes}) for {num_classes} labels"
        )
    size = 2.0 + 0.6 * num_classes
    figure = Figure(figsize=(size, size))
    axes = figure.add_subplot()
    axes.imshow(confusion.numpy(), cmap="Blues", vmin=0)
    darkest = confusion.max().item()
    for true_class in range(num_classes):
        for predicted_class in range(num_classes):
            count = confusion[true_class, predicted_class].item()
            color = "white" if count > darkest / 2 else "black"  # readable on dark and light cells
            axes.text(predicted_class, true_class, f"{count:g}", ha="center", va="center", color=color)
    axes.set_xticks(range(num_classes), labels, rotation=45, ha="right")
    axes.set_yticks(range(num_classes), labels)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    return _save(figure, path)


def plot_sample_efficiency(
    results: dict[str, list[tuple[int, float, float]]],
    path: str | os.PathLike | None = None,
    title: str = "Accuracy against the number of labelled examples",
    baselines: dict[str, float] | None = None,
    ylabel: str = "accuracy",
) -> Figure:
    """A score (accuracy by default; ``ylabel`` names it) against the number of labelled training examples
    (log x axis), one line per method.

    ``results[method]`` is a list of ``(num_examples, mean_accuracy, spread)``: the mean over seeds and the
    half-height of its error bar (e.g. the standard deviation over seeds). ``baselines`` maps a name to a
    constant accuracy (chance, the majority class, ...) drawn as a dashed horizontal line.
    """
    if not results:
        raise PlotError("plot_sample_efficiency: results is empty (expected {method: [(n, mean, spread), ...]})")
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    for method, points in results.items():
        if not points:
            raise PlotError(f"plot_sample_efficiency: method {method!r} has no points")
        sizes, means, spreads = zip(*sorted(points), strict=True)
        axes.errorbar(sizes, means, yerr=spreads, marker="o", capsize=3, label=method)
    for name, value in (baselines or {}).items():
        axes.axhline(value, linestyle="--", color="gray", linewidth=1, label=name)
    axes.set_xscale("log")
    axes.set_xlabel("labelled examples (log scale)")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, path)


def plot_attention(
    weights: Tensor,
    tokens: list[str],
    path: str | os.PathLike | None = None,
    title: str = "Attention weights",
) -> Figure:
    """A heatmap of one head's attention weights: row ``i`` is query token ``i``, column ``j`` key token ``j``,
    and cell ``(i, j)`` is how much token ``i`` attends to token ``j`` (each row sums to 1).

    Shapes: ``weights`` ``(T, T)``; ``tokens`` ``T`` strings.
    """
    weights = torch.as_tensor(weights).detach().float().cpu()
    length = len(tokens)
    if weights.shape != (length, length):
        raise PlotError(
            f"plot_attention: weights has shape {tuple(weights.shape)}, expected ({length}, {length}) "
            f"for {length} tokens"
        )
    size = 2.5 + 0.35 * length
    figure = Figure(figsize=(size + 1.0, size))  # + room for the colour bar
    axes = figure.add_subplot()
    image = axes.imshow(weights.numpy(), cmap="viridis", vmin=0)
    figure.colorbar(image, ax=axes, label="attention weight")
    axes.set_xticks(range(length), tokens, rotation=90)
    axes.set_yticks(range(length), tokens)
    axes.set_xlabel("key (attended-to token)")
    axes.set_ylabel("query token")
    axes.set_title(title)
    return _save(figure, path)


def plot_demo_report(
    rows: list[dict],
    pretraining_curves: dict[str, list[dict]],
    path: str | os.PathLike | None = None,
) -> Figure:
    """The demo in one picture: test macro-F1 per row (left) and the pretraining losses (right).

    ``rows``: dicts with ``name`` and ``test_macro_f1``, and optionally ``test_macro_f1_std`` (the spread over
    seeds, drawn as an error bar). ``pretraining_curves``: a label (e.g. ``"Transformer"``) -> that run's
    ``metrics.jsonl`` records; the validation loss is drawn against the wall-clock seconds of training.
    """
    if not rows:
        raise PlotError("plot_demo_report: no rows to plot")
    figure = Figure(figsize=(12, 4.2))
    bars, curves = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1.3, 1]})
    names = [row["name"] for row in rows][::-1]  # the first row on top
    values = [row["test_macro_f1"] for row in rows][::-1]
    spreads = [row.get("test_macro_f1_std", 0.0) for row in rows][::-1]
    colours = ["tab:blue" if "pretrained" in name else "tab:gray" for name in names]  # pretrained vs controls
    bars.barh(names, values, xerr=spreads if any(spreads) else None, color=colours, alpha=0.85, capsize=4)
    for y, (value, spread) in enumerate(zip(values, spreads, strict=True)):
        label = f"{value:.3f}" + (f" ± {spread:.3f}" if spread else "")
        bars.text(value + spread + 0.01, y, label, va="center", fontsize=9)
    bars.set_xlim(0.0, 1.0)
    bars.set_xlabel("test macro-F1")
    bars.set_title("Few labels: what pretraining and frozen layers buy")
    bars.grid(axis="x", alpha=0.3)
    for label, records in pretraining_curves.items():
        points = [(record["elapsed_seconds"], record["val_loss"]) for record in records
                  if "val_loss" in record and "elapsed_seconds" in record]
        if points:
            seconds, losses = zip(*points, strict=True)
            curves.plot(seconds, losses, marker="o", label=label)
    curves.set_xlabel("pretraining time (s)")
    curves.set_ylabel("validation loss (nats/token)")
    curves.set_title("Pretraining")
    curves.grid(alpha=0.3)
    if pretraining_curves:
        curves.legend()
    figure.tight_layout()
    return _save(figure, path)
