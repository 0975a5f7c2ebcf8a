"""minipt.training.loop: the loop's bookkeeping (schedule, accumulation, evaluation, best/last checkpoints, early
stopping), determinism, exact resume, a diverging loss, and checkpoints that survive a killed process.

Every run is a tiny Transformer (2 layers of width 16, dropout on so that the random state matters) on a
synthetic token stream, a few dozen steps: each test takes well under a second or two.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import time
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from minipt.errors import MiniptError, TrainingDivergedError
from minipt.models import TransformerLM
from minipt.training.checkpoint import load_checkpoint, save_checkpoint
from minipt.training.loop import Callback, TrainConfig, count_tokens, resolve_device, standard_callbacks, train
from minipt.training.state import LoopState


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (two threads on a shared 2-core machine mostly wait on each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

VOCAB, BLOCK, BATCH = 12, 8, 4
STREAM = torch.arange(400) % 7 + (torch.arange(400) // 50) % 3  # a learnable, slightly varied token stream


def tiny_model(seed: int = 0) -> TransformerLM:
    torch.manual_seed(seed)
    return TransformerLM(VOCAB, d_model=16, n_layers=2, n_heads=2, d_ff=32, max_len=BLOCK, dropout=0.1)


def make_sampler(seed: int = 0):
    """Random windows of STREAM drawn from a generator the loop saves and restores."""
    generator = torch.Generator().manual_seed(seed)

    def next_batch(index: int) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(0, len(STREAM) - BLOCK - 1, (BATCH,), generator=generator)  # (B,)
        x = torch.stack([STREAM[s : s + BLOCK] for s in starts.tolist()])  # (B, T)
        y = torch.stack([STREAM[s + 1 : s + BLOCK + 1] for s in starts.tolist()])  # (B, T)
        return x, y

    return next_batch, generator


def lm_loss(model, batch):
    x, y = batch
    return model(x, y)[1]


VAL_X, VAL_Y = STREAM[:BLOCK].unsqueeze(0), STREAM[1 : BLOCK + 1].unsqueeze(0)


def lm_evaluate(model):
    loss = model(VAL_X, VAL_Y)[1].item()
    return {"val_loss": loss, "perplexity": math.exp(loss)}


def config(**overrides) -> TrainConfig:
    settings = dict(steps=12, lr=3e-3, warmup=2, eval_every=4, device="cpu", progress=False)
    return TrainConfig(**{**settings, **overrides})


def run(tmp_path: Path, name: str = "run", seed: int = 0, model=None, resume: bool = False, **overrides):
    model = model if model is not None else tiny_model(seed)
    next_batch, generator = make_sampler(seed)
    result = train(
        model,
        next_batch=next_batch,
        loss_fn=lm_loss,
        evaluate=lm_evaluate,
        config=config(**overrides),
        run_dir=tmp_path / name,
        generator=generator,
        resume=resume,
    )
    return model, result


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("elapsed_seconds", "tokens_per_second")} for r in records]


# ----------------------------------------------------------------------------------------------------------
# The run folder and the bookkeeping
# ----------------------------------------------------------------------------------------------------------


def test_run_folder_metrics_and_learning(tmp_path):
    model, result = run(tmp_path, steps=40, eval_every=10)
    run_dir = tmp_path / "run"
    for name in ("best.pt", "last.pt", "metrics.jsonl", "loss.png", "summary.json"):
        assert (run_dir / name).is_file(), name
    records = metrics(run_dir)
    assert [r["step"] for r in records] == [10, 20, 30, 40]
    # every optimizer step sees BATCH * BLOCK = 32 input tokens
    assert [r["tokens"] for r in records] == [320, 640, 960, 1280]
    assert set(records[0]) >= {"train_loss", "val_loss", "perplexity", "lr", "elapsed_seconds", "tokens_per_second"}
    # a fresh model scores about ln(12) = 2.48; 40 steps on a periodic stream must take off at least 0.5 nat
    assert records[-1]["val_loss"] < records[0]["val_loss"]
    assert records[-1]["train_loss"] < math.log(VOCAB) - 0.5
    assert result.step == 40 and result.tokens_seen == 1280
    best = min(records, key=lambda r: r["val_loss"])
    assert result.best_step == best["step"] and result.best_metric == best["val_loss"]
    assert load_checkpoint(run_dir / "best.pt")["loop"]["step"] == best["step"]
    assert load_checkpoint(run_dir / "last.pt")["loop"]["step"] == 40
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["step"] == 40 and summary["best_step"] == best["step"]


def test_learning_rate_follows_warmup_then_cosine(tmp_path):
    # lr logged at an eval step s is the one used by optimizer step s - 1 (counting from 0):
    # lr(k) = 3e-3 * f(k), warmup W = 2, total T = 12, min_ratio 0.1.
    # step 4 -> k = 3: p = (3 - 2) / 10 = 0.1, f = 0.1 + 0.9 * (1 + cos(0.1 pi)) / 2 = 0.1 + 0.9 * 0.975528 = 0.977975
    # step 12 -> k = 11: p = 0.9, f = 0.1 + 0.9 * (1 + cos(0.9 pi)) / 2 = 0.1 + 0.9 * 0.024472 = 0.122025
    run(tmp_path)
    lrs = {r["step"]: r["lr"] for r in metrics(tmp_path / "run")}
    assert lrs[4] == pytest.approx(3e-3 * 0.977975, rel=1e-5)
    assert lrs[12] == pytest.approx(3e-3 * 0.122025, rel=1e-5)


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    """Two micro-batches of 2 sequences averaged = one batch of the same 4 sequences (no dropout)."""
    x, y = make_sampler(5)[0](0)  # (4, 8) each

    def big(index):
        return x, y

    def halves(index):  # micro-batch index 0 -> first two rows, 1 -> last two
        rows = slice(0, 2) if index % 2 == 0 else slice(2, 4)
        return x[rows], y[rows]

    models = []
    for name, next_batch, accum in (("big", big, 1), ("halves", halves, 2)):
        torch.manual_seed(0)
        model = TransformerLM(VOCAB, d_model=16, n_layers=2, n_heads=2, d_ff=32, max_len=BLOCK, dropout=0.0)
        settings = config(steps=3, warmup=0, eval_every=3, grad_accum=accum)
        train(model, next_batch=next_batch, loss_fn=lm_loss, evaluate=lm_evaluate, config=settings,
              run_dir=tmp_path / name)
        models.append(model)
    for p_big, p_halves in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(p_big, p_halves, atol=1e-6, rtol=1e-5)  # equal up to float32 summation order


def test_early_stopping_with_a_higher_is_better_metric(tmp_path):
    """Accuracy 0.5, 0.7, 0.6, 0.6, ... with patience 2: best at the 2nd evaluation, stop after the 4th."""
    accuracies = iter([0.5, 0.7, 0.6, 0.6, 0.6, 0.6])
    next_batch, generator = make_sampler()
    result = train(
        tiny_model(),
        next_batch=next_batch,
        loss_fn=lm_loss,
        evaluate=lambda model: {"val_loss": 1.0, "val_accuracy": next(accuracies)},
        config=config(steps=24, eval_every=2, monitor="val_accuracy", mode="max", patience=2),
        run_dir=tmp_path / "run",
        generator=generator,
    )
    assert result.stopped_early and result.step == 8
    assert result.best_metric == 0.7 and result.best_step == 4
    assert load_checkpoint(tmp_path / "run" / "best.pt")["loop"]["step"] == 4


def test_resuming_a_run_that_stopped_early_trains_no_further(tmp_path):
    """A finetuning run interrupted while its test split was scored is resumed: if it had stopped early, the loop
    must not take the steps patience saved."""
    settings = dict(steps=40, eval_every=4, patience=1, monitor="constant", mode="max")
    flat = {"val_loss": 1.0, "constant": 0.5}  # never improves after the first evaluation
    next_batch, generator = make_sampler()
    first = train(tiny_model(), next_batch=next_batch, loss_fn=lm_loss, evaluate=lambda model: flat,
                  config=config(**settings), run_dir=tmp_path / "run", generator=generator)
    assert first.stopped_early and first.step == 8
    again = train(tiny_model(), next_batch=next_batch, loss_fn=lm_loss, evaluate=lambda model: flat,
                  config=config(**settings), run_dir=tmp_path / "run", generator=generator, resume=True)
    assert (again.step, again.stopped_early, again.best_step) == (8, True, 4)
    assert [record["step"] for record in metrics(tmp_path / "run")] == [4, 8]


def test_frozen_modules_stay_in_eval_mode(tmp_path):
    """A fully frozen layer must get no dropout: its output is then the same with the layer in eval mode."""
    model = tiny_model()
    for parameter in model.layers[0].parameters():
        parameter.requires_grad_(False)
    before = {name: p.clone() for name, p in model.layers[0].named_parameters()}
    seen_modes = []

    def loss_fn(model, batch):
        seen_modes.append((model.layers[0].training, model.layers[1].training))
        return lm_loss(model, batch)

    next_batch, generator = make_sampler()
    train(model, next_batch=next_batch, loss_fn=loss_fn, evaluate=lm_evaluate, config=config(steps=3, eval_every=3),
          run_dir=tmp_path / "run", generator=generator)
    assert seen_modes == [(False, True)] * 3
    for name, p in model.layers[0].named_parameters():
        assert torch.equal(p, before[name]), name  # frozen: bit-identical (no update, no weight decay)


def test_callbacks_run_at_the_start_of_every_step_and_their_freezing_holds_for_that_step(tmp_path):
    """A callback that freezes layer 0 from step 2 on: the loop sees it before the step's batch, puts the layer in
    eval mode for that step, and the layer's weights stop changing."""
    events = []

    class FreezeLayer0FromStep2(Callback):
        def on_step_start(self, step, model, optimizer):
            events.append(("start", step))
            model.layers[0].requires_grad_(step < 2)

    def loss_fn(model, batch):
        events.append(("batch", model.layers[0].training))
        return lm_loss(model, batch)

    model = tiny_model()
    next_batch, generator = make_sampler()
    snapshots = []

    def sampler(index):
        snapshots.append({name: p.clone() for name, p in model.layers[0].named_parameters()})
        return next_batch(index)

    train(model, next_batch=sampler, loss_fn=loss_fn, evaluate=lm_evaluate, config=config(steps=4, eval_every=4),
          run_dir=tmp_path / "run", generator=generator, callbacks=[FreezeLayer0FromStep2()])
    assert events == [("start", 0), ("batch", True), ("start", 1), ("batch", True),
                      ("start", 2), ("batch", False), ("start", 3), ("batch", False)]
    final = dict(model.layers[0].named_parameters())
    assert all(torch.equal(snapshots[2][name], final[name]) for name in final)  # frozen from step 2: unchanged
    assert not all(torch.equal(snapshots[1][name], snapshots[2][name]) for name in final)  # step 1 still trained it


