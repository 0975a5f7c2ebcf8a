"""Data parallelism (minipt.training.distributed): two CPU ranks on gloo against one process, resume, finetuning, the
``torchrun`` command itself, and a killed rank.

The ranks are real processes: ``tests/ddp_worker.py`` under ``torchrun`` (the loop, the finetuning job and
both commands: one launch for all their scenarios), and ``minipt pretrain`` started twice with torchrun's
environment variables (one of them then killed). Every launch has a timeout, so a hang fails the test instead
of stalling the suite.
Tolerance of the equality test: float64 weights within 1e-12 of the one-process run (the two differ only in
the order the gradients are summed).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from ddp_worker import EQUALITY, ROWS, TINY_CLI, evaluate, global_batch, lm_loss, tiny_model

import minipt
from minipt.cli import main
from minipt.errors import MiniptError
from minipt.jobs.pretrain import PretrainConfig, pretrain
from minipt.training import distributed
from minipt.training.checkpoint import load_checkpoint
from minipt.training.loop import TrainConfig, train

WORKER = Path(__file__).with_name("ddp_worker.py")
CHECKOUT = Path(minipt.__file__).resolve().parents[1]  # the ranks import this copy of minipt
LAUNCH_TIMEOUT = 300  # seconds; a launch takes a few seconds, longer only on a crowded machine
TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n\n" * 40


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(**variables: str) -> dict:
    """This environment, with this checkout first on the import path, one thread per process, and ``variables``."""
    path = os.pathsep.join([str(CHECKOUT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **variables}


def start_ranks(argv: list[str], world: int = 2) -> list[subprocess.Popen]:
    """``world`` processes of ``python ARGV``, each with the variables torchrun would set for its rank."""
    port = str(free_port())
    return [
        subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=child_env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                                       LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
        for rank in range(world)
    ]


def finish(process: subprocess.Popen, others: list[subprocess.Popen] = ()) -> tuple[str, str]:
    """Wait for ``process`` (stdout, stderr); a hang kills every process and fails the test."""
    try:
        return process.communicate(timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        for each in (process, *others):
            each.kill()
        pytest.fail(f"a rank did not finish within {LAUNCH_TIMEOUT} s (a hang)")


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def without_times(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("elapsed_seconds", "tokens_per_second")} for r in records]


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------------------------------------
# The helpers, without a process group
# ----------------------------------------------------------------------------------------------------------


def test_without_torchrun_every_helper_is_the_single_process_case():
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.all_reduce_mean(2.5) == 2.5
    assert distributed.broadcast({"a": 1}) == {"a": 1}
    assert distributed.gather("x") == ["x"]
    assert distributed.shard([3, 1, 2]) == [3, 1, 2]
    assert distributed.rank_seed(7) == 7
    assert distributed.cores_per_rank() == (os.cpu_count() or 1)


@pytest.mark.parametrize("items, ranks", [(10, 2), (11, 2), (7, 3), (2, 4)])
def test_shard_follows_torchs_distributed_sampler(monkeypatch, items, ranks):
    """Each rank's share is DistributedSampler's (unshuffled), the shares have one length and cover every item."""
    order = torch.randperm(items, generator=torch.Generator().manual_seed(items)).tolist()
    monkeypatch.setattr(distributed, "world_size", lambda: ranks)
    shares = []
    for rank in range(ranks):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        sampler = torch.utils.data.DistributedSampler(order, num_replicas=ranks, rank=rank, shuffle=False)
        shares.append(distributed.shard(order))
        assert shares[-1] == [order[index] for index in sampler]
    assert {len(share) for share in shares} == {math.ceil(items / ranks)}
    assert set().union(*shares) == set(order)


def test_ranks_on_one_machine_share_its_cores(monkeypatch):
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert distributed.cores_per_rank() == max(1, (os.cpu_count() or 1) // 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(4 * (os.cpu_count() or 1)))
    assert distributed.cores_per_rank() == 1


def test_under_torchrun_only_pretrain_and_finetune_run(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["generate", "--from", str(tmp_path)]) == 2
    assert "only minipt pretrain and minipt finetune run under torchrun" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# Two gloo ranks running the loop and the finetuning job (one launch of tests/ddp_worker.py)
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ranks_ran(tmp_path_factory) -> Path:
    """The folder where the two ranks of ``ddp_worker.py`` wrote their runs (a pretraining run and a labelled
    file for the finetuning scenarios are made here first, in this process). ``torchrun`` starts them."""
    folder = tmp_path_factory.mktemp("ddp")
    (folder / "corpus.txt").write_text("the rose is red and the sky is blue; so sing the birds of may.\n" * 60)
    config = PretrainConfig(corpus=str(folder / "corpus.txt"), tokenizer="char", d_model=16, n_layers=2, n_heads=2,
                            d_ff=32, hidden_size=24, block_size=32, steps=2, batch_size=4, warmup=1, eval_batches=1,
                            seed=0, device="cpu", threads=1)
    pretrain(config, folder / "pretrain", progress=False)
    pretrain(replace(config, model="gru"), folder / "pretrain_gru", progress=False)  # its LM head: unused later
    rows = ["text,label"] + [f"the rose is red {i % 7} and so is the rose,rose" for i in range(15)]
    rows += [f"sing birds of may in the wood {i % 5} sing,bird" for i in range(12)]
    (folder / "task.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (folder / "text.txt").write_text(TEXT, encoding="utf-8")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    process = subprocess.Popen([*torchrun, str(WORKER), *(str(folder / name) for name in
                                                        ("out", "pretrain", "task.csv", "text.txt"))],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    _, err = finish(process)
    assert process.returncode == 0, err[-3000:]
    return folder / "out"


def test_two_gloo_ranks_equal_one_process_over_the_global_batch(ranks_ran, tmp_path):
    """3 steps x 2 micro-batches, each rank 2 of the 4 rows, in float64: the weights of one process training on
    all 4 rows agree within 1e-12; one process on rank 0's rows alone is far off (the test can tell)."""
    ddp = load_checkpoint(ranks_ran / "equality" / "last.pt")["model"]
    single = tiny_model().double()
    train(single, next_batch=global_batch, loss_fn=lm_loss, evaluate=evaluate, config=EQUALITY, run_dir=tmp_path / "a")
    half = tiny_model().double()
    train(half, next_batch=lambda i: tuple(t[:ROWS] for t in global_batch(i)), loss_fn=lm_loss, evaluate=evaluate,
          config=EQUALITY, run_dir=tmp_path / "b")
    assert all(ddp[key].dtype == torch.float64 for key in ddp)
    assert max((ddp[key] - value).abs().max().item() for key, value in single.state_dict().items()) < 1e-12
    assert max((ddp[key] - value).abs().max().item() for key, value in half.state_dict().items()) > 1e-4
    [record] = metrics(ranks_ran / "equality")  # rank 0 alone wrote: one line, not one per rank
    assert record["tokens"] == 3 * 2 * (2 * ROWS) * 8  # steps x micro-batches x global rows x block


