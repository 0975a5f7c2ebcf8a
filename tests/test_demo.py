"""`minipt demo --tiny`: the whole demo (two pretraining runs, frozen finetuning, controls, every choice on
validation, report) end to end, on the built-in task and on a user's labelled file; its one-line errors."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from minipt import cli
from minipt.data import load_task
from minipt.jobs import demo
from minipt.jobs.demo import DemoConfig, choose_setting, pretraining_steps
from minipt.jobs.finetune import select_train_examples

TINY = ["demo", "--tiny", "--quiet", "--device", "cpu", "--threads", "1"]


def table(report: str) -> dict[str, list[str]]:
    """The report's first table: row name -> its cells."""
    first_table = next(block for block in report.split("\n\n") if block.startswith("| model"))
    return {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
            for line in first_table.splitlines()[2:]}


def test_tiny_demo_end_to_end(tmp_path, capsys, monkeypatch):
    candidates = []  # every finetuning run the selection looked at, as it returned

    def spy(*args, **kw):
        summary = finetune(*args, **kw)
        candidates.append(summary)
        return summary

    finetune = demo.finetune
    monkeypatch.setattr(demo, "finetune", spy)
    out = tmp_path / "demo"
    assert cli.main([*TINY, "--out", str(out)]) == 0
    report = (out / "report.md").read_text(encoding="utf-8")
    assert report in capsys.readouterr().out  # printed as well as saved
    assert (out / "report.png").stat().st_size > 10_000
    for run in ["pretrain-transformer", "pretrain-gru"]:
        assert (out / run / "best.pt").exists() and (out / run / "loss.png").exists(), run
    # each neural row tried both learning rates; the selection never saw a test number
    assert len(candidates) == 3 * 2
    assert not any(key.startswith(("test", "majority")) for summary in candidates for key in summary)
    rows = table(report)
    assert len(rows) == 5
    names = {"Transformer, pretrained, embedding + lower 1 of 1 layers frozen": "frozen-transformer",
             "GRU LM, pretrained, embedding + lower 1 of 1 layers frozen": "frozen-gru",
             "Transformer from scratch (same architecture)": "scratch"}
    for name, run in names.items():
        tried = {lr: json.loads((out / run / f"lr{lr}" / "summary.json").read_text()) for lr in ("0.001", "0.003")}
        chosen = choose_setting({lr: summary["best_val_macro_f1"] for lr, summary in tried.items()})
        summary = tried[chosen]  # the chosen run's summary holds its test numbers, the other's none
        assert "test_macro_f1" not in tried[next(lr for lr in tried if lr != chosen)]
        assert (out / run / f"lr{chosen}" / "classification_report.txt").exists()
        # the table row carries exactly the chosen run's own numbers and names its choice
        assert rows[name][:4] == [f"{summary['test_accuracy']:.3f}", f"{summary['test_macro_f1']:.3f}",
                                  f"{summary['best_val_macro_f1']:.3f}",
                                  f"lr {float(chosen):g}, epoch {summary['epoch']} of {summary['epochs_run']}"]
    # frozen (1 of 1 layers): only the final norm (2 x 16) and the head (16 x 2 + 2) of the Transformer train
    assert rows["Transformer, pretrained, embedding + lower 1 of 1 layers frozen"][4] == f"{2 * 16 + 16 * 2 + 2}"
    # the majority-class row, recounted: the most common label among the 20 training labels, scored on test
    data = load_task("shakespeare-verse")
    majority = Counter(label for _, label in select_train_examples(data.train, 20, seed=0)).most_common(1)[0][0]
    expected = sum(label == majority for _, label in data.test) / len(data.test)
    majority_row = next(cells for name, cells in rows.items() if name.startswith("majority class"))
    assert majority_row[0] == f"{expected:.3f}"
    tfidf = rows["TF-IDF word + char n-grams, logistic regression"]
    assert tfidf[3].startswith("C ")
    assert "| total |" in report and "shakespeare-verse" in report and "tokens" in report
    # the verdict in words: one seed gives no interval, and the report says how to get one
    assert "**Did pretraining pay here?**" in report and "one seed, so no interval (`--seeds 3` gives one)" in report


