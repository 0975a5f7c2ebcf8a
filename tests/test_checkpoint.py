"""minipt.training.checkpoint: atomic saves (also when the writer is killed), weights-only loads that refuse damaged or
tampered files, and random-number state that makes a resumed run draw the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from minipt.errors import MiniptError
from minipt.optim import AdamW
from minipt.runs.folder import write_json
from minipt.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def assert_same(expected, actual) -> None:
    """Recursively: tensors bit-identical (same dtype and values), everything else ``==``."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor) and actual.dtype == expected.dtype
        assert torch.equal(actual, expected)
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and list(actual) == list(expected)
        for key in expected:
            assert_same(expected[key], actual[key])
    elif isinstance(expected, (list, tuple)):
        assert type(actual) is type(expected) and len(actual) == len(expected)
        for expected_item, actual_item in zip(expected, actual, strict=True):
            assert_same(expected_item, actual_item)
    else:
        assert actual == expected


def temporaries(folder: pathlib.Path, name: str = "last.pt") -> list[pathlib.Path]:
    return sorted(folder.glob(f".{name}.tmp-*"))


# ----------------------------------------------------------------------------------------------------------
# Round trips and resuming
# ----------------------------------------------------------------------------------------------------------


class Tiny(nn.Module):
    """A linear layer behind dropout: its training steps depend on torch's random numbers."""

    def __init__(self) -> None:
        super().__init__()
        self.dropout = nn.Dropout(0.5)
        self.linear = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(x))


def train_steps(model: Tiny, optimizer: AdamW, steps: int) -> None:
    for _ in range(steps):
        x = torch.randn(4, 6)  # drawn from torch's global generator, like the dropout masks
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_model_optimizer_and_rng_round_trip_with_weights_only(tmp_path):
    torch.manual_seed(0)
    model = Tiny()
    optimizer = AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    train_steps(model, optimizer, 3)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng_state(),
        "step": 3,
        "config": {"lr": 0.01, "name": "tiny", "betas": [0.9, 0.999]},
    }
    save_checkpoint(tmp_path / "last.pt", state)
    loaded = load_checkpoint(tmp_path / "last.pt")  # weights_only=True inside
    assert_same(state, loaded)
    # AdamW keeps its step count as a float32 tensor per parameter: 3 steps taken
    assert [s["step"].item() for s in loaded["optimizer"]["state"].values()] == [3.0, 3.0]
    assert not temporaries(tmp_path)


def test_resuming_from_a_checkpoint_continues_bit_for_bit(tmp_path):
    """3 steps, checkpoint, 4 more steps  ==  fresh objects loaded from the checkpoint, 4 more steps."""
    torch.manual_seed(0)
    model = Tiny()
    optimizer = AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    train_steps(model, optimizer, 3)
    save_checkpoint(
        tmp_path / "last.pt",
        {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng_state()},
    )
    train_steps(model, optimizer, 4)  # the uninterrupted run

    torch.manual_seed(123)  # a different process would start from other random numbers and other weights
    resumed_model = Tiny()
    resumed_optimizer = AdamW(resumed_model.parameters(), lr=0.01, weight_decay=0.1)
    checkpoint = load_checkpoint(tmp_path / "last.pt")
    resumed_model.load_state_dict(checkpoint["model"])
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    set_rng_state(checkpoint["rng"])
    train_steps(resumed_model, resumed_optimizer, 4)

    assert_same(model.state_dict(), resumed_model.state_dict())


def draw_from_every_generator() -> list:
    return [
        random.random(),
        random.gauss(0.0, 1.0),
        np.random.rand(3).tolist(),
        float(np.random.standard_normal()),
        torch.rand(3).tolist(),
        torch.randint(0, 1000, (2,)).tolist(),
    ]


