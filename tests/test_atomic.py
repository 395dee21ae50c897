"""Atomic writes: the target is whole or untouched, NaN is refused, the umask is respected."""

from __future__ import annotations

import json
import math
import os
import stat

import pytest

from crispedit_lite import atomic
from crispedit_lite.atomic import (
    atomic_open,
    atomic_path,
    current_umask,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)


def _listing(d):
    return sorted(p.name for p in d.iterdir())


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_writes_bytes_text_and_json(tmp_path):
    assert write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert write_text_atomic(tmp_path / "t.csv", "a,b\r\n1,2\r\n").read_bytes() == b"a,b\r\n1,2\r\n"
    p = write_json_atomic(tmp_path / "sub" / "r.json", {"b": [1, 2.5], "a": "é"}, sort_keys=True)
    assert p.read_text(encoding="utf-8") == '{\n "a": "\\u00e9",\n "b": [\n  1,\n  2.5\n ]\n}\n'
    assert json.loads(p.read_text()) == {"a": "é", "b": [1, 2.5]}
    assert _listing(tmp_path) == ["b.bin", "sub", "t.csv"] and _listing(tmp_path / "sub") == ["r.json"]


def test_a_failure_mid_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = write_text_atomic(tmp_path / "r.txt", "old, complete\n")
    with pytest.raises(RuntimeError, match="crash"), atomic_open(target) as fh:
        fh.write("new, half")
        fh.flush()
        assert target.read_text() == "old, complete\n"  # nothing visible under the name yet
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old, complete\n"
    assert _listing(tmp_path) == ["r.txt"]


def test_a_failure_mid_write_of_a_new_file_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "new.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash")
    assert _listing(tmp_path) == []


def test_a_failing_rename_removes_the_temporary(tmp_path, monkeypatch):
    target = write_text_atomic(tmp_path / "r.txt", "old\n")

    def broken_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk gone"):
        write_text_atomic(target, "new\n")
    assert target.read_text() == "old\n" and _listing(tmp_path) == ["r.txt"]


def test_an_unserialisable_record_writes_nothing(tmp_path):
    target = write_json_atomic(tmp_path / "r.json", {"ok": 1})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"ok": 2, "bad": object()})
    assert json.loads(target.read_text()) == {"ok": 1} and _listing(tmp_path) == ["r.json"]


@pytest.mark.parametrize("record, where", [
    ({"rows": [{"kl": 0.1}, {"kl": 0.2}, {"kl": 0.3}, {"kl": math.nan}]}, r"rows\[3\]\.kl is nan"),
    ({"a": 1.0, "b": {"c": [1.0, -math.inf]}}, r"b\.c\[1\] is -inf"),
    ([math.inf], r"\[0\] is inf"),
    (math.nan, "the value is nan"),
])
def test_nan_and_infinity_are_refused_naming_the_key(tmp_path, record, where):
    target = write_json_atomic(tmp_path / "r.json", {"ok": 1})
    with pytest.raises(ValueError, match=rf"r\.json: {where}; strict JSON has no NaN") as err:
        write_json_atomic(target, record)
    assert "\n" not in str(err.value)
    assert json.loads(target.read_text()) == {"ok": 1} and _listing(tmp_path) == ["r.json"]


def test_nan_behind_a_default_converter_is_found(tmp_path):
    class Box:
        value = math.nan

    with pytest.raises(ValueError, match=r"x\.value is nan"):
        write_json_atomic(tmp_path / "r.json", {"x": Box()}, default=lambda o: {"value": o.value})
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700),
                                                        (0o002, 0o664, 0o775)])
def test_files_and_directories_get_the_modes_of_a_plain_open(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        f = write_text_atomic(tmp_path / "f.txt", "x")
        with atomic_path(tmp_path / "model", directory=True) as d:
            (d / "weights.bin").write_bytes(b"w")
    finally:
        os.umask(old)
    assert _mode(f) == file_mode
    assert _mode(tmp_path / "model") == dir_mode
    assert _mode(tmp_path / "model" / "weights.bin") == file_mode


def test_no_overwrite_refuses_an_existing_file(tmp_path):
    target = write_text_atomic(tmp_path / "r.txt", "first\n")
    with pytest.raises(FileExistsError, match="r.txt exists"):
        write_text_atomic(target, "second\n", overwrite=False)
    assert target.read_text() == "first\n" and _listing(tmp_path) == ["r.txt"]
    assert write_text_atomic(tmp_path / "s.txt", "new\n", overwrite=False).read_text() == "new\n"


def test_a_directory_is_published_whole_or_not_at_all(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "model", directory=True) as d:
        (d / "config.json").write_text("{}")
        raise RuntimeError("save_pretrained failed")
    assert _listing(tmp_path) == []
    with atomic_path(tmp_path / "model", directory=True) as d:
        (d / "config.json").write_text("{}")
    assert _listing(tmp_path) == ["model"] and _listing(tmp_path / "model") == ["config.json"]
    with pytest.raises(OSError), atomic_path(tmp_path / "model", directory=True) as d:
        (d / "other.json").write_text("{}")  # a non-empty directory is never replaced
    assert _listing(tmp_path) == ["model"] and _listing(tmp_path / "model") == ["config.json"]


def test_atomic_open_refuses_read_modes(tmp_path):
    with pytest.raises(ValueError, match="mode must be"), atomic_open(tmp_path / "x", "r"):
        pass


def test_no_overwrite_without_hard_links_still_refuses_and_writes(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise PermissionError("hard links not supported")

    monkeypatch.setattr(atomic.os, "link", no_links)
    target = write_text_atomic(tmp_path / "r.txt", "first\n", overwrite=False)
    with pytest.raises(FileExistsError, match="r.txt exists"):
        write_text_atomic(target, "second\n", overwrite=False)
    assert target.read_text() == "first\n" and _listing(tmp_path) == ["r.txt"]
