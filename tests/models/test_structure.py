"""crispedit_lite.models.structure: a model's config and module names without its weights."""

from __future__ import annotations

import pytest
import torch

from crispedit_lite.models import random_init_model, resolve_edit_modules
from crispedit_lite.models.structure import context_length, model_config, model_folder, skeleton


def test_the_skeleton_has_the_modules_of_the_loaded_model_and_no_memory(tmp_path):
    random_init_model("tiny-llama").save_pretrained(tmp_path / "m")
    for name in ("random:tiny-llama", str(tmp_path / "m")):
        net = skeleton(model_config(name))
        assert all(p.device.type == "meta" for p in net.parameters())
        loaded = random_init_model("tiny-llama")
        assert [n for n, _ in net.named_modules()] == [n for n, _ in loaded.named_modules()]
        assert resolve_edit_modules(net, layers=[1, 3]) == resolve_edit_modules(loaded, layers=[1, 3])
    assert context_length(model_config("random:tiny-llama")) == 256
    assert context_length(model_config("random:llama3-8b-shape")) == 8192


def test_a_model_without_a_config_at_hand_is_none_and_a_broken_one_an_error(tmp_path):
    assert model_config("random:tiny-llama") is not None and model_folder("random:tiny-llama") is None
    assert model_config("nobody/no-such-model-anywhere") is None
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"model .*broken'?: its config.json cannot be read"):
        model_config(str(tmp_path / "broken"))


def test_building_the_skeleton_of_an_8b_model_allocates_nothing():
    net = skeleton(model_config("random:llama3-8b-shape"))
    assert sum(p.numel() for p in net.parameters()) > 8e9
    assert {p.device for p in net.parameters()} == {torch.device("meta")}