@pytest.mark.parametrize("through_a_file", [False, True])
def test_set_rng_state_repeats_the_draws_made_after_capture(tmp_path, through_a_file):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    # One odd Gaussian each: Python and NumPy now hold a cached spare Gaussian, part of the state to restore.
    random.gauss(0.0, 1.0)
    np.random.standard_normal()
    state = rng_state()
    assert state["python"]["gauss_next"] is not None and state["numpy"]["has_gauss"] == 1
    if through_a_file:
        save_checkpoint(tmp_path / "rng.pt", {"rng": state})
        state = load_checkpoint(tmp_path / "rng.pt")["rng"]
    after_capture = draw_from_every_generator()
    draw_from_every_generator()  # move every generator further on
    set_rng_state(state)
    assert draw_from_every_generator() == after_capture


def test_set_rng_state_names_a_missing_entry():
    state = rng_state()
    del state["numpy"]
    with pytest.raises(MiniptError, match="rng state: missing the 'numpy' entry"):
        set_rng_state(state)


# ----------------------------------------------------------------------------------------------------------
# Atomic writes
# ----------------------------------------------------------------------------------------------------------


class FailsToPickle:
    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


def test_a_failed_save_keeps_the_old_checkpoint_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"version": 1, "weights": torch.ones(3)})
    with pytest.raises(RuntimeError, match="cannot pickle this"):
        save_checkpoint(path, {"version": 2, "weights": torch.zeros(3), "bad": FailsToPickle()})
    assert_same({"version": 1, "weights": torch.ones(3)}, load_checkpoint(path))
    assert not temporaries(tmp_path)