def test_resume_under_ddp_continues_exactly(ranks_ran):
    """Crashed at step 5 on both ranks, resumed from last.pt (step 3): the weights and the records of the
    uninterrupted 6 steps, bit for bit; each rank got its own random states back."""
    straight, crashed = ranks_ran / "straight", ranks_ran / "crashed"
    assert same_weights(load_checkpoint(straight / "last.pt")["model"], load_checkpoint(crashed / "last.pt")["model"])
    assert without_times(metrics(straight)) == without_times(metrics(crashed))
    assert [record["step"] for record in metrics(crashed)] == [3, 6]
    checkpoint = load_checkpoint(straight / "last.pt")
    [other] = checkpoint["other_ranks"]
    assert not torch.equal(other["data_generator"], checkpoint["data_generator"])


def test_unfreezing_layers_during_a_ddp_run_keeps_the_ranks_identical(ranks_ran):
    """The ranks drew different batches; the layers unfrozen at steps 2 and 4 still got averaged gradients, so
    both ranks end with the same weights, and those weights moved."""
    saved = torch.load(ranks_ran / "unfreeze" / "weights.pt")
    rank0, rank1 = saved["ranks"]
    assert torch.equal(rank0, rank1)
    assert not torch.equal(rank0, saved["start"])


def test_resuming_with_another_number_of_ranks_is_a_clear_error(ranks_ran, tmp_path):
    shutil.copytree(ranks_ran / "straight", tmp_path / "run")
    config = TrainConfig(steps=9, warmup=1, eval_every=3, device="cpu", progress=False)
    with pytest.raises(MiniptError, match=r"written by 2 process\(es\).*torchrun --nproc-per-node 2"):
        train(tiny_model(), next_batch=global_batch, loss_fn=lm_loss, evaluate=evaluate, config=config,
              run_dir=tmp_path / "run", resume=True)


