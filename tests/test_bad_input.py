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


# ----------------------------------------------------------------------------------------------------------
# A config.json that no longer matches its weights (issue 24)
# ----------------------------------------------------------------------------------------------------------


def edit_config(run: Path, edit) -> None:
    config = json.loads((run / "config.json").read_text())
    edit(config)
    (run / "config.json").write_text(json.dumps(config), encoding="utf-8")


def test_an_edited_config_is_refused_naming_the_first_differing_key(pretrained, task, tmp_path, capsys):
    run = tmp_path / "lm"
    shutil.copytree(pretrained, run)
    edit_config(run, lambda config: config["pretrain"].update(n_heads=4))  # the same shapes, another model
    status = main(["generate", "--from", str(run), "--prompt", "the", "--tokens", "3"])
    one_line(capsys, status, "best.pt: the weights were trained with n_heads = 2, but the run's config.json now "
             "gives 4")
    status = main(["finetune", "--from", str(run), "--task", str(task), "--out", str(tmp_path / "ft"), *FINETUNE])
    one_line(capsys, status, "n_heads = 2")
    status = main(["pretrain", "--resume", str(run), "--steps", "9", "--quiet"])
    one_line(capsys, status, "last.pt: the weights were trained with n_heads = 2")
    assert load_step(run) == 6 and not (tmp_path / "ft").exists()
    edit_config(run, lambda config: config["pretrain"].update(n_heads=2))  # put back: it runs again
    assert main(["generate", "--from", str(run), "--prompt", "the", "--tokens", "3"]) == 0


def test_a_config_json_with_a_missing_section_or_an_unknown_key_is_one_line(pretrained, task, tmp_path, capsys):
    run = tmp_path / "lm"
    shutil.copytree(pretrained, run)
    config = run / "config.json"
    edit_config(run, lambda saved: saved.pop("model"))
    one_line(capsys, main(["generate", "--from", str(run)]), f"{config}: no 'model' section")
    shutil.copy(pretrained / "config.json", config)
    edit_config(run, lambda saved: saved["pretrain"].update(n_head=2))
    one_line(capsys, main(["generate", "--from", str(run)]), f"{config}: section 'pretrain': unknown key 'n_head'")
    one_line(capsys, main(["pretrain", "--resume", str(run), "--steps", "9"]), "unknown key 'n_head'")
    shutil.copy(pretrained / "config.json", config)
    edit_config(run, lambda saved: saved["model"].update(colour="red"))
    one_line(capsys, main(["generate", "--from", str(run)]), f"{config}: section 'model': unknown key 'colour'")

    ft = tmp_path / "ft"
    assert main(["finetune", "--from", str(pretrained), "--task", str(task), "--out", str(ft), *FINETUNE]) == 0
    saved = (ft / "config.json").read_text()
    for section, expected in (("labels", "'labels' is missing"), ("classifier", "no 'classifier' section"),
                              ("finetune", "no 'finetune' section")):
        edit_config(ft, lambda config, section=section: config.pop(section))
        one_line(capsys, main(["evaluate", "--from", str(ft)]), f"{ft / 'config.json'}: {expected}")
        (ft / "config.json").write_text(saved, encoding="utf-8")
    edit_config(ft, lambda config: config["classifier"].update(pooling="first"))
    one_line(capsys, main(["evaluate", "--from", str(ft)]),
             "best.pt: the weights were trained with pooling = 'mean', but the run's config.json now gives 'first'")


def test_a_file_that_is_not_a_checkpoint_says_so(pretrained, tmp_path, capsys):
    run = tmp_path / "lm"
    shutil.copytree(pretrained, run)
    (run / "best.pt").write_bytes(bytes(range(256)) * 4)  # random-looking bytes: neither a zip nor a pickle
    status = main(["generate", "--from", str(run)])
    one_line(capsys, status, f"{run / 'best.pt'}: not a checkpoint (1024 bytes, unreadable)")


