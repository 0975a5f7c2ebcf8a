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
import time
from pathlib import Path

import pytest
import torch

import minipt.jobs.pretrain
import minipt.training.checkpoint
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
                        lambda *a, callbacks, **kw: real_train(*a, **kw, callbacks=[*callbacks, SignalAt(7, 15)]))
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
    """The corpus is a named pipe: the run is reading it (our open returns once it opened the other end) before its
    first step when Ctrl-C comes."""
    fifo, run = tmp_path / "corpus.txt", tmp_path / "run"
    os.mkfifo(fifo)
    process = start("pretrain", "--out", str(run), "--corpus", str(fifo), *TINY, "--steps", "10")
    with fifo.open("w"):  # blocks until the run opens the pipe to read the corpus
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err.strip() == ("minipt pretrain: interrupted (SIGINT) before the first checkpoint; nothing to continue, "
                           "so no run folder was kept")
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
        kept.mkdir(exist_ok=True)
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


class Repeated(Callback):
    """At the start of step ``step``: Ctrl-C ``times`` times in a row (during that step)."""

    def __init__(self, step: int, times: int) -> None:
        self.step, self.times = step, times

    def on_step_start(self, step, model, optimizer) -> None:
        if step == self.step:
            for _ in range(self.times):
                os.kill(os.getpid(), signal.SIGINT)


def with_callbacks(monkeypatch, module, *added: Callback) -> None:
    """Every ``train`` of ``module``'s job runs with the callbacks ``added`` too."""
    real_train = module.train
    monkeypatch.setattr(module, "train", lambda *a, callbacks, **kw: real_train(*a, **kw, callbacks=[
        *callbacks, *added]))


def test_a_second_ctrl_c_during_the_checkpoint_write_lets_it_finish(tmp_path, corpus, capsys, monkeypatch):
    """Ctrl-C at step 3; the loop stops after step 4 and writes the run's first last.pt; a second and a third Ctrl-C
    come in the middle of that write. The write finishes, the folder stays, and the message is the usual one line."""
    run = tmp_path / "run"
    with_callbacks(monkeypatch, minipt.jobs.pretrain, SignalAt(3, signal.SIGINT))
    real_write = minipt.training.checkpoint.write_atomic

    def write_interrupted(path, content, **kw):
        def content_and_a_signal(file):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C twice more, while the checkpoint is being written
            os.kill(os.getpid(), signal.SIGINT)
            content(file)

        real_write(path, content_and_a_signal, **kw)

    monkeypatch.setattr(minipt.training.checkpoint, "write_atomic", write_interrupted)
    status = main(["pretrain", "--out", str(run), "--corpus", str(corpus), *TINY, "--steps", "50", "--eval-every",
                   "50", "--quiet"])
    assert status == 130
    assert capsys.readouterr().err.strip() == (f"minipt pretrain: interrupted at step 4; last.pt saved; continue "
                                               f"with: minipt pretrain --resume {run}")
    assert load_checkpoint(run / "last.pt")["loop"]["step"] == 4
    assert not list(run.glob(".*tmp*")) and not (run / ".lock").exists()


def test_ctrl_c_pressed_twice_mid_step_still_saves_that_step(tmp_path, corpus, capsys, monkeypatch):
    """Two Ctrl-C in step 3 (index 2), before the first evaluation: the step ends, is saved, the folder stays."""
    run = tmp_path / "run"
    with_callbacks(monkeypatch, minipt.jobs.pretrain, Repeated(2, times=2))
    assert main(["pretrain", "--out", str(run), "--corpus", str(corpus), *TINY, "--steps", "50", "--quiet"]) == 130
    assert capsys.readouterr().err.strip() == (f"minipt pretrain: interrupted at step 3; last.pt saved; continue "
                                               f"with: minipt pretrain --resume {run}")
    assert load_checkpoint(run / "last.pt")["loop"]["step"] == 3


