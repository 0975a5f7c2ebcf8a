"""minipt.plots: each figure is saved as a real PNG and draws exactly the data it was given (checked on the
Figure's artists: line data, image arrays, cell texts, titles and axis labels); read_metrics reads JSON lines.
"""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from minipt.plots import (
    PlotError,
    plot_attention,
    plot_confusion_matrix,
    plot_loss_curves,
    plot_sample_efficiency,
    read_metrics,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# metrics.jsonl-style records: train loss at every logged step, validation loss every other step
RECORDS = [
    {"step": 10, "train_loss": 4.1},
    {"step": 20, "train_loss": 3.5, "val_loss": 3.7},
    {"step": 30, "train_loss": 3.0},
    {"step": 40, "train_loss": 2.6, "val_loss": 2.9, "lr": 0.001},
]


def assert_png(path) -> None:
    content = path.read_bytes()
    assert len(content) > 1000 and content.startswith(PNG_SIGNATURE)


def test_plot_loss_curves_draws_train_and_validation(tmp_path):
    figure = plot_loss_curves(RECORDS, tmp_path / "loss.png", title="tiny run")
    assert isinstance(figure, Figure)
    assert_png(tmp_path / "loss.png")
    (axes,) = figure.axes
    assert axes.get_title() == "tiny run"
    assert axes.get_xlabel() == "step" and axes.get_ylabel() == "loss (nats/token)"
    train, validation = axes.get_lines()
    assert train.get_label() == "train" and validation.get_label() == "validation"
    assert list(train.get_xdata()) == [10, 20, 30, 40] and list(train.get_ydata()) == [4.1, 3.5, 3.0, 2.6]
    assert list(validation.get_xdata()) == [20, 40] and list(validation.get_ydata()) == [3.7, 2.9]
    assert [text.get_text() for text in axes.get_legend().get_texts()] == ["train", "validation"]


def test_plot_loss_curves_names_the_loss_unit(tmp_path):
    figure = plot_loss_curves(RECORDS, tmp_path / "loss.png", loss_unit="example")
    assert figure.axes[0].get_ylabel() == "loss (nats/example)"


def test_plot_loss_curves_without_validation_and_without_a_path(tmp_path):
    figure = plot_loss_curves([{"step": 1, "train_loss": 2.0}, {"step": 2, "train_loss": 1.5}])
    (line,) = figure.axes[0].get_lines()
    assert line.get_label() == "train" and list(line.get_ydata()) == [2.0, 1.5]
    assert list(tmp_path.iterdir()) == []  # no path: nothing written


def test_plot_loss_curves_errors():
    with pytest.raises(PlotError, match="no record has a 'train_loss' or 'val_loss'"):
        plot_loss_curves([{"step": 1, "accuracy": 0.5}])
    with pytest.raises(PlotError, match="record 1 has no 'step'"):
        plot_loss_curves([{"step": 1, "train_loss": 2.0}, {"train_loss": 1.0}])


def test_plot_confusion_matrix_writes_the_counts_in_the_cells(tmp_path):
    confusion = torch.tensor([[2, 1, 1], [1, 2, 0], [0, 1, 0]])
    labels = ["comedy", "history", "tragedy"]
    figure = plot_confusion_matrix(confusion, labels, tmp_path / "confusion.png", title="genres")
    assert_png(tmp_path / "confusion.png")
    (axes,) = figure.axes
    assert axes.get_title() == "genres"
    assert axes.get_xlabel() == "predicted class" and axes.get_ylabel() == "true class"
    (image,) = axes.get_images()
    assert np.array_equal(image.get_array(), confusion.numpy())
    # one text per cell, at x = predicted (column), y = true (row)
    cells = {(text.get_position()[1], text.get_position()[0]): text.get_text() for text in axes.texts}
    assert cells == {(i, j): str(confusion[i, j].item()) for i in range(3) for j in range(3)}
    assert [tick.get_text() for tick in axes.get_xticklabels()] == labels
    assert [tick.get_text() for tick in axes.get_yticklabels()] == labels
    # the largest count (2) is drawn white on its dark cell, the others black
    colours = {text.get_text(): matplotlib.colors.to_hex(text.get_color()) for text in axes.texts}
    assert colours["2"] == "#ffffff" and colours["1"] == "#000000" and colours["0"] == "#000000"


def test_plot_confusion_matrix_checks_labels():
    with pytest.raises(PlotError, match=r"confusion has shape \(2, 2\), expected \(3, 3\) for 3 labels"):
        plot_confusion_matrix(torch.zeros(2, 2), ["a", "b", "c"])


def test_plot_sample_efficiency_one_errorbar_line_per_method_and_baselines(tmp_path):
    results = {
        "pretrained": [(100, 0.70, 0.02), (10, 0.50, 0.05), (1000, 0.85, 0.01)],  # unsorted on purpose
        "from scratch": [(10, 0.35, 0.04), (100, 0.45, 0.03), (1000, 0.70, 0.02)],
    }
    figure = plot_sample_efficiency(
        results, tmp_path / "efficiency.png", title="genre task", baselines={"majority class": 0.4}
    )
    assert_png(tmp_path / "efficiency.png")
    (axes,) = figure.axes
    assert axes.get_title() == "genre task"
    assert axes.get_xscale() == "log"
    assert axes.get_xlabel() == "labelled examples (log scale)" and axes.get_ylabel() == "accuracy"
    assert len(axes.containers) == 2  # one error-bar plot per method
    pretrained, scratch = axes.containers
    assert pretrained.get_label() == "pretrained" and scratch.get_label() == "from scratch"
    data_line = pretrained.lines[0]  # the line through the means, sorted by number of examples
    assert list(data_line.get_xdata()) == [10, 100, 1000] and list(data_line.get_ydata()) == [0.50, 0.70, 0.85]
    # the error bar at n = 10 spans mean +- spread = 0.50 +- 0.05
    (bars,) = pretrained.lines[2]
    first_bar = bars.get_segments()[0]
    assert first_bar[:, 0].tolist() == [10, 10]
    assert first_bar[:, 1].tolist() == pytest.approx([0.45, 0.55], abs=1e-12)
    baseline = [line for line in axes.get_lines() if line.get_label() == "majority class"]
    assert len(baseline) == 1 and list(baseline[0].get_ydata()) == [0.4, 0.4]
    legend = [text.get_text() for text in axes.get_legend().get_texts()]
    assert sorted(legend) == ["from scratch", "majority class", "pretrained"]


def test_plot_sample_efficiency_names_another_score(tmp_path):
    figure = plot_sample_efficiency({"bow": [(10, 0.4, 0.0), (100, 0.5, 0.0)]}, ylabel="macro-F1")
    assert figure.axes[0].get_ylabel() == "macro-F1"


def test_plot_sample_efficiency_without_baselines_and_errors():
    figure = plot_sample_efficiency({"only": [(8, 0.5, 0.0)]})
    assert [line.get_label() for line in figure.axes[0].get_lines() if not line.get_label().startswith("_")] == []
    with pytest.raises(PlotError, match="results is empty"):
        plot_sample_efficiency({})
    with pytest.raises(PlotError, match="method 'x' has no points"):
        plot_sample_efficiency({"x": []})


def test_plot_attention_shows_the_weights(tmp_path):
    weights = torch.tensor([[1.0, 0.0, 0.0], [0.25, 0.75, 0.0], [0.2, 0.3, 0.5]])  # causal, rows sum to 1
    tokens = ["to", "be", "or"]
    figure = plot_attention(weights, tokens, tmp_path / "attention.png", title="layer 0, head 1")
    assert_png(tmp_path / "attention.png")
    axes = figure.axes[0]  # figure.axes[1] is the colour bar
    assert len(figure.axes) == 2
    assert axes.get_title() == "layer 0, head 1"
    assert axes.get_xlabel() == "key (attended-to token)" and axes.get_ylabel() == "query token"
    (image,) = axes.get_images()
    assert np.array_equal(image.get_array(), weights.numpy())
    assert [tick.get_text() for tick in axes.get_xticklabels()] == tokens
    assert [tick.get_text() for tick in axes.get_yticklabels()] == tokens


def test_plot_attention_accepts_a_tensor_with_grad_and_checks_shapes():
    weights = torch.full((2, 2), 0.5, requires_grad=True)
    assert np.array_equal(plot_attention(weights, ["a", "b"]).axes[0].get_images()[0].get_array(), np.full((2, 2), 0.5))
    with pytest.raises(PlotError, match=r"weights has shape \(2, 2\), expected \(3, 3\) for 3 tokens"):
        plot_attention(torch.ones(2, 2), ["a", "b", "c"])


def test_read_metrics_reads_json_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in RECORDS) + "\n")  # a trailing blank line
    assert read_metrics(path) == RECORDS
    # the records feed plot_loss_curves directly
    assert list(plot_loss_curves(read_metrics(path)).axes[0].get_lines()[1].get_ydata()) == [3.7, 2.9]


def test_read_metrics_skips_only_an_unfinished_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n" + '{"step": 20, "train_lo')  # the run died mid-write
    assert read_metrics(path) == [RECORDS[0]]
    path.write_text(json.dumps(RECORDS[0]) + "\n" + '{"step": 20, "train_lo\n' + json.dumps(RECORDS[2]) + "\n")
    with pytest.raises(PlotError, match=r"metrics.jsonl:2: not valid JSON"):
        read_metrics(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(PlotError, match=r"metrics.jsonl:1: expected a JSON object, got list"):
        read_metrics(path)
    with pytest.raises(PlotError, match="no such metrics file"):
        read_metrics(tmp_path / "missing.jsonl")
