"""The finetuning job (minipt.jobs.finetune) and the `minipt finetune` / `minipt evaluate` commands, on a tiny
pretrained run and a tiny labelled file."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from minipt import cli
from minipt.data import LabelledData
from minipt.errors import MiniptError
from minipt.jobs.finetune import FinetuneConfig, evaluate_run, finetune, majority_baseline, select_train_examples
from minipt.jobs.pretrain import PretrainConfig, load_run, pretrain
from minipt.training.checkpoint import load_checkpoint

CORPUS = "the rose is red and the sky is blue; so sing the birds of may in the wood.\n" * 60


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A 2-layer character Transformer pretrained for 6 steps on a tiny corpus."""
    folder = tmp_path_factory.mktemp("finetune")
    corpus = folder / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    config = PretrainConfig(corpus=str(corpus), tokenizer="char", d_model=16, n_layers=2, n_heads=2, d_ff=32,
                            block_size=32, steps=6, batch_size=4, warmup=1, eval_every=6, eval_batches=1, seed=0,
                            device="cpu", threads=1)
    pretrain(config, folder / "pretrain", progress=False)
    # two classes a tiny model can tell apart: 30 "rose" speeches and 20 "bird" speeches
    rows = ["text,label"] + [f"the rose is red {i % 7} and so is the rose,rose" for i in range(30)]
    rows += [f"sing birds of may in the wood {i % 5} sing,bird" for i in range(20)]
    task = folder / "task.csv"
    task.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder, folder / "pretrain", task


def base_config(pretrained, **changes) -> FinetuneConfig:
    _, run, task = pretrained
    config = FinetuneConfig(from_run=str(run), task=str(task), epochs=2, batch_size=8, lr=3e-3, seed=0, device="cpu",
                            threads=1)
    return replace(config, **changes)