@pytest.mark.parametrize("step, kept", [(5, True), (2, False)])
def test_a_third_ctrl_c_mid_step_stops_at_once_and_only_a_run_without_last_pt_goes(tmp_path, corpus, capsys,
                                                                                  monkeypatch, step, kept):
    """Three Ctrl-C in step ``step``: the run stops at once, nothing more is saved. With a last.pt (of the evaluation
    at step 4) the folder stays and the message says which step last.pt holds; without one the folder goes."""
    run = tmp_path / "run"
    with_callbacks(monkeypatch, minipt.jobs.pretrain, Repeated(step, times=3))
    status = main(["pretrain", "--out", str(run), "--corpus", str(corpus), *TINY, "--steps", "50", "--eval-every",
                   "4", "--quiet"])
    assert status == 130
    err = capsys.readouterr().err.strip()
    if kept:
        assert err == (f"minipt pretrain: interrupted (SIGINT) a third time, so it stopped at once; last.pt holds "
                       f"step 4; continue with: minipt pretrain --resume {run}")
        assert load_checkpoint(run / "last.pt")["loop"]["step"] == 4 and (run / "best.pt").exists()
    else:
        assert err == ("minipt pretrain: interrupted (SIGINT) before the first checkpoint; nothing to continue, so no "
                       "run folder was kept")
        assert not run.exists()


# ----------------------------------------------------------------------------------------------------------
# After the last step: finetune's test scoring
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A tiny pretraining run and a labelled file beside it (``task.csv``)."""
    folder = tmp_path_factory.mktemp("pretrained")
    (folder / "corpus.txt").write_text(TEXT, encoding="utf-8")
    rows = ["text,label"] + [f"to be or not {i % 7} to be,be" for i in range(12)]
    rows += [f"whether tis nobler {i % 5} in the mind,mind" for i in range(12)]
    (folder / "task.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    with torch.random.fork_rng():
        assert main(["pretrain", "--out", str(folder / "run"), "--corpus", str(folder / "corpus.txt"), *TINY,
                     "--steps", "2", "--eval-every", "2", "--quiet"]) == 0
    return folder


def finetune_args(pretrained: Path, out: Path) -> list[str]:
    return ["finetune", "--from", str(pretrained / "run"), "--task", str(pretrained / "task.csv"), "--epochs", "2",
            "--batch-size", "8", "--device", "cpu", "--threads", "1", "--quiet", "--out", str(out)]


class SignalAfterTraining:
    """Replaces a function of the finetuning job: Ctrl-C at ``when`` — "end" of ``train`` (during the last
    evaluation: the loop has looked for a signal for the last time) or "start" of the test scoring."""

    def __init__(self, real, when: str) -> None:
        self.real, self.when = real, when

    def __call__(self, *args, **kwargs):
        if self.when == "start":
            os.kill(os.getpid(), signal.SIGINT)
        result = self.real(*args, **kwargs)
        if self.when == "end":
            os.kill(os.getpid(), signal.SIGINT)
        return result


@pytest.mark.parametrize("when", ["during the last evaluation", "during the test scoring"])
def test_ctrl_c_after_the_last_step_leaves_a_run_that_resume_finishes(tmp_path, pretrained, capsys, monkeypatch,
                                                                      when):
    import minipt.jobs.finetune as job

    straight, run = tmp_path / "straight", tmp_path / "run"
    assert main(finetune_args(pretrained, straight)) == 0
    name, hook = ("train", "end") if when.endswith("evaluation") else ("score_best_checkpoint", "start")
    capsys.readouterr()
    with monkeypatch.context() as patch:
        patch.setattr(job, name, SignalAfterTraining(getattr(job, name), hook))
        assert main(finetune_args(pretrained, run)) == 130
    assert capsys.readouterr().err.strip() == (
        f"minipt finetune: interrupted (SIGINT) after the last training step, before the test split was scored; "
        f"best.pt and last.pt are saved; score it (report, summary.json) with: minipt finetune --resume {run}")
    assert (run / "best.pt").exists() and not (run / "classification_report.txt").exists()
    assert "test_accuracy" not in json.loads((run / "summary.json").read_text())
    assert main(["finetune", "--resume", str(run), "--quiet"]) == 0
    summary, expected = (json.loads((folder / "summary.json").read_text()) for folder in (run, straight))
    assert [summary[key] for key in ("test_accuracy", "test_macro_f1")] == [expected[key] for key in (
        "test_accuracy", "test_macro_f1")]
    assert (run / "classification_report.txt").read_text() == (straight / "classification_report.txt").read_text()
    assert main(["finetune", "--resume", str(run), "--quiet"]) == 2  # now it is finished
    assert "the run is finished" in capsys.readouterr().err


def test_ctrl_c_during_pretrainings_last_evaluation_says_the_run_is_complete(tmp_path, corpus, capsys, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setattr(minipt.jobs.pretrain, "train", SignalAfterTraining(minipt.jobs.pretrain.train, "end"))
    assert main(["pretrain", "--out", str(run), "--corpus", str(corpus), *TINY, "--steps", "3", "--quiet"]) == 130
    assert capsys.readouterr().err.strip() == ("minipt pretrain: interrupted (SIGINT) after the last step; the run is "
                                               "complete")
    assert json.loads((run / "summary.json").read_text())["step"] == 3


# ----------------------------------------------------------------------------------------------------------
# Starting: Ctrl-C while Python imports minipt and torch
# ----------------------------------------------------------------------------------------------------------

SIGNAL_ON_IMPORT = """
import os, signal, sys
class SignalOnImport:  # Ctrl-C exactly when `import {module}` starts
    def find_spec(self, name, path=None, target=None):
        if name == "{module}":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, SignalOnImport())
