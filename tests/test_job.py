"""The job objects the command line asks (``minipt/jobs/job.py``): which flags ``--resume`` takes, and which run
folders are a job's own."""

from __future__ import annotations

import pytest

from minipt.errors import MiniptError
from minipt.jobs.finetune import FinetuneConfig
from minipt.jobs.job import FINETUNE, PRETRAIN
from minipt.jobs.pretrain import PretrainConfig


def test_a_run_folders_kind_comes_from_its_config_sections():
    pretraining = {"pretrain": {}, "model": {}, "train": {}}
    finetuning = {"finetune": {}, "classifier": {}, "pretrain": {}, "model": {}}  # keeps its pretraining section
    assert PRETRAIN.made(pretraining) and not FINETUNE.made(pretraining)
    assert FINETUNE.made(finetuning) and not PRETRAIN.made(finetuning)
    assert not PRETRAIN.made({"model_type": "gpt2"}) and not FINETUNE.made({"model_type": "gpt2"})


def test_resume_takes_only_how_a_run_computes_and_refuses_the_rest_in_one_line():
    config = PRETRAIN.resume_config(PretrainConfig, {"threads": 1, "steps": 50})  # pretraining's --steps: a new end
    assert (config.threads, config.steps) == (1, 50)
    with pytest.raises(MiniptError, match=r"^--resume continues a run with its saved settings; do not also pass "
                       r"--batch-size, --lr, --out$"):  # in the order of --help
        PRETRAIN.resume_config(PretrainConfig, {"lr": 1.0, "batch_size": 2, "device": "cpu"}, ["--out"])
    with pytest.raises(MiniptError, match="do not also pass --epochs$"):
        FINETUNE.resume_config(FinetuneConfig, {"epochs": 3}, from_run="")
    saved = FinetuneConfig(from_run="/runs/a", lr=0.01, threads=2)
    resumed = FINETUNE.resumed(saved, FinetuneConfig(from_run="", lr=0.5, threads=1, device="cpu"))
    assert (resumed.from_run, resumed.lr, resumed.threads, resumed.device) == ("/runs/a", 0.01, 1, "cpu")
