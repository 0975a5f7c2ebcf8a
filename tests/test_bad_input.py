"""Bad input as real users give it: changed data files (fingerprints), CSV rows with a stray comma, prompts with
unknown characters, the wrong kind of run, and every mistake a one-line error naming the flag or the file.

One tiny character model (pretrained for 6 steps on a 3 KB corpus) serves the whole file.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import minipt.jobs.finetune
from minipt.cli import main
from minipt.data import read_labelled
from minipt.data.tokenizers import CharTokenizer
from minipt.errors import MiniptError
from minipt.models.language_model import sample_next_token
from minipt.training.loop import Callback

CORPUS = "the rose is red and the sky is blue; so sing the birds of may in the wood.\n" * 45
TINY = ["--tokenizer", "char", "--d-model", "16", "--n-layers", "2", "--n-heads", "2", "--d-ff", "32",
        "--block-size", "16", "--batch-size", "4", "--warmup", "1", "--eval-batches", "1", "--device", "cpu",
        "--threads", "1", "--quiet"]
ROWS = ([f"the rose is red {i % 7} and so is the rose,rose" for i in range(30)]
        + [f"sing birds of may in the wood {i % 5} sing,bird" for i in range(20)])
FINETUNE = ["--epochs", "2", "--batch-size", "8", "--device", "cpu", "--threads", "1", "--quiet"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad_input")
    (folder / "corpus.txt").write_text(CORPUS, encoding="utf-8")
    status = main(["pretrain", "--corpus", str(folder / "corpus.txt"), "--out", str(folder / "lm"), *TINY,
                   "--steps", "6", "--eval-every", "3"])
    assert status == 0
    return folder / "lm"


@pytest.fixture
def task(tmp_path) -> Path:
    path = tmp_path / "task.csv"
    path.write_text("text,label\n" + "\n".join(ROWS) + "\n", encoding="utf-8")
    return path


def one_line(capsys, status: int, *pieces: str, expected_status: int = 2) -> str:
    err = capsys.readouterr().err.strip()
    assert status == expected_status, err
    assert len(err.splitlines()) == 1, err
    for piece in pieces:
        assert piece in err, err
    return err


# ----------------------------------------------------------------------------------------------------------
# Fingerprints
# ----------------------------------------------------------------------------------------------------------


def test_resume_refuses_a_changed_corpus(tmp_path, capsys):
    corpus, run = tmp_path / "corpus.txt", tmp_path / "run"
    corpus.write_text(CORPUS, encoding="utf-8")
    assert main(["pretrain", "--corpus", str(corpus), "--out", str(run), *TINY, "--steps", "3"]) == 0
    corpus.write_text(CORPUS + "Zounds!\n", encoding="utf-8")  # new characters, a moved validation cut
    status = main(["pretrain", "--resume", str(run), "--steps", "6", "--quiet"])
    one_line(capsys, status, f"--resume {run}: {corpus} changed since the run started", f"{len(CORPUS)} bytes",
             f", {len(CORPUS) + 8} bytes)")
    assert load_step(run) == 3  # nothing trained, nothing written
    corpus.write_text(CORPUS, encoding="utf-8")  # the same bytes again: accepted
    assert main(["pretrain", "--resume", str(run), "--steps", "6", "--quiet"]) == 0


def load_step(run: Path) -> int:
    return torch.load(run / "last.pt", weights_only=True)["loop"]["step"]


class InterruptAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_start(self, step, model, optimizer) -> None:
        if step == self.step:
            os.kill(os.getpid(), 2)  # SIGINT


def test_finetune_interrupt_resume_and_evaluate_warns_on_a_changed_file(pretrained, task, tmp_path, capsys,
                                                                        monkeypatch):
    run = tmp_path / "ft"
    real_train = minipt.jobs.finetune.train
    monkeypatch.setattr(minipt.jobs.finetune, "train",
                        lambda *a, callbacks, **kw: real_train(*a, **kw, callbacks=[*callbacks, InterruptAt(2)]))
    status = main(["finetune", "--from", str(pretrained), "--task", str(task), "--out", str(run), *FINETUNE])
    err = one_line(capsys, status, expected_status=130)
    assert err == ("minipt finetune: interrupted at step 3; last.pt saved; continue with: minipt finetune --resume "
                   f"{run}")
    monkeypatch.setattr(minipt.jobs.finetune, "train", real_train)
    assert main(["finetune", "--resume", str(run), "--quiet"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 * 5  # 2 epochs of ceil(40 / 8) steps: the whole run
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["task_file"]["bytes"] == task.stat().st_size
    assert main(["evaluate", "--from", str(run)]) == 0
    assert capsys.readouterr().err == ""
    task.write_text(task.read_text() + "a new rose row,rose\n", encoding="utf-8")
    assert main(["evaluate", "--from", str(run)]) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"minipt: warning: {task} changed since the run started") and "\n" not in err, err
    status = main(["finetune", "--resume", str(run), "--quiet"])
    one_line(capsys, status, "the run is finished")


# ----------------------------------------------------------------------------------------------------------
# Labelled files
# ----------------------------------------------------------------------------------------------------------


def test_a_row_with_an_unquoted_comma_is_an_error_naming_the_line(tmp_path, capsys):
    path = tmp_path / "task.csv"
    path.write_text("text,label\n" + "\n".join(ROWS[:3]) + "\nhello, world,rose\n", encoding="utf-8")
    with pytest.raises(MiniptError, match=r"task.csv: line 5: 3 fields, but the header has 2; a text with a comma"):
        read_labelled(path)
    path.write_text("text,label\n" + "\n".join(ROWS[:3]) + "\nno label here\n", encoding="utf-8")
    with pytest.raises(MiniptError, match=r"task.csv: line 5: 1 fields, but the header has 2"):
        read_labelled(path)
    path.write_text('text,label\n"hello, world",rose\n' + "\n".join(ROWS) + "\n", encoding="utf-8")
    assert read_labelled(path).labels == ["bird", "rose"]  # quoted: one text


def test_a_label_seen_once_is_a_warning_naming_it_and_its_line(tmp_path, capsys):
    path = tmp_path / "task.csv"
    path.write_text("text,label\n" + "\n".join(ROWS[:25]) + "\nthe rose once more,rsoe\n" + "\n".join(ROWS[25:])
                    + "\n", encoding="utf-8")
    data = read_labelled(path)
    assert "rsoe" in data.labels  # a warning, not an error: the file still reads
    assert capsys.readouterr().err.strip() == (f"minipt: warning: {path}: line 27: label 'rsoe' occurs only once in "
                                               "51 rows; a typo?")
    small = tmp_path / "small.csv"
    small.write_text("text,label\na,x\nb,x\nc,y\nd,y\ne,z\n", encoding="utf-8")
    with pytest.raises(MiniptError):
        read_labelled(small)  # too few rows for the splits; and 5 rows are too few to call a single label odd
    assert capsys.readouterr().err == ""


def test_text_and_label_column_flags(pretrained, tmp_path, capsys):
    path = tmp_path / "reviews.csv"
    path.write_text("review,sentiment\n" + "\n".join(ROWS) + "\n", encoding="utf-8")
    run = tmp_path / "ft"
    status = main(["finetune", "--from", str(pretrained), "--task", str(path), "--out", str(run), *FINETUNE])
    one_line(capsys, status, "no column 'text' or 'label'", "columns found: 'review', 'sentiment'",
             "--text-column / --label-column")
    assert not run.exists()
    assert main(["finetune", "--from", str(pretrained), "--task", str(path), "--out", str(run), *FINETUNE,
                 "--text-column", "review", "--label-column", "sentiment"]) == 0
    assert json.loads((run / "summary.json").read_text())["labels"] == ["bird", "rose"]
    assert main(["evaluate", "--from", str(run)]) == 0  # the run remembers its columns


def test_finetune_takes_a_config_file(pretrained, task, tmp_path):
    config = tmp_path / "ft.toml"
    config.write_text(f'from_run = "{pretrained}"\ntask = "{task}"\nepochs = 1\nbatch_size = 8\ndevice = "cpu"\n'
                      f'threads = 1\nout = "{tmp_path / "ft"}"\n', encoding="utf-8")
    assert main(["finetune", "--config", str(config), "--quiet"]) == 0
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["finetune"]["epochs"] == 1


# ----------------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------------


def test_special_tokens_are_never_sampled_in_1000_draws():
    logits = torch.zeros(1000, 12)
    logits[:, :5] = 5.0  # the special tokens are by far the most likely
    draws = sample_next_token(logits, temperature=1.0, generator=torch.Generator().manual_seed(0),
                              suppress_tokens=CharTokenizer("abc").special_ids)  # (1000, 1)
    assert draws.min() >= 5
    assert len(draws.unique()) == 7  # every other token still drawn
    unsuppressed = sample_next_token(logits, generator=torch.Generator().manual_seed(0))
    assert (unsuppressed < 5).float().mean() > 0.9  # without it, nearly every draw would be special


def test_generate_mistakes_are_one_line(pretrained, capsys):
    status = main(["generate", "--from", str(pretrained), "--prompt", "the Rose", "--tokens", "5"])
    one_line(capsys, status, "--prompt: 'R' not in the vocabulary of")
    status = main(["generate", "--from", str(pretrained), "--temperature", "nan"])
    one_line(capsys, status, "--temperature must be a number > 0, got nan")
    status = main(["generate", "--from", str(pretrained), "--top-k", "0"])
    one_line(capsys, status, "--top-k must be between 1 and the vocabulary size")
    assert main(["generate", "--from", str(pretrained), "--prompt", "the rose", "--tokens", "300"]) == 0
    text = capsys.readouterr().out
    assert not any(name in text for name in ("<pad>", "<unk>", "<mask>", "<cls>", "<sep>"))


# ----------------------------------------------------------------------------------------------------------
# The wrong kind of run, the wrong file, the wrong flag
# ----------------------------------------------------------------------------------------------------------


def test_the_wrong_kind_of_run_is_one_line(pretrained, task, tmp_path, capsys):
    ft = tmp_path / "ft"
    assert main(["finetune", "--from", str(pretrained), "--task", str(task), "--out", str(ft), *FINETUNE]) == 0
    capsys.readouterr()
    status = main(["generate", "--from", str(ft)])
    one_line(capsys, status, f"--from {ft} is a finetuning run; a pretraining run")
    status = main(["finetune", "--from", str(ft), "--task", str(task), "--out", str(tmp_path / "x"), *FINETUNE])
    one_line(capsys, status, f"--from {ft} is a finetuning run")
    status = main(["pretrain", "--init-from", str(ft), "--corpus", str(task), "--out", str(tmp_path / "y")])
    one_line(capsys, status, f"--init-from {ft} is a finetuning run")
    status = main(["pretrain", "--resume", str(ft)])
    one_line(capsys, status, f"--resume {ft} is a finetuning run")
    status = main(["evaluate", "--from", str(pretrained)])
    one_line(capsys, status, f"--from {pretrained} is a pretraining run; evaluate needs a finetuning run")
    status = main(["finetune", "--resume", str(pretrained)])
    one_line(capsys, status, f"--resume {pretrained} is a pretraining run")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_a_tokenizer_that_does_not_match_its_checkpoint(pretrained, tmp_path, capsys):
    run = tmp_path / "lm"
    shutil.copytree(pretrained, run)
    CharTokenizer("abc").save(run / "tokenizer.json")  # parses, but 8 tokens where the model has more
    status = main(["generate", "--from", str(run)])
    one_line(capsys, status, "tokenizer.json has 8 tokens but the run's model was trained on")


def test_files_where_folders_belong_and_yaml_configs(tmp_path, capsys):
    file = tmp_path / "file.txt"
    file.write_text("x")
    status = main(["pretrain", "--out", str(file)])
    one_line(capsys, status, f"--out {file} is a file, not a folder")
    status = main(["pretrain", "--resume", str(file)])
    one_line(capsys, status, f"{file} is a file, not a run folder")
    config = tmp_path / "settings.yaml"
    config.write_text("steps: 20\n")
    status = main(["pretrain", "--config", str(config), "--out", str(tmp_path / "run")])
    one_line(capsys, status, "YAML is not read", "JSON (.json) or TOML (.toml)")
    status = main(["pretrain", "--bpe-vocab-size", "100", "--out", str(tmp_path / "run")])
    one_line(capsys, status, "--bpe-vocab-size must be at least 261")
    assert not (tmp_path / "run").exists()


def test_list_shows_the_built_in_corpora_and_tasks(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("shakespeare ", "shakespeare-flat", "shakespeare-verse", "shakespeare-genre"):
        assert name in out
    assert "2 labels (prose, verse); train 7,719, validation 2,049, test 1,691 examples" in out


def test_demo_help_shows_tiny(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "--tiny" in capsys.readouterr().out
