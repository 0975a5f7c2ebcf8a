"""`minipt demo --tiny`: the whole demo (pretrain, finetune frozen, train from scratch, report) end to end."""

from __future__ import annotations

import json
from collections import Counter

from minipt import cli
from minipt.data import load_task
from minipt.finetune import select_train_examples


def test_tiny_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--tiny", "--quiet", "--device", "cpu", "--out", str(out)]) == 0
    report = (out / "report.md").read_text(encoding="utf-8")
    assert report in capsys.readouterr().out  # printed as well as saved
    for run in ["pretrain", "finetuned", "scratch"]:
        assert (out / run / "best.pt").exists() and (out / run / "loss.png").exists(), run
    finetuned = json.loads((out / "finetuned" / "summary.json").read_text())
    scratch = json.loads((out / "scratch" / "summary.json").read_text())
    # the table rows carry exactly the runs' own numbers
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:6]]
            for line in report.splitlines() if line.startswith("| ") and "---" not in line}
    for name, summary in [("pretrained + frozen lower layers", finetuned), ("from scratch", scratch)]:
        assert rows[name] == [f"{summary['test_accuracy']:.3f}", f"{summary['test_macro_f1']:.3f}",
                              f"{summary['trainable_params']:,}", f"{summary['wall_seconds']:.1f}"]
    # frozen: only the final norm (2 x 16) and the head (16 x 2 + 2) train; from scratch: everything
    assert finetuned["trainable_params"] == 2 * 16 + 16 * 2 + 2
    assert scratch["trainable_params"] == scratch["total_params"] == finetuned["total_params"]
    # the majority-class row, recounted: the most common label among the 20 training labels, scored on test
    data = load_task("shakespeare-verse")
    majority = Counter(label for _, label in select_train_examples(data.train, 20, seed=0)).most_common(1)[0][0]
    expected = sum(label == majority for _, label in data.test) / len(data.test)
    majority_row = next(cells for name, cells in rows.items() if name.startswith("majority class"))
    assert majority_row[0] == f"{expected:.3f}"


def test_demo_refuses_a_used_folder(tmp_path, capsys):
    (tmp_path / "old.txt").write_text("keep me")
    assert cli.main(["demo", "--tiny", "--quiet", "--out", str(tmp_path)]) == 2
    assert "--out" in capsys.readouterr().err and (tmp_path / "old.txt").exists()