def part_size(module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------------------------
# Pieces
# ------------------------------------------------------------------------------------------------------


def test_select_train_examples_is_stratified_with_exact_counts():
    examples = [(f"a{i}", "a") for i in range(30)] + [(f"b{i}", "b") for i in range(10)]
    # n = 8: exact shares 8 * 30/40 = 6 and 8 * 10/40 = 2
    chosen = select_train_examples(examples, 8, seed=3)
    assert sorted(y for _, y in chosen).count("a") == 6 and len(chosen) == 8
    # n = 7: shares 5.25 and 1.75 -> floors 5 + 1 = 6, the one place left goes to the larger remainder (b, 0.75)
    chosen = select_train_examples(examples, 7, seed=3)
    assert [y for _, y in chosen].count("a") == 5 and [y for _, y in chosen].count("b") == 2
    assert len(set(chosen)) == 7 and set(chosen) <= set(examples)
    assert select_train_examples(examples, 7, seed=3) == chosen  # seeded
    assert select_train_examples(examples, 7, seed=4) != chosen
    assert sorted(select_train_examples(examples, 0, seed=3)) == sorted(examples)  # 0: every example


def test_majority_baseline_by_hand():
    data = LabelledData(train=[("x", "a"), ("y", "a"), ("z", "b")], validation=[],
                        test=[("p", "a"), ("q", "b"), ("r", "b"), ("s", "b")], labels=["a", "b"], name="t")
    baseline = majority_baseline(data)
    # always "a" (2 of 3 training labels): right on 1 of the 4 test examples
    # class a: precision 1/4, recall 1/1 -> F1 = 2 (1/4)(1) / (1/4 + 1) = 0.4; class b: never predicted -> F1 0
    assert baseline["label"] == "a"
    assert baseline["accuracy"] == pytest.approx(0.25)
    assert baseline["macro_f1"] == pytest.approx(0.2)


# ------------------------------------------------------------------------------------------------------
# The job
# ------------------------------------------------------------------------------------------------------


def test_finetune_frozen_writes_the_run_and_leaves_frozen_weights_bit_identical(pretrained, tmp_path):
    _, run, _ = pretrained
    summary = finetune(base_config(pretrained, freeze="1"), tmp_path / "ft", progress=False)
    for name in ["config.json", "tokenizer.json", "best.pt", "last.pt", "metrics.jsonl", "loss.png", "confusion.png",
                 "classification_report.txt", "summary.json"]:
        assert (tmp_path / "ft" / name).exists(), name
    pretrained_lm, _, _ = load_run(run)
    best = load_checkpoint(tmp_path / "ft" / "best.pt")["model"]
    last = load_checkpoint(tmp_path / "ft" / "last.pt")
    for name, value in pretrained_lm.state_dict().items():
        if name.startswith(("embedding.", "layers.0.", "lm_head.")):  # lm_head is tied to the embedding
            assert torch.equal(best[f"backbone.{name}"], value), name
            assert torch.equal(last["model"][f"backbone.{name}"], value), name
    changed = [n for n, v in pretrained_lm.state_dict().items() if not torch.equal(last["model"][f"backbone.{n}"], v)]
    assert any(name.startswith("layers.1.") for name in changed)
    # trainable = total - embedding - layers.0; the optimizer holds state for exactly the trainable tensors
    expected = summary["total_params"] - part_size(pretrained_lm.embedding) - part_size(pretrained_lm.layers[0])
    assert summary["trainable_params"] == expected
    n_trainable_tensors = len(list(pretrained_lm.layers[1].parameters())) + 2 + 2  # + final norm + head
    assert len(last["optimizer"]["state"]) == n_trainable_tensors
    # 40 training rows (80% of 50) / batch 8 = 5 steps per epoch, 2 epochs, one evaluation per epoch
    records = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10]
    assert summary["best_val_accuracy"] == max(r["val_accuracy"] for r in records)
    for key in ["test_accuracy", "test_macro_f1", "wall_seconds", "seconds_per_step", "settings"]:
        assert key in summary
    # evaluate_run reloads best.pt and must reproduce the test numbers exactly
    evaluation = evaluate_run(tmp_path / "ft")
    assert evaluation["accuracy"] == summary["test_accuracy"]
    assert evaluation["macro_f1"] == summary["test_macro_f1"]
    assert "rose" in (tmp_path / "ft" / "classification_report.txt").read_text()


def test_from_scratch_trains_everything_from_a_fresh_start(pretrained, tmp_path):
    summary = finetune(base_config(pretrained, from_scratch=True, epochs=1), tmp_path / "scratch", progress=False)
    assert summary["trainable_params"] == summary["total_params"]
    assert summary["settings"]["from_scratch"] is True


def test_gradual_unfreezing_in_the_training_loop_follows_the_schedule(pretrained, tmp_path):
    # 3 epochs x 5 steps = 15 steps; 2 layers -> 3 stages of ceil(15 / 3) = 5 steps:
    # steps 1-5 the top only, 6-10 + layers.1, 11-15 + layers.0 and the embedding
    finetune(base_config(pretrained, strategy="gradual", epochs=3), tmp_path / "gradual", progress=False)
    state = load_checkpoint(tmp_path / "gradual" / "last.pt")["optimizer"]["state"]
    steps_taken = sorted(int(s["step"].item()) for s in state.values())
    _, run, _ = pretrained
    lm, _, _ = load_run(run)
    n_layer = len(list(lm.layers[0].parameters()))
    n_embedding = len(list(lm.embedding.parameters()))  # token (tied with lm_head) and position
    assert steps_taken == [5] * (n_layer + n_embedding) + [10] * n_layer + [15] * 4