sys.argv = ["minipt", "list"]
from minipt.__main__ import main
sys.exit(main())
"""


@pytest.mark.parametrize("module, line", [
    ("minipt.cli", "minipt: interrupted while starting; nothing was done"),  # before minipt's handlers are in place
    ("torch", "minipt: interrupted (SIGINT); nothing was saved"),  # after
])
def test_ctrl_c_while_importing_is_one_line(module, line):
    def as_from_a_shell() -> None:  # Ctrl-C's default action in the child, whatever the test runner's is now
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    process = subprocess.run([sys.executable, "-c", SIGNAL_ON_IMPORT.format(module=module)], capture_output=True,
                             text=True, timeout=120, preexec_fn=as_from_a_shell)
    assert (process.returncode, process.stderr.strip()) == (130, line), process.stderr


# ----------------------------------------------------------------------------------------------------------
# One process per run
# ----------------------------------------------------------------------------------------------------------

HOLD_LOCK = """
import sys
from minipt.runs.folder import lock_run
with lock_run(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_run_is_locked_while_it_runs_and_a_stale_lock_does_not_block(tmp_path, corpus, pretrained, capsys,
                                                                      monkeypatch):
    run = tmp_path / "run"
    with monkeypatch.context() as patch:  # an unfinished run: stopped at step 4 of 12
        with_callbacks(patch, minipt.jobs.pretrain, SignalAt(3, signal.SIGINT))
        assert main(["pretrain", "--out", str(run), "--corpus", str(corpus), *TINY, "--steps", "12", "--quiet"]) == 130
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "locked\n"
    capsys.readouterr()
    in_use = f"{run} is in use by another minipt process (pid {holder.pid}); one process per run"
    for command in (["pretrain", "--resume", str(run)], ["finetune", "--resume", str(run)],
                    ["pretrain", "--out", str(run), "--corpus", str(corpus), *TINY],
                    finetune_args(pretrained, run)):
        assert main([*command, "--quiet"] if "--quiet" not in command else command) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and in_use in err, err
    holder.kill()  # SIGKILL: its lock file stays behind, the kernel released the lock itself
    holder.wait()
    assert (run / ".lock").read_text().strip() == str(holder.pid)
    assert main(["pretrain", "--resume", str(run), "--quiet"]) == 0
    assert load_checkpoint(run / "last.pt")["loop"]["step"] == 12 and not (run / ".lock").exists()


# ----------------------------------------------------------------------------------------------------------
# torchrun: every rank stops at the same step
# ----------------------------------------------------------------------------------------------------------


def test_under_torchrun_every_rank_stops_at_the_same_step_and_rank_0_saves_it(tmp_path, corpus):
    """Two gloo ranks; only rank 1 gets SIGTERM (twice) at the start of step 3 (index). Both stop at step 4, rank 0
    saves last.pt of step 4, both exit with 143, and rank 0 alone prints one line."""
    from test_distributed import WORKER, finish, start_ranks

    run = tmp_path / "run"
    ranks = start_ranks([str(WORKER), "--signal-at", "3", str(int(signal.SIGTERM)), "1", "--", "pretrain", "--out",
                         str(run), "--corpus", str(corpus), *TINY, "--steps", "50", "--eval-every", "50", "--quiet"])
    (out0, err0), (out1, err1) = (finish(rank, ranks) for rank in ranks)
    assert [rank.returncode for rank in ranks] == [143, 143], err0[-2000:] + err1[-2000:]
    assert err0.strip() == (f"minipt pretrain: interrupted at step 4; last.pt saved; continue with: minipt pretrain "
                            f"--resume {run}")
    assert err1 == ""
    checkpoint = load_checkpoint(run / "last.pt")
    assert checkpoint["loop"]["step"] == 4 and len(checkpoint["other_ranks"]) == 1


def test_under_torchrun_bad_input_is_one_line_and_status_2(tmp_path, corpus):
    from test_distributed import finish, start_ranks

    ranks = start_ranks(["-m", "minipt", "pretrain", "--out", str(tmp_path / "run"), "--corpus", str(corpus), *TINY,
                         "--steps", "2", "--warmup", "5", "--quiet"])
    (_, err0), (_, err1) = (finish(rank, ranks) for rank in ranks)
    assert [rank.returncode for rank in ranks] == [2, 2]
    assert err0.strip() == "minipt pretrain: error: --warmup (5) must be smaller than --steps (2)" and err1 == ""
    assert not (tmp_path / "run").exists()


def test_ctrl_c_to_torchruns_process_group_stops_the_ranks_within_seconds(tmp_path, corpus):
    """A terminal's Ctrl-C reaches torchrun and both ranks, and torchrun forwards it once more: every rank stops at
    the same step, rank 0 saves it and says so once, long before torchrun's 30 s grace period would kill them."""
    from test_distributed import LAUNCH_TIMEOUT, child_env

    run = tmp_path / "run"
    launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                 "2", "-m", "minipt", "pretrain", "--out", str(run), "--corpus", str(corpus), *TINY,
                                 "--steps", "100000", "--eval-every", "5", "--quiet"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
                                start_new_session=True)
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    while not (run / "last.pt").exists() and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # waiting for the first checkpoint (step 5), not timing the signal
    os.killpg(launcher.pid, signal.SIGINT)
    signalled = time.monotonic()
    try:
        _, err = launcher.communicate(timeout=LAUNCH_TIMEOUT)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert time.monotonic() - signalled < 25, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("minipt pretrain:")]
    step = load_checkpoint(run / "last.pt")["loop"]["step"]
    assert lines == [f"minipt pretrain: interrupted at step {step}; last.pt saved; continue with: minipt pretrain "
                     f"--resume {run}"], err[-3000:]
    assert "lost contact" not in err and "Traceback" not in err.split("minipt pretrain:")[0]


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