def test_count_tokens_reads_the_first_tensor():
    assert count_tokens((torch.zeros(3, 5), torch.zeros(3))) == 15
    assert count_tokens({"input_ids": torch.zeros(2, 4), "labels": torch.zeros(2)}) == 8


def test_bad_settings_are_one_line_errors(tmp_path):
    """A config built by hand is checked by TrainConfig.check (the jobs check their own settings, by flag);
    the monitored name is checked by the loop, against what evaluate returns."""
    with pytest.raises(MiniptError, match="steps must be a positive integer, got -1"):
        config(steps=-1).check()
    with pytest.raises(MiniptError, match=r"--warmup \(5\) must be smaller than --steps \(5\)"):
        config(steps=5, warmup=5).check()
    with pytest.raises(MiniptError, match="--mode must be one of min, max; got 'best'"):
        config(mode="best").check()
    with pytest.raises(MiniptError, match="--patience must be None or a positive integer, got 0"):
        config(patience=0).check()
    config().check()  # the defaults of these tests are good
    with pytest.raises(MiniptError, match="monitor 'val_accuracy' is not among"):
        run(tmp_path, monitor="val_accuracy")


def test_the_features_around_the_steps_are_the_callbacks_the_loop_is_given(tmp_path):
    """With no callbacks the loop still steps, evaluates and checkpoints, but writes no records; the standard
    callbacks add metrics.jsonl, loss.png and summary.json."""
    next_batch, generator = make_sampler()
    train(tiny_model(), next_batch=next_batch, loss_fn=lm_loss, evaluate=lm_evaluate, config=config(steps=4),
          run_dir=tmp_path / "bare", generator=generator, callbacks=[])
    assert sorted(path.name for path in (tmp_path / "bare").iterdir()) == ["best.pt", "last.pt"]
    next_batch, generator = make_sampler()
    train(tiny_model(), next_batch=next_batch, loss_fn=lm_loss, evaluate=lm_evaluate, config=config(steps=4),
          run_dir=tmp_path / "standard", generator=generator,
          callbacks=standard_callbacks(config(steps=4), tmp_path / "standard"))
    assert sorted(path.name for path in (tmp_path / "standard").iterdir()) == [
        "best.pt", "last.pt", "loss.png", "metrics.jsonl", "summary.json"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_cuda_without_a_gpu_is_an_error():
    with pytest.raises(MiniptError, match="no CUDA GPU is available"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


# ----------------------------------------------------------------------------------------------------------
# Determinism and resume
# ----------------------------------------------------------------------------------------------------------


def test_same_seed_same_run_bit_for_bit(tmp_path):
    model_a, _ = run(tmp_path, "a")
    model_b, _ = run(tmp_path, "b")
    assert without_timing(metrics(tmp_path / "a")) == without_timing(metrics(tmp_path / "b"))
    for p_a, p_b in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(p_a, p_b)
    model_c, _ = run(tmp_path, "c", seed=1)
    assert metrics(tmp_path / "c")[0]["train_loss"] != metrics(tmp_path / "a")[0]["train_loss"]


class SimulatedCrashError(Exception):
    """Stands in for the process dying."""


def test_resume_continues_exactly(tmp_path):
    """6 steps, crash, resume, 6 more = 12 uninterrupted steps: same parameters and losses, bit for bit."""
    straight, _ = run(tmp_path, "straight", steps=12, eval_every=6)

    next_batch, generator = make_sampler()

    def crashing_next_batch(index):
        if index == 7:  # in step 8, after last.pt of step 6 and one more step that is lost
            raise SimulatedCrashError
        return next_batch(index)

    settings = config(steps=12, eval_every=6, save_every=None)
    with pytest.raises(SimulatedCrashError):
        train(tiny_model(), next_batch=crashing_next_batch, loss_fn=lm_loss, evaluate=lm_evaluate, config=settings,
              run_dir=tmp_path / "resumed", generator=generator)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["loop"]["step"] == 6

    # a new process would rebuild everything from scratch, with other random states: resume must restore them
    torch.manual_seed(123)
    resumed = tiny_model(seed=99)
    next_batch, generator = make_sampler(seed=99)
    train(resumed, next_batch=next_batch, loss_fn=lm_loss, evaluate=lm_evaluate, config=settings,
          run_dir=tmp_path / "resumed", generator=generator, resume=True)

    for p_straight, p_resumed in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p_straight, p_resumed)
    assert without_timing(metrics(tmp_path / "straight")) == without_timing(metrics(tmp_path / "resumed"))


def crash():
    raise SimulatedCrashError


def test_a_checkpoint_missing_a_counter_or_with_an_extra_one_still_resumes(tmp_path):
    """The loop state is read back by name: an older checkpoint without a counter (it starts at its default) or a
    newer one with a counter this minipt does not know (ignored) resumes, and the run ends as an uninterrupted one."""
    straight, _ = run(tmp_path, "straight", steps=12, eval_every=6)
    for name, edit in (("older", lambda loop: loop.pop("elapsed_seconds")),
                       ("newer", lambda loop: loop.update(gradient_norm_sum=3.5))):
        next_batch, generator = make_sampler()
        with pytest.raises(SimulatedCrashError):  # stopped in step 7, after last.pt of step 6
            train(tiny_model(), next_batch=lambda i, nb=next_batch: nb(i) if i < 6 else crash(), loss_fn=lm_loss,
                  evaluate=lm_evaluate, config=config(steps=12, eval_every=6), run_dir=tmp_path / name,
                  generator=generator)
        checkpoint = load_checkpoint(tmp_path / name / "last.pt")
        edit(checkpoint["loop"])
        save_checkpoint(tmp_path / name / "last.pt", checkpoint)
        resumed, result = run(tmp_path, name, seed=99, model=tiny_model(seed=99), resume=True, steps=12, eval_every=6)
        assert result.step == 12
        assert all(torch.equal(a, b) for a, b in zip(straight.parameters(), resumed.parameters(), strict=True))
        assert set(load_checkpoint(tmp_path / name / "last.pt")["loop"]) == {field.name for field in fields(LoopState)}


def test_nan_loss_stops_with_the_step_and_keeps_checkpoints_intact(tmp_path):
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        loss = lm_loss(model, batch)
        return loss * float("nan") if calls["n"] == 7 else loss  # step 7 diverges

    next_batch, generator = make_sampler()
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match=r"the loss is nan at step 7; .*last\.pt"):
        train(tiny_model(), next_batch=next_batch, loss_fn=loss_fn, evaluate=lm_evaluate,
              config=config(steps=12, eval_every=4), run_dir=run_dir, generator=generator)
    last = load_checkpoint(run_dir / "last.pt")
    assert last["loop"]["step"] == 4  # the evaluation at step 4 was the last save
    assert all(torch.isfinite(tensor).all() for tensor in last["model"].values())
    assert load_checkpoint(run_dir / "best.pt")["loop"]["step"] == 4
    assert [r["step"] for r in metrics(run_dir)] == [4]