# ----------------------------------------------------------------------------------------------------------
# The rest of the list (issue 24): sizes, --out, HF folders, columns, <unk>, classes, inf, seeds
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag, value, piece", [
    ("--d-model", "100000000", "GiB for 80,000,026,400,000,064 parameters"),  # 2 layers of 4 d**2, and more
    ("--batch-size", "1000000000", "GiB of activations for --batch-size 1000000000 x --block-size 16"),
])
def test_sizes_that_cannot_fit_are_one_line_with_the_estimate(tmp_path, capsys, flag, value, piece):
    (tmp_path / "corpus.txt").write_text(CORPUS, encoding="utf-8")
    tiny = [*TINY]
    tiny[tiny.index(flag) + 1] = value
    status = main(["pretrain", "--corpus", str(tmp_path / "corpus.txt"), "--out", str(tmp_path / "run"), *tiny])
    err = one_line(capsys, status, "these sizes cannot fit: about ", piece, "GiB of memory (cpu)")
    assert not (tmp_path / "run").exists() and "writing the run" not in capsys.readouterr().out, err


def test_an_out_folder_that_cannot_be_created_is_one_line(tmp_path, capsys):
    (tmp_path / "corpus.txt").write_text(CORPUS, encoding="utf-8")
    (tmp_path / "afile.txt").write_text("x")
    common = ["pretrain", "--corpus", str(tmp_path / "corpus.txt"), *TINY, "--steps", "2"]
    status = main([*common, "--out", str(tmp_path / "afile.txt" / "sub")])
    one_line(capsys, status, f"--out {tmp_path / 'afile.txt' / 'sub'}: {tmp_path / 'afile.txt'} is a file, not a "
             "folder")
    status = main([*common, "--out", "/proc/foo"])
    one_line(capsys, status, "--out /proc/foo: cannot create the folder (")
    assert capsys.readouterr().out == ""  # refused before the run started: no "writing the run into"


def test_a_hugging_face_folder_without_its_prefix_gets_a_hint(task, tmp_path, capsys):
    folder = tmp_path / "gpt2"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 8}), encoding="utf-8")
    status = main(["generate", "--from", str(folder)])
    one_line(capsys, status, f"--from {folder} is a Hugging Face folder (config.json has model_type 'gpt2')",
             f"name it hf-gpt2:{folder}")
    status = main(["finetune", "--from", str(folder), "--task", str(task), "--out", str(tmp_path / "ft"), *FINETUNE])
    one_line(capsys, status, f"name it hf-gpt2:{folder}")


def test_one_column_for_text_and_label_and_duplicate_headers_are_errors(pretrained, task, tmp_path, capsys):
    status = main(["finetune", "--from", str(pretrained), "--task", str(task), "--out", str(tmp_path / "ft"),
                   "--text-column", "label", *FINETUNE])
    one_line(capsys, status, "--text-column and --label-column are both 'label'")
    with pytest.raises(MiniptError, match="the text column and the label column are both 'text'"):
        read_labelled(task, text_column="text", label_column="text")
    twice = tmp_path / "twice.csv"
    twice.write_text("text,label,label\n" + "\n".join(f"{row},x" for row in ROWS) + "\n", encoding="utf-8")
    with pytest.raises(MiniptError, match=r"twice.csv: line 1: the header names the column 'label' twice"):
        read_labelled(twice)
    jsonl = tmp_path / "twice.jsonl"
    jsonl.write_text('{"text": "a rose", "label": "rose"}\n{"text": "a bird", "label": "bird", "label": "rose"}\n',
                     encoding="utf-8")
    with pytest.raises(MiniptError, match=r"twice.jsonl: line 2: the key 'label' appears twice"):
        read_labelled(jsonl)
    status = main(["finetune", "--from", str(pretrained), "--task", str(twice), "--out", str(tmp_path / "ft"),
                   *FINETUNE])
    one_line(capsys, status, "the header names the column 'label' twice")
    assert not (tmp_path / "ft").exists()


def test_mostly_unknown_characters_are_a_warning_with_the_share_and_an_example(pretrained, tmp_path, capsys):
    greek = tmp_path / "greek.csv"
    rows = [f"ροδον {i % 7} the rose,rose" for i in range(30)] + [f"πτηνον {i % 5} sing,bird" for i in range(20)]
    greek.write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    status = main(["finetune", "--from", str(pretrained), "--task", str(greek), "--out", str(tmp_path / "ft"),
                   *FINETUNE, "--epochs", "1"])
    err = capsys.readouterr().err.strip()
    assert status == 0 and len(err.splitlines()) == 1, err
    # 'ροδον 3 the rose': 6 of 16 characters unknown (the corpus has no Greek and no digits); 'πτηνον 2 sing': 7 of 13
    greek_share = (30 * 6 + 20 * 7) / (30 * 16 + 20 * 13)
    assert err.startswith(f"minipt: warning: {greek}: ") and "% of the training tokens are <unk>" in err, err
    share = int(err.removeprefix(f"minipt: warning: {greek}: ").split("%")[0])
    assert abs(share - 100 * greek_share) < 3, (err, greek_share)  # 43%, give or take the 80% training split
    assert "e.g. 'ρ'" in err or "e.g. 'π'" in err, err