def test_a_save_removes_temporaries_left_by_an_interrupted_save(tmp_path):
    leftover = tmp_path / ".last.pt.tmp-abc123"
    leftover.write_bytes(b"half a checkpoint")
    other_file = tmp_path / ".best.pt.tmp-xyz"  # a different checkpoint's temporary: not ours to remove
    other_file.write_bytes(b"x")
    save_checkpoint(tmp_path / "last.pt", {"step": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".best.pt.tmp-xyz", "last.pt"]


def test_save_checkpoint_refuses_a_missing_folder_and_a_non_dict(tmp_path):
    with pytest.raises(MiniptError, match=r"the folder .*nowhere does not exist"):
        save_checkpoint(tmp_path / "nowhere" / "last.pt", {"step": 1})
    with pytest.raises(MiniptError, match="a checkpoint must be a dict, got list"):
        save_checkpoint(tmp_path / "last.pt", [1, 2])


def test_write_json_writes_json_and_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "config.json"
    write_json(path, {"lr": 0.001, "layers": [2, 4], "name": "tiny"})
    assert json.loads(path.read_text()) == {"lr": 0.001, "layers": [2, 4], "name": "tiny"}
    assert path.read_text().endswith("}\n")
    with pytest.raises(TypeError):
        write_json(path, {"tensor": torch.ones(2)})  # not JSON-serialisable
    assert json.loads(path.read_text()) == {"lr": 0.001, "layers": [2, 4], "name": "tiny"}
    assert not temporaries(tmp_path, "config.json")


# The writer for the kill test. A "zygote" process imports torch once (seconds) and then, for every round,
# forks a writer (milliseconds) that saves version after version until the test kills it with SIGKILL.
WRITER_SCRIPT = r"""
import os, sys
import torch
torch.set_num_threads(1)
from minipt.training.checkpoint import save_checkpoint

path = sys.argv[1]
print("ready", flush=True)
for line in sys.stdin:                   # one line per round: the first marker of that round
    marker = int(line)
    pid = os.fork()
    if pid == 0:                         # the writer: versions marker, marker + 1, ... until killed
        weights = torch.zeros(1_000_000) # 4 MB, so that a save takes a while
        while True:
            weights[0] = weights[-1] = marker
            save_checkpoint(path, {"marker": marker, "weights": weights})
            marker += 1
    print(pid, flush=True)
    os.waitpid(pid, 0)                   # collect the killed writer
    print("collected", flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill test forks writers (POSIX only)")
def test_a_writer_killed_mid_save_never_leaves_a_truncated_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    zygote = subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT, str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
    )  # fmt: skip

    def read_line() -> str:
        line = zygote.stdout.readline()
        assert line, f"the writer process died: {zygote.stderr.read()}"
        return line.strip()

    assert read_line() == "ready"
    delays = random.Random(0)
    last_marker = None  # None until some round finds a completed save
    rounds = kills_during_a_save = 0
    # At least 5 kills; more (up to 20) until one kill has landed while a save was under way.
    while rounds < 5 or (kills_during_a_save == 0 and rounds < 20):
        zygote.stdin.write(f"{rounds * 1_000_000}\n")
        zygote.stdin.flush()
        writer_pid = int(read_line())
        time.sleep(delays.uniform(0.05, 0.3))  # the writer is saving, over and over
        os.kill(writer_pid, signal.SIGKILL)
        assert read_line() == "collected"

        # At most one temporary: the one the killed writer was filling (older ones were removed by its saves).
        left_behind = temporaries(tmp_path)
        assert len(left_behind) <= 1, left_behind
        kills_during_a_save += len(left_behind)
        if not path.exists():
            assert last_marker is None, "the checkpoint vanished after a completed save"
        else:
            state = load_checkpoint(path)  # never truncated: loads cleanly
            marker = state["marker"]
            assert state["weights"].shape == (1_000_000,)
            assert state["weights"][0].item() == marker and state["weights"][-1].item() == marker
            assert last_marker is None or marker >= last_marker  # never an older version
            last_marker = marker
        rounds += 1

    zygote.stdin.close()
    assert zygote.wait(timeout=30) == 0
    assert last_marker is not None, "no save ever completed: the test checked nothing"
    assert kills_during_a_save >= 1, "no kill landed during a save: the test checked nothing"
    print(f"{rounds} kills, {kills_during_a_save} during a save, last marker {last_marker}")
    save_checkpoint(path, {"marker": -1})  # the next save cleans up the killed writer's temporary
    assert temporaries(tmp_path) == []
    assert load_checkpoint(path) == {"marker": -1}


# ----------------------------------------------------------------------------------------------------------
# Refused loads
# ----------------------------------------------------------------------------------------------------------


def assert_one_line_error(path: pathlib.Path, pattern: str) -> None:
    with pytest.raises(MiniptError, match=pattern) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path))


def test_load_refuses_a_missing_file_and_a_folder(tmp_path):
    assert_one_line_error(tmp_path / "missing.pt", "no such checkpoint file")
    assert_one_line_error(tmp_path, "is a folder, not a checkpoint file")


@pytest.mark.parametrize("keep_fraction", [0.0, 0.5, 0.99])
def test_load_refuses_a_truncated_file(tmp_path, keep_fraction):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"weights": torch.arange(10_000.0)})
    content = path.read_bytes()
    path.write_bytes(content[: int(len(content) * keep_fraction)])
    assert_one_line_error(path, r"not a readable checkpoint \(truncated or corrupt\)")


def test_load_refuses_garbage(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"this is not a checkpoint " * 20)
    assert_one_line_error(path, r"last.pt: not a checkpoint \(500 bytes, unreadable\)")  # not torch.save's format


class CreatesMarkerWhenUnpickled:
    """A tampered checkpoint: unpickling calls ``pathlib.Path.touch(marker)``, i.e. runs code of the file's
    choosing (``os.system`` would do just as well)."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_load_refuses_a_tampered_file_without_running_its_code(tmp_path, writer):
    marker = tmp_path / "code_was_run"
    path = tmp_path / "last.pt"
    state = {"weights": torch.ones(2), "payload": CreatesMarkerWhenUnpickled(marker)}
    if writer == "torch.save":
        torch.save(state, path)
    else:
        with open(path, "wb") as file:
            pickle.dump(state, file)
    assert_one_line_error(path, "refused, the file holds objects that weights-only loading does not allow")
    assert not marker.exists()
    # the same file, unpickled without protection, does run the code: the test's payload is real
    if writer == "torch.save":
        torch.load(path, weights_only=False)
    else:
        pickle.loads(path.read_bytes())
    assert marker.exists()


def test_load_refuses_a_file_that_does_not_hold_a_dict(tmp_path):
    path = tmp_path / "last.pt"
    torch.save([torch.ones(2)], path)
    assert_one_line_error(path, "a checkpoint must hold a dict, this one holds list")
