"""minipt.runs.folder: the new-folder check, config.json read back with clear errors, and the one atomic writer.
(The writer's crash safety is tested through checkpoints in test_checkpoint.py.)"""

from __future__ import annotations

import pytest

from minipt.errors import MiniptError
from minipt.runs.folder import check_new_run_dir, read_config, write_atomic, write_config


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