def test_discriminative_learning_rates_reach_the_optimizer(pretrained, tmp_path):
    finetune(base_config(pretrained, strategy="discriminative", lr_decay=0.5, epochs=1), tmp_path / "d", progress=False)
    groups = load_checkpoint(tmp_path / "d" / "last.pt")["optimizer"]["param_groups"]
    # top level T = 2 layers + 1 = 3: embedding 3e-3 * 0.5^3, layers 0.5^2 and 0.5^1, top 3e-3
    # (a level may have two groups, with and without weight decay, at the same lr)
    assert {g["name"]: g["initial_lr"] for g in groups} == {
        "embedding": 3e-3 * 0.125, "layers.0": 3e-3 * 0.25, "layers.1": 3e-3 * 0.5, "top": 3e-3}


def test_bad_settings_name_the_flag(pretrained, tmp_path):
    with pytest.raises(MiniptError, match="--strategy"):
        finetune(base_config(pretrained, strategy="sideways"), tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="--freeze must be between 0 and 2"):
        finetune(base_config(pretrained, freeze="3"), tmp_path / "y", progress=False)
    with pytest.raises(MiniptError, match="--max-len 64 exceeds"):
        finetune(base_config(pretrained, max_len=64), tmp_path / "z", progress=False)
    with pytest.raises(MiniptError, match="minipt pretrain --init-from RUN_DIR --corpus new.txt"):
        finetune(base_config(pretrained, task="lm:new.txt"), tmp_path / "w", progress=False)


# ------------------------------------------------------------------------------------------------------
# The command line
# ------------------------------------------------------------------------------------------------------


