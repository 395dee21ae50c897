"""crispedit_lite.models.digest: a model's identity follows its weights, not its path."""

from __future__ import annotations

import json
import os

import torch

from crispedit_lite.models import load_model, random_init_model
from crispedit_lite.models.digest import folder_digest, model_identity, tag_model
from tests.helpers import tiny_tokenizer


def test_a_tag_holds_until_a_parameter_changes_in_place():
    net = random_init_model("tiny-llama", seed=3)
    assert model_identity(net) == "random:tiny-llama:seed3"
    net.to(torch.float64)  # a dtype (recorded in the cache key on its own) is not a change of content
    assert model_identity(net) == "random:tiny-llama:seed3"
    weight = net.model.layers[0].mlp.down_proj.weight
    original = weight.detach().clone()
    with torch.no_grad():
        weight[0, 0] += 1
    changed = model_identity(net)
    assert changed.startswith("parameters-sha256:") and changed == model_identity(net)
    with torch.no_grad():
        weight.copy_(original)  # the edit undone, as EditResult.restore does
    assert model_identity(net) == "random:tiny-llama:seed3"
    with torch.no_grad():
        weight[0, 0] += 1
    other = random_init_model("tiny-llama", seed=3, dtype=torch.float64)
    assert model_identity(tag_model(other, "x")) == "x"
    untagged = random_init_model("tiny-llama", seed=3).to(torch.float64)
    object.__delattr__(untagged, "_crispedit_identity")
    with torch.no_grad():
        untagged.model.layers[0].mlp.down_proj.weight[0, 0] += 1
    assert model_identity(untagged) == changed  # the same weights, the same digest


def test_a_folder_digest_follows_the_files_and_is_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv("CRISPEDIT_CACHE", str(tmp_path / "cache"))
    random_init_model("tiny-llama", seed=0).save_pretrained(tmp_path / "a")
    tiny_tokenizer().save_pretrained(tmp_path / "a")
    first = folder_digest(tmp_path / "a")
    memo = json.loads((tmp_path / "cache" / "digests.json").read_text())
    assert len(memo) == 2  # config.json and model.safetensors, by path, size and mtime
    os.rename(tmp_path / "a", tmp_path / "b")
    assert folder_digest(tmp_path / "b") == first
    net, _ = load_model(str(tmp_path / "b"))
    assert model_identity(net) == first
    random_init_model("tiny-llama", seed=1).save_pretrained(tmp_path / "b")
    assert folder_digest(tmp_path / "b") != first


def test_a_hub_blob_is_named_by_its_digest(tmp_path):
    blob = tmp_path / "blobs" / ("ab" * 32)
    blob.parent.mkdir()
    blob.write_bytes(b"weights")
    (tmp_path / "snap").mkdir()
    (tmp_path / "snap" / "model.safetensors").symlink_to(blob)
    from crispedit_lite.models.digest import _file_sha256

    assert _file_sha256(tmp_path / "snap" / "model.safetensors") == "ab" * 32