def test_an_interrupted_demo_resumes_to_the_report_of_one_never_stopped(tmp_path, capsys, monkeypatch):
    """A tiny two-seed demo stopped twice — in seed 0's Transformer pretraining, then in seed 1's first GRU
    finetuning candidate — and resumed each time ends with the same report as one never stopped; finished runs
    (and the finished seed) are not trained again."""
    import minipt.jobs.finetune

    monkeypatch.setattr(minipt.jobs.pretrain, "load_corpus", lambda name: TEXT)  # not the plays: seconds, not minutes
    demo = ["demo", "--tiny", "--quiet", "--device", "cpu", "--threads", "1", "--seeds", "2"]
    straight, out = tmp_path / "straight", tmp_path / "demo"
    assert main([*demo, "--out", str(straight)]) == 0
    continue_line = (f"minipt demo: interrupted (SIGINT); the finished runs and the last checkpoint are kept in "
                     f"{out}; continue the demo with: minipt demo --resume {out}")
    trained = []  # (job, run folder) of every training loop started

    def spied(module, stop_in: int | None):
        real_train = module.train

        def train(*args, callbacks=(), **kwargs):
            trained.append((module.__name__.split(".")[-1], Path(kwargs["run_dir"]).relative_to(out).as_posix()))
            stop = [SignalAt(1, signal.SIGINT)] if len(trained) == stop_in else []
            return real_train(*args, **kwargs, callbacks=[*callbacks, *stop])
        return train

    seed_runs = ["pretrain-transformer", "pretrain-gru", *(f"{row}/lr{lr}" for row in ("frozen-transformer",
                 "frozen-gru", "scratch") for lr in ("0.001", "0.003"))]
    for command, stop_in, trained_then in [
        ([*demo, "--out", str(out)], 1, ["seed0/pretrain-transformer"]),
        (["demo", "--resume", str(out), "--quiet"], 13,  # seed 0's runs, then seed 1's up to its GRU's first
         [f"seed0/{run}" for run in seed_runs] + [f"seed1/{run}" for run in seed_runs[:5]]),
    ]:
        trained.clear()
        with monkeypatch.context() as patch:
            for module in (minipt.jobs.pretrain, minipt.jobs.finetune):
                patch.setattr(module, "train", spied(module, stop_in))
            assert main(command) == 130
        assert [run for _, run in trained] == trained_then
        assert capsys.readouterr().err.strip() == continue_line
        assert (out / "demo.json").exists() and not (out / "report.md").exists()
    assert (out / "seed0" / "result.json").exists() and not (out / "seed1" / "result.json").exists()
    assert load_checkpoint(out / "seed1" / "frozen-gru" / "lr0.001" / "last.pt")["loop"]["step"] == 2
    trained.clear()
    with monkeypatch.context() as patch:
        for module in (minipt.jobs.pretrain, minipt.jobs.finetune):
            patch.setattr(module, "train", spied(module, None))
        assert main(["demo", "--resume", str(out), "--quiet", "--threads", "1"]) == 0
    # seed 0 is read back; of seed 1, only the interrupted candidate and the ones never started train
    assert [run for _, run in trained] == [f"seed1/{run}" for run in seed_runs[4:]]

    def tables(folder: Path) -> list[str]:  # the report's tables (the per-seed one without its wall-time column)
        blocks = (folder / "report.md").read_text().split("\n\n")
        return [re.sub(r"\| [0-9.]+ \|$", "|", line, flags=re.M) for line in blocks if line.startswith("|")]

    assert tables(out) == tables(straight) and len(tables(out)) == 2  # mean ± std per row; paired differences
    for seed in ("seed0", "seed1"):
        assert tables(out / seed)[0] == tables(straight / seed)[0]
    assert main(["demo", "--resume", str(out), "--quiet"]) == 2
    assert "the demo is finished (report.md)" in capsys.readouterr().err
    assert main(["demo", "--resume", str(out), "--labels", "50"]) == 2
    assert capsys.readouterr().err.strip() == ("minipt demo: error: --resume continues a run with its saved settings; "
                                               "do not also pass --labels")


def test_a_demo_stopped_before_its_first_checkpoint_leaves_no_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(minipt.jobs.pretrain, "load_corpus", lambda name: TEXT)
    with_callbacks(monkeypatch, minipt.jobs.pretrain, Repeated(0, times=3))  # stops at once, before any last.pt
    out = tmp_path / "demo"
    assert main(["demo", "--tiny", "--quiet", "--device", "cpu", "--threads", "1", "--out", str(out)]) == 130
    assert capsys.readouterr().err.strip() == ("minipt demo: interrupted (SIGINT) before the first checkpoint; "
                                               "nothing to continue, so no demo folder was kept")
    assert not out.exists()
    assert main(["demo", "--resume", str(out)]) == 2
    assert capsys.readouterr().err.strip() == f"minipt demo: error: --resume {out}: no such demo folder"
    out.mkdir()
    assert main(["demo", "--resume", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (f"minipt demo: error: --resume {out}: not a demo folder (it has no "
                                               "demo.json); start a demo with --out")


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
