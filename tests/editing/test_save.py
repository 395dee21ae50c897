"""crispedit_lite.editing.save: ``save_edited`` writes a new folder atomically and never over its base."""

from __future__ import annotations

import json

import pytest

from crispedit_lite.editing import save_edited


def test_save_edited_writes_a_new_dir_atomically(model, tok, tmp_path):
    base_dir = tmp_path / "base"
    model.save_pretrained(base_dir)
    out = save_edited(model, tok, tmp_path / "edited", info={"method": "ft"}, base_dir=base_dir)
    assert json.loads((out / "edit_info.json").read_text()) == {"method": "ft"}
    assert (out / "config.json").exists() and (out / "tokenizer.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    with pytest.raises(ValueError, match="already exists"):
        save_edited(model, tok, out)
    with pytest.raises(ValueError, match="over its base model"):
        save_edited(model, tok, base_dir, base_dir=base_dir)
    model.config._name_or_path = str(base_dir)
    with pytest.raises(ValueError, match="over its base model"):
        save_edited(model, tok, base_dir)


def test_save_edited_leaves_nothing_when_writing_fails(model, tok, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(model, "save_pretrained", boom)
    with pytest.raises(OSError, match="disk full"):
        save_edited(model, tok, tmp_path / "edited")
    assert list(tmp_path.iterdir()) == []
