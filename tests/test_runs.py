"""minipt.runs.folder: the new-folder check, config.json read back with clear errors, and the one atomic writer.
(The writer's crash safety is tested through checkpoints in test_checkpoint.py.)"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import pytest

from minipt.errors import MiniptError
from minipt.runs.folder import check_new_run_dir, make_run_dir, read_config, write_atomic, write_config
from minipt.runs.settings import POSITIVE, SEED, absolute_path, check_settings, setting, settings_from_saved


def test_a_new_run_needs_an_absent_or_empty_folder(tmp_path):
    check_new_run_dir(tmp_path / "new")  # absent: fine
    (tmp_path / "empty").mkdir()
    check_new_run_dir(tmp_path / "empty")  # empty: fine
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("keep me")
    with pytest.raises(MiniptError, match=r"--out .*used already exists and is not empty; choose a new folder, or"):
        check_new_run_dir(tmp_path / "used", hint=", or else")
    assert (tmp_path / "used" / "notes.txt").read_text() == "keep me"


def test_config_round_trip_and_clear_errors(tmp_path):
    write_config(tmp_path, {"pretrain": {"steps": 3}, "model": {"architecture": "gru"}})
    assert read_config(tmp_path) == {"pretrain": {"steps": 3}, "model": {"architecture": "gru"}}
    with pytest.raises(MiniptError, match="run folder .*nowhere does not exist"):
        read_config(tmp_path / "nowhere")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(MiniptError, match=r"broken/config.json: cannot read it"):
        read_config(tmp_path / "broken")


def test_write_atomic_takes_text_bytes_or_a_writer(tmp_path):
    write_atomic(tmp_path / "a.txt", "héllo\n")
    write_atomic(tmp_path / "b.bin", b"\x00\x01")
    write_atomic(tmp_path / "c.bin", lambda file: file.write(b"xyz"))
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01" and (tmp_path / "c.bin").read_bytes() == b"xyz"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.bin"]  # no temporaries left


def test_a_shared_file_leaves_other_writers_temporaries_alone(tmp_path):
    other = tmp_path / ".cache.json.tmp-another-process"  # another process, mid-write
    other.write_text("[")
    write_atomic(tmp_path / "cache.json", "[]", one_writer=False)
    assert other.exists() and (tmp_path / "cache.json").read_text() == "[]"
    write_atomic(tmp_path / "cache.json", "[1]")  # a run's own file: leftovers of an interrupted write go
    assert not other.exists()


@dataclass
class Settings:
    lr: float = setting(0.1, "learning rate", rule=POSITIVE)
    seed: int = setting(0, "seed", rule=SEED)
    name: str = setting("x", "a name")


def test_a_saved_section_is_read_back_key_by_key(tmp_path):
    path = tmp_path / "config.json"
    assert settings_from_saved(Settings, {"run": {"lr": 1, "seed": 3}}, "run", path) == Settings(lr=1.0, seed=3)
    with pytest.raises(MiniptError, match=r"config.json: no 'run' section"):
        settings_from_saved(Settings, {"other": {}}, "run", path)
    with pytest.raises(MiniptError, match=r"config.json: section 'run': unknown key 'lr_max' \(known keys: lr, seed"):
        settings_from_saved(Settings, {"run": {"lr_max": 1.0}}, "run", path)
    with pytest.raises(MiniptError, match=r"config.json: section 'run': key 'seed' must be a int, got '3'"):
        settings_from_saved(Settings, {"run": {"seed": "3"}}, "run", path)


@pytest.mark.parametrize("settings, message", [
    (Settings(lr=math.inf), "--lr must be > 0 and finite, got inf"),
    (Settings(lr=math.nan), "--lr must be > 0 and finite, got nan"),
    (Settings(seed=2**63), "--seed must be an integer from 0 to 2\\*\\*63 - 1, got 9223372036854775808"),
    (Settings(seed=-1), "--seed must be an integer from 0 to"),
])
def test_inf_and_seeds_out_of_range_are_refused(settings, message):
    with pytest.raises(MiniptError, match=message):
        check_settings(settings)
    check_settings(Settings(lr=1e300, seed=2**63 - 1))  # large, finite, in range: fine


def test_paths_are_recorded_absolute_and_built_in_names_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_path("data/my.txt") == os.path.join(str(tmp_path), "data", "my.txt")
    assert absolute_path("shakespeare", ("shakespeare",)) == "shakespeare" and absolute_path("") == ""


def test_a_run_folder_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "afile.txt").write_text("x")
    with pytest.raises(MiniptError, match=r"--out .*afile.txt/sub/deeper: .*afile.txt is a file, not a folder"):
        make_run_dir(tmp_path / "afile.txt" / "sub" / "deeper")
    with pytest.raises(MiniptError, match=r"--out /proc/foo: cannot create the folder \("):
        make_run_dir("/proc/foo")
    make_run_dir(tmp_path / "new" / "run")
    assert (tmp_path / "new" / "run").is_dir()