def labelled_file(path, rows: list[tuple[str, str]]) -> str:
    path.write_text("text\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in rows), encoding="utf-8")
    return str(path)


def sentiment_rows(n: int) -> list[tuple[str, str]]:
    good = ["a lovely warm day with friends", "great food and a kind host", "i loved the happy ending"]
    bad = ["a cold grey day of bad news", "awful food and a rude host", "i hated the sad ending"]
    return [(f"{(good if i % 2 else bad)[i % 3]} number {i}", "pos" if i % 2 else "neg") for i in range(n)]


def test_tiny_demo_on_a_labelled_file_over_two_seeds(tmp_path, capsys):
    task = labelled_file(tmp_path / "mine.tsv", sentiment_rows(120))
    out = tmp_path / "demo"
    assert cli.main([*TINY, "--task", task, "--seeds", "2", "--out", str(out)]) == 0
    report = (out / "report.md").read_text(encoding="utf-8")
    for seed in (0, 1):
        assert (out / f"seed{seed}" / "report.md").exists() and (out / f"seed{seed}" / "report.png").exists()
    # pretrained on the texts of train + validation (96 + 12 of the 120 rows), never on test
    corpus = (out / "corpus.txt").read_text(encoding="utf-8").splitlines()
    test_texts = set(text for text, _ in load_task(task).test)
    assert len(corpus) == 108 and not test_texts & set(corpus)
    assert "80/10/10 stratified by label" in report and "Paired differences" in report
    assert report.count("95%") >= 1 and "−" in report  # the difference rows
    differences = [line for line in report.splitlines() if line.startswith("| Transformer, pretrained") and "−" in line]
    assert len(differences) == 2 and all(line.split("|")[4].strip().startswith("[") for line in differences)
    assert "± " in table(report)["Transformer from scratch (same architecture)"][1]
    verdict = report.split("**Did pretraining pay here?**")[1].split("\n\n")[1]
    assert verdict.count("95% interval [") == 2  # against scratch and against TF-IDF


@pytest.mark.parametrize("rows, flags, message", [
    ([(f"text {i}", "pos") for i in range(40)], [], "found 1 class"),
    # 80/10/10 of 5 'neg' rows leaves round(0.5) = 0 validation examples of 'neg'
    ([(f"text {i}", "pos") for i in range(40)] + [(f"bad {i}", "neg") for i in range(5)], [], "at least 2 of each"),
    (sentiment_rows(60), ["--labels", "500"], "--labels 500 is larger than the training split"),
])
def test_demo_bad_input_is_one_line(tmp_path, capsys, rows, flags, message):
    task = labelled_file(tmp_path / "mine.tsv", rows)
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quiet", "--task", task, *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not out.exists()


def test_demo_refuses_a_corpus_smaller_than_one_block(tmp_path, capsys):
    task = labelled_file(tmp_path / "mine.tsv", sentiment_rows(60))
    corpus = tmp_path / "small.txt"
    corpus.write_text("too short\n", encoding="utf-8")
    out = tmp_path / "demo"
    assert cli.main([*TINY, "--task", task, "--corpus", str(corpus), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "small.txt" in err and "fewer than one block" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_pretraining_steps_fill_the_budget():
    # 6 minutes: 360 s - 150 s of finetuning = 210 s; the Transformer gets 65% at 0.093 s per step, the GRU 35% at
    # 0.144 s: int(136.5 / 0.093) = int(1467.7) = 1467 and int(73.5 / 0.144) = int(510.4) = 510 steps
    assert pretraining_steps(DemoConfig(minutes=6.0)) == {"transformer": 1467, "gru": 510}


def test_the_verdict_reads_the_pretrained_row_best_on_validation_never_on_test():
    def seed(gru_validation: float) -> dict:
        rows = [{"key": "frozen-transformer", "name": "Transformer, pretrained, x", "val_macro_f1": 0.60,
                 "test_macro_f1": 0.70},  # the best test score: it must not decide
                {"key": "frozen-gru", "name": "GRU LM, pretrained, x", "val_macro_f1": gru_validation,
                 "test_macro_f1": 0.55},
                {"key": "scratch", "val_macro_f1": 0.5, "test_macro_f1": 0.50},
                {"key": "tfidf", "val_macro_f1": 0.5, "test_macro_f1": 0.65}]
        return {"rows": rows, "corpus_tokens": 1000}

    results = [seed(0.61), seed(0.63), seed(0.62)]
    assert demo.best_pretrained_row(results) == "frozen-gru"
    lines = demo.verdict_lines(results)
    assert "is the GRU LM (test macro-F1" in lines[0]
    # GRU - scratch = +5 points every seed (std 0: the interval is the point); GRU - TF-IDF = -10 points
    assert lines[2] == "- against the same Transformer trained from scratch: +5.0 points, 95% interval [+5.0, +5.0]: " \
                       "pretraining paid;"
    assert lines[3] == "- against TF-IDF: -10.0 points, 95% interval [-10.0, -10.0]: pretraining lost;"
    assert "was 1,000 tokens" in lines[5]


def test_choose_setting_takes_the_best_validation_score_first_of_ties():
    assert choose_setting({3e-4: 0.61, 1e-3: 0.70, 3e-3: 0.70}) == 1e-3


def test_demo_refuses_a_used_folder(tmp_path, capsys):
    (tmp_path / "old.txt").write_text("keep me")
    assert cli.main(["demo", "--tiny", "--quiet", "--out", str(tmp_path)]) == 2
    assert "--out" in capsys.readouterr().err and (tmp_path / "old.txt").exists()