@pytest.mark.parametrize("name", ["finetune_gradual", "finetune_cached", "finetune_gru"])
def test_finetuning_on_two_ranks_shares_each_epoch(ranks_ran, name):
    """Each rank walks half of every epoch: ceil(ceil(N / 2) / B) steps per epoch; rank 0 wrote the whole run."""
    run = ranks_ran / name
    examples = json.loads((run / "config.json").read_text())["data"]["train_examples"]
    per_epoch = math.ceil(math.ceil(examples / 2) / 4)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 * per_epoch
    assert [record["step"] for record in metrics(run)] == [per_epoch, 2 * per_epoch]
    assert 0 <= summary["test_accuracy"] <= 1 and (run / "confusion.png").exists()


def test_every_rank_gets_the_finetuning_summary_and_the_command_runs(ranks_ran):
    shared = json.loads((ranks_ran / "rank1_summary.json").read_text())
    assert shared == json.loads((ranks_ran / "finetune_cached" / "summary.json").read_text())
    summary = json.loads((ranks_ran / "finetune_cli" / "summary.json").read_text())
    examples = json.loads((ranks_ran / "finetune_cli" / "config.json").read_text())["data"]["train_examples"]
    assert summary["steps"] == math.ceil(math.ceil(examples / 2) / 4)  # one epoch on two ranks


# ----------------------------------------------------------------------------------------------------------
# The commands: torchrun ... -m minipt pretrain, and a rank killed in the middle
# ----------------------------------------------------------------------------------------------------------


def test_minipt_pretrain_on_two_ranks_writes_one_run_and_resumes(ranks_ran):
    """4 steps, then ``--resume`` from a last.pt of step 2: the records of steps 3-4 are written once more (the
    later lines of metrics.jsonl were dropped on resume), with every rank's tokens counted."""
    out = ranks_ran / "pretrain_cli"
    assert [(r["step"], r["tokens"]) for r in metrics(out)] == [(2, 2 * 8 * 16), (4, 4 * 8 * 16)]  # global tokens
    assert {"best.pt", "last.pt", "loss.png", "summary.json", "config.json", "tokenizer.json"} <= {
        path.name for path in out.iterdir()}
    assert len(load_checkpoint(out / "last.pt")["other_ranks"]) == 1


def test_a_killed_rank_stops_the_job_with_a_clear_message(tmp_path):
    """Rank 1 is killed (SIGKILL) while training: rank 0 exits with status 1 and a one-line error saying so,
    within the timeout instead of waiting forever, and the last checkpoint is intact. Before that, rank 0 alone
    printed, and it stated the global batch."""
    corpus, out = tmp_path / "corpus.txt", tmp_path / "run"
    corpus.write_text(TEXT, encoding="utf-8")
    rank0, rank1 = processes = start_ranks(["-m", "minipt", "pretrain", "--corpus", str(corpus), "--out", str(out),
                                           *TINY_CLI, "--steps", "100000", "--eval-every", "20"])
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    while not (out / "last.pt").exists() and rank0.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (out / "last.pt").exists(), finish(rank0, processes)[1][-3000:]
    rank1.send_signal(signal.SIGKILL)
    assert rank1.communicate()[0] == ""  # its standard output is silenced
    stdout, stderr = finish(rank0, processes)
    assert rank0.returncode == 1
    assert stdout.splitlines() == [f"minipt pretrain: writing the run into {out}", "distributed: 2 ranks x "
                                   "--batch-size 4 x --grad-accum 1 = global batch of 8 sequences per step"]
    errors = [line for line in stderr.splitlines() if line.startswith("minipt pretrain: error:")]
    assert len(errors) == 1 and "rank 0 of 2 lost contact with the other ranks" in errors[0], stderr[-3000:]
    assert "--resume" in errors[0]
    assert load_checkpoint(out / "last.pt")["loop"]["step"] >= 20
