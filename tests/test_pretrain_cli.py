"""``minipt pretrain`` and ``minipt generate``: the run folder, exact resume through the CLI, config files,
the three objectives, and every user mistake as a one-line error with exit status 2.

All runs are tiny (width 16, one layer, a 3 KB corpus written by the test, a few steps), so the whole file takes
a few seconds. Nothing here reads the built-in Shakespeare corpus.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch

import minipt.jobs.pretrain
from minipt.cli import build_parser, main
from minipt.jobs.pretrain import PretrainConfig
from minipt.training.checkpoint import load_checkpoint


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (two threads on a shared 2-core machine mostly wait on each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 40  # (43 + 42) * 40
SMALL = ["--tokenizer", "char", "--n-layers", "1", "--n-heads", "2", "--d-ff", "32", "--hidden-size", "16",
         "--block-size", "16", "--batch-size", "4", "--warmup", "1", "--eval-batches", "2", "--device", "cpu",
         "--threads", "1", "--quiet"]
TINY = ["--d-model", "16", *SMALL, "--steps", "6", "--eval-every", "3"]


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def pretrain(corpus: Path, out: Path, *extra: str) -> int:
    return main(["pretrain", "--corpus", str(corpus), "--out", str(out), *TINY, *extra])


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def one_line_error(capsys, status: int, *expected: str) -> str:
    """The command failed with exit status 2 and exactly one stderr line containing each expected piece."""
    err = capsys.readouterr().err.strip()
    assert status == 2, err
    assert len(err.splitlines()) == 1, err
    for piece in expected:
        assert piece in err, err
    return err


# ----------------------------------------------------------------------------------------------------------
# pretrain and generate
# ----------------------------------------------------------------------------------------------------------


def test_pretrain_writes_the_run_folder(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    assert pretrain(corpus, out) == 0
    assert str(out) in capsys.readouterr().out  # says where the run is written
    for name in ("config.json", "tokenizer.json", "best.pt", "last.pt", "metrics.jsonl", "loss.png", "summary.json"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["pretrain"]["d_model"] == 16 and config["pretrain"]["corpus"] == str(corpus)
    assert config["model"]["architecture"] == "transformer" and config["model"]["causal"] is True
    # (43 + 42) * 40 = 3,400 characters, one token each: the last int(0.1 * 3400) = 340 validate, 3,060 train
    # and the corpus's fingerprint: what `sha256sum corpus.txt` prints, and its size
    fingerprint = {"path": str(corpus), "sha256": hashlib.sha256(TEXT.encode()).hexdigest(), "bytes": 3400}
    assert config["data"] == {"train_tokens": 3060, "val_tokens": 340, "corpus": fingerprint}
    assert [record["step"] for record in metrics(out)] == [3, 6]
    checkpoint = load_checkpoint(out / "last.pt")
    assert checkpoint["loop"]["step"] == 6 and checkpoint["loop"]["tokens_seen"] == 6 * 4 * 16


def test_generate_continues_the_prompt_reproducibly(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    pretrain(corpus, out)
    capsys.readouterr()
    args = ["generate", "--from", str(out), "--prompt", "To be", "--tokens", "20", "--seed", "3"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first  # same seed, same text
    assert first.startswith("To be") and len(first.rstrip("\n")) >= len("To be") + 1


def test_same_seed_same_run_and_a_different_seed_differs(tmp_path, corpus):
    pretrain(corpus, tmp_path / "a")
    pretrain(corpus, tmp_path / "b")
    pretrain(corpus, tmp_path / "c", "--seed", "7")
    losses = {name: [r["train_loss"] for r in metrics(tmp_path / name)] for name in "abc"}
    assert losses["a"] == losses["b"]
    assert losses["a"] != losses["c"]


class SimulatedCrashError(Exception):
    """Stands in for the process dying in the middle of a run."""


def test_resume_through_the_cli_continues_exactly(tmp_path, corpus, monkeypatch):
    """3 steps, crash, ``--resume``, 3 more = 6 uninterrupted steps: same weights and losses, bit for bit."""
    assert pretrain(corpus, tmp_path / "straight") == 0

    real_batch = minipt.jobs.pretrain.causal_lm_batch
    calls = {"n": 0}

    def crashing_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # step 5: last.pt holds step 3, step 4 is lost
            raise SimulatedCrashError
        return real_batch(*args, **kwargs)

    monkeypatch.setattr(minipt.jobs.pretrain, "causal_lm_batch", crashing_batch)
    with pytest.raises(SimulatedCrashError):
        pretrain(corpus, tmp_path / "resumed")
    monkeypatch.setattr(minipt.jobs.pretrain, "causal_lm_batch", real_batch)
    torch.manual_seed(12345)  # a fresh process would not share this one's random state
    assert main(["pretrain", "--resume", str(tmp_path / "resumed"), "--quiet"]) == 0

    straight = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")["model"]
    assert all(torch.equal(straight[key], resumed[key]) for key in straight)
    drop = ("elapsed_seconds", "tokens_per_second")
    assert [{k: v for k, v in r.items() if k not in drop} for r in metrics(tmp_path / "straight")] == [
        {k: v for k, v in r.items() if k not in drop} for r in metrics(tmp_path / "resumed")
    ]


def test_gru_pretrains_and_generates(tmp_path, corpus, capsys):
    out = tmp_path / "gru"
    assert pretrain(corpus, out, "--model", "gru") == 0
    assert json.loads((out / "config.json").read_text())["model"]["architecture"] == "gru"
    assert main(["generate", "--from", str(out), "--prompt", "To", "--tokens", "5", "--top-k", "3"]) == 0
    assert main(["generate", "--from", str(out), "--prompt", "To", "--tokens", "5", "--top-p", "0.9"]) == 0
    capsys.readouterr()
    status = main(["generate", "--from", str(out), "--prompt", "To", "--top-p", "1.5"])
    one_line_error(capsys, status, "--top-p must be a number in (0, 1]", "got 1.5")


def test_masked_lm_objectives(tmp_path, corpus, capsys):
    assert pretrain(corpus, tmp_path / "mlm", "--objective", "mlm") == 0
    assert json.loads((tmp_path / "mlm" / "config.json").read_text())["model"]["causal"] is False
    assert {"val_loss", "val_accuracy", "perplexity", "val_chosen_loss"} <= set(metrics(tmp_path / "mlm")[-1])
    assert pretrain(corpus, tmp_path / "nsp", "--objective", "mlm+nsp") == 0
    last = metrics(tmp_path / "nsp")[-1]
    assert last["val_loss"] == pytest.approx(last["val_mlm_loss"] + last["val_nsp_loss"])
    assert 0.0 <= last["val_nsp_accuracy"] <= 1.0 and 0.0 <= last["val_mlm_accuracy"] <= 1.0
    assert "val_mlm_chosen_loss" in last  # the all-chosen figure, named apart from the masked-only val_mlm_loss
    capsys.readouterr()
    status = main(["generate", "--from", str(tmp_path / "mlm"), "--prompt", "To"])
    one_line_error(capsys, status, "--objective mlm", "generate needs a --objective clm run")


def test_init_from_continues_a_run_on_new_text_with_the_lower_layers_frozen(tmp_path, corpus, capsys):
    """Domain adaptation: the new text is scored better after a few steps, and the frozen part is unchanged."""
    assert pretrain(corpus, tmp_path / "base", "--n-layers", "2") == 0
    new_text = tmp_path / "new.txt"
    new_text.write_text("nobler is the mind; to be is to suffer.\n" * 60, encoding="utf-8")
    args = ["pretrain", "--init-from", str(tmp_path / "base"), "--corpus", str(new_text), "--freeze", "1",
            "--steps", "30", "--eval-every", "15", "--lr", "1e-2", "--batch-size", "8", "--warmup", "1",
            "--eval-batches", "2", "--device", "cpu", "--threads", "1", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "adapted")]) == 0
    summary = json.loads((tmp_path / "adapted" / "summary.json").read_text())
    assert summary["best_metric"] < summary["val_loss_before"] - 0.05  # 3.27 -> 3.19 with the output head frozen
    assert summary["perplexity_before"] == pytest.approx(math.exp(summary["val_loss_before"]))
    saved = json.loads((tmp_path / "adapted" / "config.json").read_text())
    base = json.loads((tmp_path / "base" / "config.json").read_text())
    assert saved["model"] == base["model"]  # the architecture (and its vocabulary) is the base run's
    assert (tmp_path / "adapted" / "tokenizer.json").read_text() == (tmp_path / "base" / "tokenizer.json").read_text()
    base_weights = load_checkpoint(tmp_path / "base" / "best.pt")["model"]
    adapted = load_checkpoint(tmp_path / "adapted" / "last.pt")["model"]
    frozen = [name for name in base_weights if name.startswith(("embedding.", "layers.0."))]
    assert frozen and all(torch.equal(adapted[name], base_weights[name]) for name in frozen)
    assert not all(torch.equal(adapted[name], base_weights[name]) for name in base_weights)
    capsys.readouterr()
    status = main([*args, "--out", str(tmp_path / "x"), "--d-model", "32"])
    one_line_error(capsys, status, "--init-from takes the architecture", "--d-model")
    status = pretrain(corpus, tmp_path / "y", "--freeze", "1")
    one_line_error(capsys, status, "--freeze needs --init-from")


# ----------------------------------------------------------------------------------------------------------
# Config files
# ----------------------------------------------------------------------------------------------------------


def test_config_file_toml_and_json_with_flags_overriding(tmp_path, corpus):
    toml = tmp_path / "settings.toml"
    toml.write_text(f'corpus = "{corpus}"\nd_model = 24\nsteps = 4\nlr = 2e-3\n', encoding="utf-8")
    assert main(["pretrain", "--config", str(toml), *SMALL, "--steps", "6", "--out", str(tmp_path / "t")]) == 0
    saved = json.loads((tmp_path / "t" / "config.json").read_text())["pretrain"]
    assert saved["steps"] == 6  # the command line's --steps 6 beats the file's 4
    assert saved["d_model"] == 24 and saved["lr"] == 2e-3  # the file beats the defaults (128, 1e-3)

    settings = {"corpus": str(corpus), "out": str(tmp_path / "j"), "model": "gru", "steps": 3, "eval_every": 3}
    (tmp_path / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    assert main(["pretrain", "--config", str(tmp_path / "settings.json"), *SMALL]) == 0
    saved = json.loads((tmp_path / "j" / "config.json").read_text())["pretrain"]
    assert saved["model"] == "gru" and saved["steps"] == 3


def test_config_file_mistakes(tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"d_modle": 64}), encoding="utf-8")
    status = main(["pretrain", "--config", str(path), "--out", str(tmp_path / "x")])
    one_line_error(capsys, status, str(path), "unknown key 'd_modle'")
    path.write_text(json.dumps({"steps": "many"}), encoding="utf-8")
    status = main(["pretrain", "--config", str(path), "--out", str(tmp_path / "x")])
    one_line_error(capsys, status, str(path), "'steps' must be a int")


# ----------------------------------------------------------------------------------------------------------
# User mistakes: one line on stderr, exit status 2
# ----------------------------------------------------------------------------------------------------------


def test_bad_values_are_one_line_errors(tmp_path, corpus, capsys):
    status = pretrain(corpus, tmp_path / "a", "--steps", "-5")
    one_line_error(capsys, status, "--steps must be a positive integer, got -5")
    status = pretrain(corpus, tmp_path / "b", "--model", "lstm")
    one_line_error(capsys, status, "--model must be one of transformer, gru; got 'lstm'")
    status = pretrain(corpus, tmp_path / "c", "--model", "gru", "--objective", "mlm")
    one_line_error(capsys, status, "--objective mlm needs a bidirectional model")
    status = pretrain(corpus, tmp_path / "d", "--block-size", "4000")
    one_line_error(capsys, status, "fewer than one block", "--block-size 4000")
    status = pretrain(tmp_path / "missing.txt", tmp_path / "e")
    one_line_error(capsys, status, "missing.txt")
    binary = tmp_path / "latin1.txt"
    binary.write_bytes("Sc\u00e8ne premi\u00e8re\n".encode("latin-1") * 100)
    status = pretrain(binary, tmp_path / "f")
    one_line_error(capsys, status, "latin1.txt", "UTF-8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_an_error_before_anything_is_written(tmp_path, corpus, capsys):
    status = main(["pretrain", "--corpus", str(corpus), "--out", str(tmp_path / "run"), *TINY, "--device", "cuda"])
    one_line_error(capsys, status, "no CUDA GPU is available")
    assert not (tmp_path / "run").exists()


def test_an_existing_run_is_never_overwritten(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    status = pretrain(corpus, out)
    one_line_error(capsys, status, f"--out {out} already exists and is not empty", "--resume")
    assert (out / "notes.txt").read_text() == "keep me"


def test_missing_and_tampered_runs(tmp_path, corpus, capsys):
    status = main(["generate", "--from", str(tmp_path / "nowhere")])
    one_line_error(capsys, status, "nowhere", "does not exist")
    status = main(["pretrain", "--resume", str(tmp_path / "nowhere")])
    one_line_error(capsys, status, "nowhere", "does not exist")

    out = tmp_path / "run"
    pretrain(corpus, out)
    capsys.readouterr()

    class Exploit:  # unpickling this would run a shell command
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"model": Exploit()}, out / "best.pt")
    status = main(["generate", "--from", str(out)])
    one_line_error(capsys, status, "best.pt", "refused")
    torch.save({"model": Exploit()}, out / "last.pt")
    status = main(["pretrain", "--resume", str(out), "--quiet"])
    one_line_error(capsys, status, "last.pt", "refused")
    status = main(["pretrain", "--resume", str(out), "--lr", "0.1"])
    one_line_error(capsys, status, "--resume continues a run with its saved settings", "--lr")


def test_a_real_subprocess_reports_a_bad_value_with_status_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "minipt", "pretrain", "--steps", "0", "--out", str(tmp_path / "x")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "minipt pretrain: error: --steps must be a positive integer, got 0"


def test_help_explains_every_option(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["pretrain", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for field in fields(PretrainConfig):
        assert "--" + field.name.replace("_", "-") in text, field.name
    for option in ("--out", "--resume", "--config"):
        assert option in text
    with pytest.raises(SystemExit):
        parser.parse_args(["generate", "--help"])
    text = capsys.readouterr().out
    for option in ("--from", "--prompt", "--tokens", "--temperature", "--top-k", "--top-p", "--seed"):
        assert option in text
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "pretrain" in text and "generate" in text