def test_cli_finetune_then_evaluate(pretrained, tmp_path, capsys):
    _, run, task = pretrained
    out = tmp_path / "cli"
    status = cli.main(["finetune", "--from", str(run), "--task", str(task), "--freeze", "all", "--epochs", "1",
                       "--batch-size", "8", "--device", "cpu", "--threads", "1", "--out", str(out), "--quiet"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "layers.1" in printed and "trainable" in printed  # the parameter table came first
    summary = json.loads((out / "summary.json").read_text())
    assert cli.main(["evaluate", "--from", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{summary['test_accuracy']:.4f}" in printed and "rose" in printed


def test_cli_finetune_config_file_flags_win_and_the_old_early_stopping_spelling_still_works(pretrained, tmp_path):
    _, run, task = pretrained
    settings = tmp_path / "settings.toml"
    settings.write_text(f'from_run = "{run}"\ntask = "{task}"\nepochs = 3\nbatch_size = 8\nlr = 2e-3\n'
                        f'freeze = "all"\nout = "{tmp_path / "file"}"\n', encoding="utf-8")
    status = cli.main(["finetune", "--config", str(settings), "--epochs", "1", "--early-stopping", "2",
                       "--device", "cpu", "--threads", "1", "--quiet"])
    assert status == 0
    saved = json.loads((tmp_path / "file" / "config.json").read_text())["finetune"]
    assert saved["epochs"] == 1 and saved["lr"] == 2e-3 and saved["patience"] == 2  # flags beat the file


def test_finetune_help_lists_every_setting_with_its_own_help(capsys):
    from dataclasses import fields

    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["finetune", "--help"])
    text = capsys.readouterr().out
    for field in fields(FinetuneConfig):
        assert field.metadata["help"].split()[0] in text, field.name
    assert "--from" in text and "--config" in text and "--early-stopping" not in text  # the old spelling is hidden
    assert "validation accuracy)" not in text  # best.pt follows --select


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--freeze", "9"], "--freeze must be between 0 and 2"),
        (["--freeze", "half"], "--freeze must be an integer, 'all' or 'none'"),
        (["--task", "missing.csv"], "missing.csv"),
        (["--lr", "-1"], "--lr must be > 0"),
        (["--task", "lm:new.txt"], "minipt pretrain --init-from"),
    ],
)
def test_cli_finetune_bad_input_is_one_line_and_exit_2(pretrained, tmp_path, capsys, arguments, message):
    _, run, task = pretrained
    argv = ["finetune", "--from", str(run), "--task", str(task), "--out", str(tmp_path / "bad"), "--device", "cpu",
            "--threads", "1", "--quiet", *arguments]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error


def test_cli_evaluate_of_a_missing_run_is_exit_2(tmp_path, capsys):
    assert cli.main(["evaluate", "--from", str(tmp_path / "nothing")]) == 2
    assert "nothing" in capsys.readouterr().err


def test_balanced_batches_draw_each_class_about_equally_often():
    from functools import partial

    from minipt.data.datasets import ClassificationDataset, collate_classification
    from minipt.data.tokenizers import CharTokenizer
    from minipt.jobs.finetune import epoch_batch_sampler

    tokenizer = CharTokenizer.from_text("abc")
    # 90 examples of class 0 and 10 of class 1: a plain epoch is 10% class 1
    dataset = ClassificationDataset([("ab", "x")] * 90 + [("c", "y")] * 10, tokenizer, ["x", "y"], max_len=8)
    collate = partial(collate_classification, pad_id=tokenizer.pad_id)
    plain = epoch_batch_sampler(dataset, 10, collate, seed=0)
    balanced = epoch_batch_sampler(dataset, 10, collate, seed=0, balanced=True)
    steps = 10 * 40  # 40 epochs of 10 batches
    plain_share = sum(plain(i)["labels"].sum().item() for i in range(steps)) / (steps * 10)
    balanced_share = sum(balanced(i)["labels"].sum().item() for i in range(steps)) / (steps * 10)
    assert plain_share == pytest.approx(0.1)  # a permutation: exactly 10 of 100 per epoch
    # 4000 draws with p = 1/2: standard deviation sqrt(0.25 / 4000) = 0.008, so 0.5 +- 0.04 is 5 sigma
    assert balanced_share == pytest.approx(0.5, abs=0.04)
    assert torch.equal(balanced(7)["input_ids"], balanced(7)["input_ids"])  # a pure function of the index


def test_select_macro_f1_picks_the_epoch_with_the_best_validation_macro_f1(pretrained, tmp_path):
    summary = finetune(base_config(pretrained, epochs=4, select="macro_f1", balanced=True), tmp_path / "f1",
                       progress=False)
    records = [json.loads(line) for line in (tmp_path / "f1" / "metrics.jsonl").read_text().splitlines()]
    best = max(records, key=lambda record: record["val_macro_f1"])  # the first of equals wins, as in the loop
    assert summary["best_step"] == best["step"]
    assert summary["best_val_macro_f1"] == best["val_macro_f1"]
    assert summary["best_val_accuracy"] == best["val_accuracy"]
    with pytest.raises(MiniptError, match="--select"):
        finetune(base_config(pretrained, select="loss"), tmp_path / "bad", progress=False)


@pytest.mark.parametrize("freeze", ["1", "all"])
def test_cached_frozen_layers_give_the_run_of_the_uncached_path(pretrained, tmp_path, freeze):
    """The job computes the frozen layers once (minipt.training.frozen_cache); --no-cache runs them at every step. Same
    batches, same dropout draws: every logged number agrees within float rounding, and the test predictions too."""
    config = base_config(pretrained, freeze=freeze, epochs=3, dropout=0.2, balanced=True)
    cached = finetune(config, tmp_path / "cached", progress=False, verbose=False)
    uncached = finetune(replace(config, no_cache=True), tmp_path / "uncached", progress=False, verbose=False)
    records = {name: [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
               for name in ("cached", "uncached")}
    assert len(records["cached"]) == len(records["uncached"]) == 3
    for a, b in zip(records["cached"], records["uncached"], strict=True):
        for key in ("train_loss", "val_loss"):
            assert a[key] == pytest.approx(b[key], abs=1e-5)
        assert (a["val_accuracy"], a["val_macro_f1"]) == (b["val_accuracy"], b["val_macro_f1"])
    assert (cached["test_accuracy"], cached["test_macro_f1"]) == (uncached["test_accuracy"], uncached["test_macro_f1"])
    assert cached["trainable_params"] == uncached["trainable_params"]
