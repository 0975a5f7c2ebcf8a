"""One rank of the data-parallel scenarios of ``tests/test_distributed.py``:
``torchrun --standalone --nproc-per-node 2 tests/ddp_worker.py OUT RUN TASK CORPUS``.

Together the two ranks run, on gloo:

1. ``equality``: 3 steps of 2 accumulated micro-batches, in float64, rank ``r`` taking rows ``r*B .. (r+1)*B`` of
   every global batch of ``2B`` rows (:func:`global_batch`); the test trains one process on the whole global
   batches and compares the weights;
2. ``straight`` and ``crashed``: 6 steps (dropout on, each rank its own sampler), then the same run crashed at
   step 5 on both ranks and resumed from ``last.pt`` (step 3); ``unfreeze``: 6 steps of gradual unfreezing, one
   more layer every 2 steps, each rank its own batches (DDP must be rebuilt over the new trainable set);
3. ``finetune_gradual`` and ``finetune_cached``: ``minipt.finetune.finetune`` on the pretraining run ``RUN`` and
   the labelled file ``TASK`` (gradual unfreezing: the set of trained parameters changes; frozen layers cached:
   the loss runs the top layers only); ``finetune_gru``: from ``pretrain_gru`` beside ``RUN`` (a GRU whose LM
   head the classifier never uses); ``finetune_cli``: the same through ``minipt finetune``;
4. ``pretrain_cli``: ``minipt pretrain`` on the text file ``CORPUS``, 4 steps, then ``--resume`` from step 2.

Rank 0 writes every run folder into ``OUT``.

``python tests/ddp_worker.py --signal-at STEP SIGNUM RANKS -- ARGS`` is one rank of ``minipt ARGS`` (started by
``tests/test_interrupts.py`` with torchrun's variables) that sends itself ``SIGNUM`` twice at the start of step
``STEP`` when its rank is in ``RANKS`` (comma-separated): a terminal's Ctrl-C and the launcher forwarding it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from minipt.cli import main as minipt_main
from minipt.jobs.finetune import FinetuneConfig, finetune
from minipt.models import TransformerLM
from minipt.training import distributed
from minipt.training.checkpoint import load_checkpoint, save_checkpoint
from minipt.training.loop import Callback, TrainConfig, standard_callbacks, train
from minipt.training.strategies import GradualUnfreezing

VOCAB, BLOCK, ROWS = 12, 8, 2  # ROWS per rank and micro-batch
STREAM = torch.arange(400) % 7 + (torch.arange(400) // 50) % 3  # a learnable, slightly varied token stream
VAL_X, VAL_Y = STREAM[:BLOCK].unsqueeze(0), STREAM[1 : BLOCK + 1].unsqueeze(0)
TINY_CLI = ["--tokenizer", "char", "--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--d-ff", "32",
            "--block-size", "16", "--batch-size", "4", "--warmup", "1", "--eval-batches", "2", "--device", "cpu",
            "--threads", "1", "--quiet"]


def tiny_model(dropout: float = 0.0) -> TransformerLM:
    torch.manual_seed(0)
    return TransformerLM(VOCAB, d_model=16, n_layers=2, n_heads=2, d_ff=32, max_len=BLOCK, dropout=dropout)


def windows(starts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.stack([STREAM[s : s + BLOCK] for s in starts])  # (B, T)
    y = torch.stack([STREAM[s + 1 : s + BLOCK + 1] for s in starts])  # (B, T)
    return x, y


def global_batch(index: int, ranks: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Micro-batch ``index`` of the whole job: ``ranks * ROWS`` windows, a pure function of ``index``."""
    generator = torch.Generator().manual_seed(index)
    return windows(torch.randint(0, len(STREAM) - BLOCK - 1, (ranks * ROWS,), generator=generator).tolist())


def lm_loss(model, batch):
    x, y = batch
    return model(x, y)[1]


def evaluate(model):
    return {"val_loss": float(model(VAL_X, VAL_Y)[1])}


EQUALITY = TrainConfig(steps=3, lr=1e-2, warmup=1, grad_accum=2, eval_every=3, device="cpu", progress=False)
RESUMABLE = TrainConfig(steps=6, lr=1e-2, warmup=1, eval_every=3, device="cpu", progress=False)


class SimulatedCrashError(Exception):
    pass


class CrashAtStep5(Callback):
    def on_step_start(self, step, model, optimizer):
        if step == 4:
            raise SimulatedCrashError


def rank_sampler():
    """Random windows from a generator of this rank's own seed (saved and restored by the loop)."""
    generator = torch.Generator().manual_seed(distributed.rank_seed(0))

    def next_batch(index):
        return windows(torch.randint(0, len(STREAM) - BLOCK - 1, (ROWS,), generator=generator).tolist())

    return next_batch, generator