def train_forever(folder: Path) -> None:
    """The killed process's job: a long run saving last.pt at every step, resuming when there is one."""
    resume = (folder / "run" / "last.pt").exists()
    run(folder, steps=100000, warmup=0, eval_every=100000, save_every=1, resume=resume)


def test_a_process_killed_while_saving_leaves_a_loadable_checkpoint(tmp_path):
    """Save every step, SIGKILL the process at a random moment, resume, kill again (3 times): last.pt always
    loads, and each resumed process carries on from where the killed one last saved.

    The processes are forked from this one (already importing torch), which keeps the test to about a second.
    """
    last_path = tmp_path / "run" / "last.pt"
    generator = torch.Generator().manual_seed(0)
    previous_step = 0
    for _ in range(3):
        process = multiprocessing.get_context("fork").Process(target=train_forever, args=(tmp_path,))
        process.start()
        try:
            deadline = time.monotonic() + 60
            while not last_path.exists() or load_checkpoint(last_path)["loop"]["step"] < previous_step + 3:
                assert process.is_alive(), "the training process ended early"
                assert time.monotonic() < deadline, "the training process saved nothing for 60 s"
                time.sleep(0.01)
            time.sleep(float(torch.rand((), generator=generator)) * 0.1)  # land anywhere, often inside a save
        finally:
            process.kill()  # SIGKILL: no clean-up, no finally blocks, as in a crash
            process.join()
        checkpoint = load_checkpoint(last_path)  # raises CheckpointError if the kill had damaged it
        assert checkpoint["loop"]["step"] >= previous_step + 3
        previous_step = checkpoint["loop"]["step"]
