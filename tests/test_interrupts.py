"""Runs that survive real users: Ctrl-C and SIGTERM (a real subprocess gets the signal), no dead run folders,
extending a finished run, one plain line per evaluation in a log, and run files readable by the group.

Every run is tiny (width 16, one layer, a 3 KB corpus, characters), so the file takes seconds.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import minipt.jobs.pretrain
from minipt.cli import main
from minipt.runs.folder import new_run_dir, write_atomic
from minipt.training.checkpoint import load_checkpoint
from minipt.training.interrupts import Interrupted
from minipt.training.loop import Callback

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 40
NO_WARMUP = ["--tokenizer", "char", "--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--d-ff", "32",
             "--block-size", "16", "--batch-size", "4", "--eval-batches", "1", "--device", "cpu", "--threads", "1",
             "--seed", "3"]
TINY = [*NO_WARMUP, "--warmup", "1"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def start(*args: str) -> subprocess.Popen:
    """``python -m minipt ARGS`` in a subprocess, stdout and stderr piped (not a terminal)."""
    return subprocess.Popen([sys.executable, "-m", "minipt", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def signal_after(process: subprocess.Popen, prefix: str, signum: int) -> tuple[int, str, str]:
    """Send ``signum`` once a stdout line starts with ``prefix``; the exit status, stdout and stderr."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith(prefix):
            process.send_signal(signum)
            break
    out, err = process.communicate(timeout=120)
    return process.returncode, "".join(lines) + out, err


def weights(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "last.pt")["model"]


# ----------------------------------------------------------------------------------------------------------
# Ctrl-C and SIGTERM
# ----------------------------------------------------------------------------------------------------------


def test_sigint_after_the_first_step_saves_last_pt(tmp_path, corpus):
    run = tmp_path / "run"
    process = start("pretrain", "--out", str(run), "--corpus", str(corpus), *TINY, "--steps", "5000",
                    "--eval-every", "5")
    status, _, err = signal_after(process, "step 5/5000", signal.SIGINT)  # the first evaluation's line
    assert status == 130, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    step = load_checkpoint(run / "last.pt")["loop"]["step"]
    assert 5 <= step < 5000
    assert err.strip() == (f"minipt pretrain: interrupted at step {step}; last.pt saved; continue with: "
                           f"minipt pretrain --resume {run}")