def run_scenarios(out: Path, run: Path, task: Path, corpus: Path) -> None:
    distributed.init_from_env()
    torch.set_num_threads(1)
    rank = distributed.rank()

    model = tiny_model().double()
    rows = slice(rank * ROWS, (rank + 1) * ROWS)
    train(model, next_batch=lambda i: tuple(t[rows] for t in global_batch(i)), loss_fn=lm_loss, evaluate=evaluate,
          config=EQUALITY, run_dir=out / "equality")

    next_batch, generator = rank_sampler()
    train(tiny_model(0.1), next_batch=next_batch, loss_fn=lm_loss, evaluate=evaluate, config=RESUMABLE,
          run_dir=out / "straight", generator=generator)
    next_batch, generator = rank_sampler()
    with contextlib.suppress(SimulatedCrashError):
        train(tiny_model(0.1), next_batch=next_batch, loss_fn=lm_loss, evaluate=evaluate, config=RESUMABLE,
              run_dir=out / "crashed", generator=generator,
              callbacks=[*standard_callbacks(RESUMABLE, out / "crashed"), CrashAtStep5()])
    torch.manual_seed(1000 + rank)  # a new process would not share the crashed one's random state
    next_batch, generator = rank_sampler()
    train(tiny_model(0.1), next_batch=next_batch, loss_fn=lm_loss, evaluate=evaluate, config=RESUMABLE,
          run_dir=out / "crashed", generator=generator, resume=True)

    model = tiny_model()
    start = torch.cat([p.detach().flatten() for p in model.parameters()])  # (P,)
    next_batch, generator = rank_sampler()
    train(model, next_batch=next_batch, loss_fn=lm_loss, evaluate=evaluate, config=RESUMABLE,
          run_dir=out / "unfreeze", generator=generator, optimizer_groups=[{"params": list(model.parameters())}],
          callbacks=[*standard_callbacks(RESUMABLE, out / "unfreeze"), GradualUnfreezing(every=2)])
    weights = distributed.gather(torch.cat([p.detach().flatten() for p in model.parameters()]))  # (P,) per rank
    if rank == 0:
        torch.save({"start": start, "ranks": weights}, out / "unfreeze" / "weights.pt")

    settings = dict(from_run=str(run), task=str(task), epochs=2, batch_size=4, lr=3e-3, device="cpu", threads=1)
    finetune(FinetuneConfig(**settings, strategy="gradual"), out / "finetune_gradual", progress=False, verbose=False)
    gru = {**settings, "from_run": str(run.with_name("pretrain_gru"))}  # the classifier leaves its LM head unused
    finetune(FinetuneConfig(**gru), out / "finetune_gru", progress=False, verbose=False)
    summary = finetune(FinetuneConfig(**settings, freeze="1"), out / "finetune_cached", progress=False, verbose=False)
    if rank == 1:  # rank 0's summary, shared
        (out / "rank1_summary.json").write_text(json.dumps(summary))
    status = minipt_main(["finetune", "--from", str(run), "--task", str(task), "--epochs", "1", "--batch-size", "4",
                   "--device", "cpu", "--threads", "1", "--quiet", "--out", str(out / "finetune_cli")])
    assert status == 0
    status = minipt_main(["pretrain", "--corpus", str(corpus), "--out", str(out / "pretrain_cli"), *TINY_CLI,
                          "--steps", "4", "--eval-every", "2"])
    assert status == 0
    if rank == 0:  # make last.pt say it was written after step 2, as if the job had stopped there
        checkpoint = load_checkpoint(out / "pretrain_cli" / "last.pt")
        checkpoint["loop"]["step"], checkpoint["loop"]["tokens_seen"] = 2, 2 * 8 * 16
        save_checkpoint(out / "pretrain_cli" / "last.pt", checkpoint)
    distributed.barrier()
    assert minipt_main(["pretrain", "--resume", str(out / "pretrain_cli"), "--quiet"]) == 0
    dist.destroy_process_group()


class SignalTwiceAt(Callback):
    """At the start of step ``step``, send this process ``signum`` twice (as a terminal's Ctrl-C reaches every rank
    and torchrun forwards the one it got)."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_step_start(self, step, model, optimizer):
        if step == self.step:
            os.kill(os.getpid(), self.signum)
            os.kill(os.getpid(), self.signum)


def signal_then_run(step: str, signum: str, ranks: str, argv: list[str]) -> int:
    """``minipt ARGV`` (pretrain) with :class:`SignalTwiceAt` on the ranks listed in ``ranks``."""
    import minipt.jobs.pretrain

    real_train = minipt.jobs.pretrain.train
    if os.environ["RANK"] in ranks.split(","):
        signals = [SignalTwiceAt(int(step), int(signum))]
        minipt.jobs.pretrain.train = lambda *args, callbacks, **kwargs: real_train(*args, **kwargs,
                                                                                callbacks=[*callbacks, *signals])
    return minipt_main(argv)


if __name__ == "__main__":
    if sys.argv[1] == "--signal-at":
        sys.exit(signal_then_run(*sys.argv[2:5], argv=sys.argv[6:]))
    run_scenarios(*(Path(argument) for argument in sys.argv[1:5]))
