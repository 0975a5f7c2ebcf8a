"""``--device cuda``: the same numbers as the CPU in float32, bf16 autocast close to them, checkpoints that move
between CPU and GPU, ``generate`` on the GPU, and (with two GPUs) ``torchrun`` over NCCL.

Every test here skips without a CUDA GPU. Tolerances: float32 losses on CPU and GPU within 1e-4 at each of 20
steps (TF32 off: plain float32 matrix products on both); bf16 autocast losses finite and within 0.1 of the
float32 losses at every one of the 20 steps (bf16 keeps 8 bits of mantissa, about 2-3 significant digits).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import minipt
from minipt.cli import main
from minipt.jobs.pretrain import PretrainConfig, load_run, pretrain
from minipt.models import TransformerLM
from minipt.nn import set_fast
from minipt.optim import AdamW, param_groups
from minipt.training.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")

VOCAB, BLOCK, BATCH, STEPS = 40, 32, 8, 20
TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n\n" * 40
CHECKOUT = Path(minipt.__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_tf32():
    """Plain float32 matrix products on the GPU (TF32 would round them to 10 bits of mantissa)."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``STEPS`` batches of random token windows (a fixed seed): inputs and next tokens ``(B, T)``."""
    generator = torch.Generator().manual_seed(0)
    stream = torch.randint(0, VOCAB, (4000,), generator=generator) % 13 + torch.arange(4000) % 3  # learnable-ish
    out = []
    for _ in range(STEPS):
        starts = torch.randint(0, len(stream) - BLOCK - 1, (BATCH,), generator=generator).tolist()
        out.append((torch.stack([stream[s : s + BLOCK] for s in starts]),
                    torch.stack([stream[s + 1 : s + BLOCK + 1] for s in starts])))
    return out


def losses(device: str, fast: bool, bf16: bool = False) -> list[float]:
    """The training losses of ``STEPS`` AdamW steps of one seeded model on ``device``."""
    torch.manual_seed(0)
    model = set_fast(TransformerLM(VOCAB, d_model=64, n_layers=2, n_heads=4, d_ff=128, max_len=BLOCK), fast)
    model.to(device)
    optimizer = AdamW(param_groups(model, 0.1), lr=3e-3, fast=fast)  # the fast path: model and optimizer
    out = []
    for x, y in batches():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            _, loss = model(x.to(device), y.to(device))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        out.append(loss.item())
    return out


@pytest.mark.parametrize("fast", [False, True], ids=["readable", "fast"])
def test_cpu_and_cuda_agree_in_float32_over_20_steps(fast):
    cpu, cuda = losses("cpu", fast), losses("cuda", fast)
    assert max(abs(a - b) for a, b in zip(cpu, cuda, strict=True)) < 1e-4, (cpu, cuda)
    assert cpu[-1] < cpu[0]  # it trained


@pytest.mark.parametrize("fast", [False, True], ids=["readable", "fast"])
def test_bf16_autocast_is_finite_and_close_to_float32(fast):
    float32, bf16 = losses("cuda", fast), losses("cuda", fast, bf16=True)
    assert all(math.isfinite(value) for value in bf16)
    assert max(abs(a - b) for a, b in zip(float32, bf16, strict=True)) < 0.1, (float32, bf16)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cuda") / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def tiny_config(corpus: Path, device: str, **changes) -> PretrainConfig:
    settings = dict(corpus=str(corpus), tokenizer="char", d_model=32, n_layers=2, n_heads=2, d_ff=64, block_size=32,
                    steps=6, batch_size=4, warmup=1, eval_every=3, eval_batches=2, device=device, threads=1)
    return PretrainConfig(**{**settings, **changes})


def rewind(path: Path, step: int) -> None:
    """Make ``last.pt`` say it was written after ``step`` (as if the run had stopped there), to resume from it."""
    checkpoint = load_checkpoint(path)
    checkpoint["loop"]["step"] = step
    save_checkpoint(path, checkpoint)


def test_a_gpu_run_pretrains_with_bf16_and_loads_resumes_and_generates_on_the_cpu(corpus, tmp_path):
    """The whole job on the GPU (the loop autocasts to bf16): finite losses; its checkpoint loads on the CPU,
    the CPU and GPU copies give the same logits (float32, within 1e-4), and a CPU process resumes it."""
    run = tmp_path / "gpu"
    result = pretrain(tiny_config(corpus, "cuda"), run, progress=False)
    assert result.step == 6 and math.isfinite(result.best_metric)
    assert all(tensor.device.type == "cpu" for tensor in load_checkpoint(run / "last.pt")["model"].values())
    cpu_model, tokenizer, _ = load_run(run, "cpu")
    gpu_model, _, _ = load_run(run, "cuda")
    idx = torch.tensor([tokenizer.encode("To be, or not")])  # (1, T)
    with torch.no_grad():
        cpu_logits, _ = cpu_model(idx)
        gpu_logits, _ = gpu_model(idx.cuda())
    assert (cpu_logits - gpu_logits.cpu()).abs().max().item() < 1e-4

    rewind(run / "last.pt", step=3)
    assert main(["pretrain", "--resume", str(run), "--device", "cpu", "--quiet"]) == 0
    assert load_checkpoint(run / "last.pt")["loop"]["step"] == 6


def test_a_cpu_run_resumes_on_the_gpu(corpus, tmp_path):
    run = tmp_path / "cpu"
    pretrain(tiny_config(corpus, "cpu"), run, progress=False)
    rewind(run / "last.pt", step=3)
    assert main(["pretrain", "--resume", str(run), "--device", "cuda", "--quiet"]) == 0
    assert load_checkpoint(run / "last.pt")["loop"]["step"] == 6
    assert all(tensor.device.type == "cpu" for tensor in load_checkpoint(run / "last.pt")["model"].values())


def test_generate_on_cuda_is_reproducible(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    pretrain(tiny_config(corpus, "cuda"), run, progress=False)
    argv = ["generate", "--from", str(run), "--prompt", "To be", "--tokens", "20", "--device", "cuda", "--seed", "3"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    assert capsys.readouterr().out == first and first.startswith("To be") and len(first.strip()) > len("To be")
    model, tokenizer, _ = load_run(run, "cuda")
    idx = torch.tensor([tokenizer.encode("To")], device="cuda")  # (1, T)
    out = model.generate(idx, 10, generator=torch.Generator(device="cuda").manual_seed(0))
    assert out.shape == (1, idx.shape[1] + 10) and out.device.type == "cuda"


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_torchrun_on_two_gpus_trains_over_nccl(corpus, tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "minipt",
               "pretrain", "--corpus", str(corpus), "--out", str(out), "--tokenizer", "char", "--d-model", "32",
               "--steps", "4", "--eval-every", "2", "--batch-size", "4", "--block-size", "32", "--warmup", "1",
               "--device", "cuda", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
    process = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert process.returncode == 0, process.stderr[-3000:]
    assert "global batch of 8 sequences per step" in process.stdout
    assert len(load_checkpoint(out / "last.pt")["other_ranks"]) == 1
