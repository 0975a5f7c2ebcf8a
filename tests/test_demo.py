"""`minipt demo --tiny`: the whole demo (two pretraining runs, frozen finetuning, controls, report) end to end."""

from __future__ import annotations

import json
from collections import Counter

from minipt import cli
from minipt.data import load_task
from minipt.jobs.demo import DemoConfig, pretraining_steps
from minipt.jobs.finetune import select_train_examples


def table(report: str) -> dict[str, list[str]]:
    """The report's first table: row name -> its cells."""
    first_table = report.split("\n\n")[2]
    return {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:6]]
            for line in first_table.splitlines() if line.startswith("| ") and "---" not in line
            and not line.startswith("| model")}


def test_tiny_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--tiny", "--quiet", "--device", "cpu", "--threads", "1", "--out", str(out)]) == 0
    report = (out / "report.md").read_text(encoding="utf-8")
    assert report in capsys.readouterr().out  # printed as well as saved
    assert (out / "report.png").stat().st_size > 10_000
    for run in ["pretrain-transformer", "pretrain-gru", "frozen-transformer", "frozen-gru", "scratch"]:
        assert (out / run / "best.pt").exists() and (out / run / "loss.png").exists(), run
    summaries = {run: json.loads((out / run / "summary.json").read_text())
                 for run in ["frozen-transformer", "frozen-gru", "scratch"]}
    rows = table(report)
    assert len(rows) == 5
    # the table rows carry exactly the runs' own numbers
    names = {"Transformer, pretrained, embedding + lower 1 of 1 layers frozen": "frozen-transformer",
             "GRU LM, pretrained, embedding + lower 1 of 1 layers frozen": "frozen-gru",
             "Transformer from scratch (same architecture)": "scratch"}
    for name, run in names.items():
        summary = summaries[run]
        assert rows[name] == [f"{summary['test_accuracy']:.3f}", f"{summary['test_macro_f1']:.3f}",
                              f"{summary['trainable_params']:,}", f"{summary['wall_seconds']:.1f}"]
    # frozen (1 of 1 layers): only the final norm (2 x 16) and the head (16 x 2 + 2) of the Transformer train
    assert summaries["frozen-transformer"]["trainable_params"] == 2 * 16 + 16 * 2 + 2
    scratch = summaries["scratch"]
    assert scratch["trainable_params"] == scratch["total_params"] == summaries["frozen-transformer"]["total_params"]
    # the majority-class row, recounted: the most common label among the 20 training labels, scored on test
    data = load_task("shakespeare-verse")
    majority = Counter(label for _, label in select_train_examples(data.train, 20, seed=0)).most_common(1)[0][0]
    expected = sum(label == majority for _, label in data.test) / len(data.test)
    majority_row = next(cells for name, cells in rows.items() if name.startswith("majority class"))
    assert majority_row[0] == f"{expected:.3f}"
    assert "| total |" in report and "bag-of-words logistic regression" in rows


def test_pretraining_steps_fill_the_budget():
    # 6 minutes: 360 s - 60 s of finetuning = 300 s; the Transformer gets 65% at 0.093 s per step, the GRU 35% at
    # 0.144 s: int(195 / 0.093) = int(2096.8) = 2096 and int(105 / 0.144) = int(729.2) = 729 steps
    assert pretraining_steps(DemoConfig(minutes=6.0)) == {"transformer": 2096, "gru": 729}


def test_demo_refuses_a_used_folder(tmp_path, capsys):
    (tmp_path / "old.txt").write_text("keep me")
    assert cli.main(["demo", "--tiny", "--quiet", "--out", str(tmp_path)]) == 2
    assert "--out" in capsys.readouterr().err and (tmp_path / "old.txt").exists()