def test_too_few_training_examples_for_the_classes_is_an_error(pretrained, task, tmp_path, capsys):
    out = str(tmp_path / "ft")
    status = main(["finetune", "--from", str(pretrained), "--task", str(task), "--out", out, "--train-examples", "1",
                   *FINETUNE])
    one_line(capsys, status, "--train-examples 1 is fewer than the 2 classes of task; take at least 2")
    three = tmp_path / "three.csv"
    three.write_text("text,label\n" + "\n".join(ROWS) + "\n" + "\n".join(f"the sky {i} is blue,sky" for i in range(5))
                     + "\n", encoding="utf-8")
    status = main(["finetune", "--from", str(pretrained), "--task", str(three), "--out", out, "--train-examples", "3",
                   *FINETUNE])
    one_line(capsys, status, "--train-examples 3 leaves class 'sky' of three without a training example")
    assert not (tmp_path / "ft").exists()


def test_inf_is_refused_like_nan_and_the_seed_range_is_named(pretrained, task, tmp_path, capsys):
    (tmp_path / "corpus.txt").write_text(CORPUS, encoding="utf-8")
    pretrain = ["pretrain", "--corpus", str(tmp_path / "corpus.txt"), "--out", str(tmp_path / "run"), *TINY]
    one_line(capsys, main([*pretrain, "--lr", "inf"]), "--lr must be > 0 and finite, got inf")
    one_line(capsys, main([*pretrain, "--lr", "nan"]), "--lr must be > 0 and finite, got nan")
    one_line(capsys, main([*pretrain, "--weight-decay=-inf"]), "--weight-decay must be >= 0 and finite, got -inf")
    finetune = ["finetune", "--from", str(pretrained), "--task", str(task), "--out", str(tmp_path / "ft"), *FINETUNE]
    one_line(capsys, main([*finetune, "--l2sp", "inf"]), "--l2sp must be >= 0 and finite, got inf")
    one_line(capsys, main([*finetune, "--dropout", "inf"]), "--dropout must be in [0, 1), got inf")
    one_line(capsys, main(["generate", "--from", str(pretrained), "--temperature", "inf"]),
             "--temperature must be a number > 0, got inf")
    one_line(capsys, main([*pretrain, "--seed", str(2**70)]), f"--seed must be an integer from 0 to 2**63 - 1, got "
             f"{2**70}")
    one_line(capsys, main([*finetune, "--seed", "-1"]), "--seed must be an integer from 0 to 2**63 - 1, got -1")
    one_line(capsys, main(["generate", "--from", str(pretrained), "--seed", str(2**70)]), "--seed must be an integer")
    assert capsys.readouterr().out == ""  # every command was refused: none said "writing the run into"
    assert not (tmp_path / "run").exists() and not (tmp_path / "ft").exists()
    assert main(["generate", "--from", str(pretrained), "--seed", str(2**63 - 1), "--tokens", "2"]) == 0


def test_writing_the_run_into_is_printed_once_the_run_starts(pretrained, task, tmp_path, capsys):
    out = tmp_path / "ft"
    status = main(["finetune", "--from", str(pretrained), "--task", str(tmp_path / "nowhere.csv"), "--out", str(out),
                   *FINETUNE])
    one_line(capsys, status, "nowhere.csv")
    assert capsys.readouterr().out == ""
    assert main(["finetune", "--from", str(pretrained), "--task", str(task), "--out", str(out), *FINETUNE]) == 0
    assert capsys.readouterr().out.startswith(f"minipt finetune: writing the run into {out}\n")


# ----------------------------------------------------------------------------------------------------------
# Paths: a run finds its files from any working directory (issue 24)
# ----------------------------------------------------------------------------------------------------------