class SignalAt(Callback):
    """Send this process ``signum`` at the start of step ``step`` (as a user pressing Ctrl-C right then)."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_step_start(self, step, model, optimizer) -> None:
        if step == self.step:
            os.kill(os.getpid(), self.signum)


def test_sigterm_mid_run_saves_that_step_and_resume_is_bit_identical(tmp_path, corpus, capsys, monkeypatch):
    run, common = tmp_path / "run", ["--corpus", str(corpus), *TINY, "--steps", "12", "--eval-every", "5", "--quiet"]
    real_train = minipt.jobs.pretrain.train
    monkeypatch.setattr(minipt.jobs.pretrain, "train",
                        lambda *a, **kw: real_train(*a, **kw, callbacks=[SignalAt(7, 15)]))
    assert main(["pretrain", "--out", str(run), *common]) == 143  # 128 + SIGTERM's 15
    # the signal came during step 8 (index 7); the loop finished that step, then stopped and saved it
    assert load_checkpoint(run / "last.pt")["loop"]["step"] == 8
    assert capsys.readouterr().err.strip() == (f"minipt pretrain: interrupted at step 8; last.pt saved; continue "
                                               f"with: minipt pretrain --resume {run}")
    monkeypatch.setattr(minipt.jobs.pretrain, "train", real_train)
    assert main(["pretrain", "--resume", str(run), "--quiet"]) == 0
    assert main(["pretrain", "--out", str(tmp_path / "whole"), *common]) == 0
    resumed, whole = weights(run), weights(tmp_path / "whole")
    assert all(torch.equal(resumed[name], whole[name]) for name in whole)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 12]


def test_sigint_before_the_first_step_leaves_no_folder(tmp_path):
    """The corpus is a named pipe nobody writes: the run waits for it before its first step, and Ctrl-C comes."""
    fifo, run = tmp_path / "corpus.txt", tmp_path / "run"
    os.mkfifo(fifo)
    process = start("pretrain", "--out", str(run), "--corpus", str(fifo), *TINY, "--steps", "10")
    status, _, err = signal_after(process, "minipt pretrain: writing the run into", signal.SIGINT)
    assert status == 130, err
    assert err.strip() == "minipt pretrain: interrupted (SIGINT); nothing was saved"
    assert not run.exists()


def test_a_run_stopped_before_last_pt_removes_what_it_created(tmp_path):
    absent, empty = tmp_path / "absent", tmp_path / "empty"
    empty.mkdir()
    for folder in (absent, empty):
        with pytest.raises(Interrupted), new_run_dir(folder):
            folder.mkdir(exist_ok=True)
            (folder / "config.json").write_text("{}")
            (folder / "sub").mkdir()
            raise Interrupted(signal.SIGINT)
    assert not absent.exists()
    assert empty.is_dir() and not any(empty.iterdir())  # it was the user's (empty) folder: emptied, kept
    kept = tmp_path / "kept"
    with pytest.raises(Interrupted), new_run_dir(kept):
        kept.mkdir()
        (kept / "last.pt").write_bytes(b"x")
        raise Interrupted(signal.SIGTERM)
    assert (kept / "last.pt").exists()  # resumable: it stays


def test_a_diverged_run_and_a_bad_device_leave_no_folder(tmp_path, corpus, capsys):
    run = tmp_path / "run"
    status = main(["pretrain", "--out", str(run), "--corpus", str(corpus), *TINY, "--steps", "30",
                   "--eval-every", "30", "--lr", "1e6", "--quiet"])
    err = capsys.readouterr().err
    assert status == 1 and "the loss is nan" in err and len(err.strip().splitlines()) == 1, err
    assert not run.exists()
    if not torch.cuda.is_available():
        for command in (["pretrain", "--corpus", str(corpus)], ["finetune", "--from", str(tmp_path)]):
            assert main([*command, "--out", str(run), "--device", "cuda"]) == 2
            assert "no CUDA GPU" in capsys.readouterr().err
            assert not run.exists()


# ----------------------------------------------------------------------------------------------------------
# Extending a finished run
# ----------------------------------------------------------------------------------------------------------


def test_resume_with_more_steps_extends_a_finished_run(tmp_path, corpus, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--out", str(run), "--corpus", str(corpus), *TINY, "--steps", "6", "--eval-every", "3",
                 "--quiet"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert main(["pretrain", "--resume", str(run), "--quiet"]) == 2  # finished: nothing to do, summary untouched
    err = capsys.readouterr().err.strip()
    assert err.endswith("the run already did its 6 steps; pass a larger --steps to train it further"), err
    assert json.loads((run / "summary.json").read_text()) == summary
    assert main(["pretrain", "--resume", str(run), "--steps", "6", "--quiet"]) == 2
    assert "--steps 6 must be larger than the 6 steps" in capsys.readouterr().err
    assert main(["pretrain", "--resume", str(run), "--steps", "9", "--quiet"]) == 0
    assert load_checkpoint(run / "last.pt")["loop"]["step"] == 9
    config = json.loads((run / "config.json").read_text())
    assert config["pretrain"]["steps"] == 9 and config["train"]["steps"] == 9  # the next --resume knows the new end
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == [3, 6, 9]
    assert json.loads((run / "summary.json").read_text())["last_evaluation"]["val_loss"] == records[-1]["val_loss"]


def test_an_unset_warmup_fits_the_run(tmp_path, corpus):
    run = tmp_path / "run"
    assert main(["pretrain", "--out", str(run), "--corpus", str(corpus), *NO_WARMUP, "--steps", "20", "--quiet"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["pretrain"]["warmup"] == 2 and config["train"]["warmup"] == 2  # 20 // 10, recorded as a number


# ----------------------------------------------------------------------------------------------------------
# Logs and file modes
# ----------------------------------------------------------------------------------------------------------


def test_output_to_a_file_is_one_plain_line_per_evaluation(tmp_path, corpus, capsys):
    run = tmp_path / "run"  # pytest captures stdout and stderr: neither is a terminal, as in a log file
    assert main(["pretrain", "--out", str(run), "--corpus", str(corpus), *TINY, "--steps", "12",
                 "--eval-every", "3"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "\r" not in out  # no bar redraws
    lines = out.splitlines()
    assert len(lines) == 6, lines  # "writing the run into", one line per evaluation (steps 3, 6, 9, 12), "done"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for line, record in zip(lines[1:5], records, strict=True):  # step, loss, val loss, tokens/s, elapsed
        assert re.fullmatch(rf"step {record['step']}/12 \| loss {record['train_loss']:.4f} \| val_loss "
                            rf"{record['val_loss']:.4f} \| [0-9,]+ tok/s \| \d+m\d\ds", line), line


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_run_files_get_the_mode_of_ordinary_files(tmp_path, corpus, umask):
    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "one.txt", "x")
        assert (tmp_path / "one.txt").stat().st_mode & 0o777 == 0o666 & ~umask
        if umask == 0o022:
            run = tmp_path / "run"
            assert main(["pretrain", "--out", str(run), "--corpus", str(corpus), *TINY, "--steps", "3",
                         "--eval-every", "3", "--quiet"]) == 0
            modes = {path.name: path.stat().st_mode & 0o777 for path in run.iterdir()}
            assert set(modes) >= {"config.json", "tokenizer.json", "best.pt", "last.pt", "summary.json", "loss.png",
                                  "metrics.jsonl"}
            assert set(modes.values()) == {0o644}, modes
    finally:
        os.umask(old)


def test_an_interrupted_demo_says_which_run_to_continue(tmp_path, capsys, monkeypatch):
    out = tmp_path / "demo"
    monkeypatch.setattr(minipt.jobs.pretrain, "load_corpus", lambda name: TEXT)  # not the plays: this stops at step 4
    real_train = minipt.jobs.pretrain.train
    monkeypatch.setattr(minipt.jobs.pretrain, "train",
                        lambda *a, callbacks=(), **kw: real_train(*a, **kw, callbacks=[SignalAt(3, 2)]))
    assert main(["demo", "--tiny", "--quiet", "--device", "cpu", "--threads", "1", "--out", str(out)]) == 130
    run = out / "pretrain-transformer"
    assert capsys.readouterr().err.strip() == (
        f"minipt demo: interrupted at step 4; last.pt saved; continue with: minipt pretrain --resume {run}; "
        f"the demo itself starts over: remove {out} or choose another --out")
    assert load_checkpoint(run / "last.pt")["loop"]["step"] == 4


def test_ctrl_c_during_generate_keeps_what_was_printed_and_exits_130(corpus, tmp_path, capsys, monkeypatch):
    """Issue 24: generate prints each token as it comes; Ctrl-C after the 5th token (a hook, not a sleep) leaves
    the prompt and those 5 tokens on stdout, one line on stderr, and status 130."""
    import minipt.cli

    run = tmp_path / "lm"
    assert main(["pretrain", "--corpus", str(corpus), "--out", str(run), *TINY, "--steps", "2", "--quiet"]) == 0
    capsys.readouterr()
    real_put = minipt.cli.TextStream.put

    def put_then_interrupt(self, ids) -> None:
        real_put(self, ids)
        if self.tokens == 5:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(minipt.cli.TextStream, "put", put_then_interrupt)
    status = main(["generate", "--from", str(run), "--prompt", "To be", "--tokens", "100000000000", "--seed", "1"])
    out, err = capsys.readouterr()
    assert status == 130, err
    assert err.strip() == ("minipt generate: interrupted after 5 of 100000000000 tokens; the text above is what was "
                           "generated")
    monkeypatch.setattr(minipt.cli.TextStream, "put", real_put)
    assert main(["generate", "--from", str(run), "--prompt", "To be", "--tokens", "5", "--seed", "1"]) == 0
    assert out == capsys.readouterr().out and len(out) == len("To be") + 5 + 1  # the same 5 tokens, and a newline