def test_runs_record_absolute_paths_and_work_from_any_directory(tmp_path, capsys, monkeypatch):
    course, elsewhere = tmp_path / "course", tmp_path / "elsewhere"
    (course / "data").mkdir(parents=True)
    elsewhere.mkdir()
    (course / "data" / "corpus.txt").write_text(CORPUS, encoding="utf-8")
    (course / "data" / "task.csv").write_text("text,label\n" + "\n".join(ROWS) + "\n", encoding="utf-8")
    monkeypatch.chdir(course)
    assert main(["pretrain", "--corpus", "data/corpus.txt", "--out", "runs/lm", *TINY, "--steps", "3"]) == 0
    assert main(["finetune", "--from", "runs/lm", "--task", "data/task.csv", "--out", "runs/ft", *FINETUNE]) == 0
    lm, ft = course / "runs" / "lm", course / "runs" / "ft"
    assert json.loads((lm / "config.json").read_text())["pretrain"]["corpus"] == str(course / "data" / "corpus.txt")
    saved = json.loads((ft / "config.json").read_text())["finetune"]
    assert (saved["task"], saved["from_run"]) == (str(course / "data" / "task.csv"), str(lm))

    monkeypatch.chdir(elsewhere)
    assert main(["pretrain", "--resume", str(lm), "--steps", "6", "--quiet"]) == 0
    assert main(["evaluate", "--from", str(ft)]) == 0
    (ft / "summary.json").unlink()  # as if the run had been interrupted after its last step: resumable
    assert main(["finetune", "--resume", str(ft), "--quiet"]) == 0  # finds its --from run and its labelled file
    capsys.readouterr()

    (course / "data" / "corpus.txt").rename(course / "corpus.txt")
    (course / "data" / "task.csv").rename(course / "task.csv")
    status = main(["pretrain", "--resume", str(lm), "--steps", "9", "--quiet"])
    one_line(capsys, status, f"--resume {lm}: its corpus is not at {course / 'data' / 'corpus.txt'} (moved or "
             "deleted?)")
    status = main(["evaluate", "--from", str(ft)])
    one_line(capsys, status, f"--from {ft}: its labelled file is not at {course / 'data' / 'task.csv'}",
             "pass --task FILE")
    (ft / "summary.json").unlink()
    status = main(["finetune", "--resume", str(ft), "--quiet"])
    one_line(capsys, status, f"--resume {ft}: its labelled file is not at {course / 'data' / 'task.csv'}")


# ----------------------------------------------------------------------------------------------------------
# generate prints as it goes (issue 24)
# ----------------------------------------------------------------------------------------------------------


def test_generate_streams_the_same_text_as_one_decode(pretrained, capsys, monkeypatch):
    import minipt.cli

    puts = []
    real_put = minipt.cli.TextStream.put
    monkeypatch.setattr(minipt.cli.TextStream, "put", lambda self, ids: (puts.append(capsys.readouterr().out),
                                                                         real_put(self, ids)))
    assert main(["generate", "--from", str(pretrained), "--prompt", "the rose", "--tokens", "40", "--seed", "3"]) == 0
    streamed = "".join(puts) + capsys.readouterr().out
    assert len(puts) == 40 and puts[0] == "the rose" and all(len(piece) == 1 for piece in puts[1:])  # one by one

    from minipt.jobs.sources import load_pretrained

    model, tokenizer, _ = load_pretrained(str(pretrained))
    idx = torch.tensor([tokenizer.encode("the rose")])
    whole = model.generate(idx, 40, temperature=0.8, generator=torch.Generator().manual_seed(3),
                           suppress_tokens=tokenizer.special_ids)
    assert streamed == tokenizer.decode(whole[0].tolist()) + "\n"


def test_the_stream_waits_for_a_character_cut_between_byte_tokens(capsys):
    from minipt.cli import TextStream
    from minipt.data.tokenizers import BPETokenizer

    tokenizer = BPETokenizer.train("plain ascii text only", vocab_size=261)  # bytes only: 'é' is two tokens
    ids = tokenizer.encode("né, 日本")
    assert len(ids) == len("né, 日本".encode())
    stream = TextStream(tokenizer)
    printed = []
    for token in ids:
        stream.put(torch.tensor([[token]]))
        printed.append(capsys.readouterr().out)
    stream.close()
    assert printed[:3] == ["n", "", "é"] and printed[-3:] == ["", "", "本"]  # never half a character
    assert "".join(printed) + capsys.readouterr().out == "né, 日本\n"
