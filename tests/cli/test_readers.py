"""crispedit_lite.cli.readers: a shared setting is refused only for a method that provably ignores it.

For every registered method, every shared setting that :data:`READ_BY` says the method does not read is
changed at once, and the edit must leave bit-identical weights; changing a setting the method does read
(CrispEdit's gamma) must change them, so the comparison can fail.
"""

from __future__ import annotations

import pytest
import torch

from crispedit_lite.cli.readers import READ_BY, readers, unread_settings
from crispedit_lite.data import EditRequest
from crispedit_lite.editing import EditConfig, edit
from crispedit_lite.editing.registry import registry
from crispedit_lite.models import random_init_model
from tests.helpers import CAP_TEXT, edit_config

REQUESTS = [EditRequest("the capital of france is", "rome", subject="france",
                        rephrase_prompt="the city of france is", locality_prompt="the capital of germany is",
                        locality_answer="berlin"),
            EditRequest("the river of germany is", "blue", subject="germany")]
CHANGED = {"gamma": 0.3, "epochs": 1, "batch_size": 1, "lr": 1e-3, "optimizer": "sgd", "n_capability": 7,
           "capability_source": "wikipedia", "capability_max_length": 16, "kfac_labels": "sampled",
           "chunk_size": 1, "eigh_dtype": "float32", "projection": "reference", "layers": (0,)}


def _config(method: str, editor: str | None = None, **changes) -> EditConfig:
    extra = {"ultra_modules": "pattern"} if method == "ultraedit" else {}
    if registry()[method].update == "learned":  # MEND: an untrained editor network for tiny-llama
        extra = {"mend_editor": editor}
    return edit_config(method, **{"epochs": 2, **extra, **changes})


def _mend_editor(path) -> str:
    from crispedit_lite.editing.editors.mend import MendSettings, mend_modules
    from crispedit_lite.editing.loops.mend import save_editor
    from crispedit_lite.editing.updates.mend import MendNetwork

    model = random_init_model("tiny-llama", dtype=torch.float64, seed=0)
    modules = mend_modules(model, MendSettings())
    shapes = {m: tuple(model.get_submodule(m).weight.shape) for m in modules}
    return str(save_editor(MendNetwork(shapes, norm=False, rank=4), path))


def _weights(method: str, config: EditConfig, tok, cache) -> dict[str, torch.Tensor]:
    """The weights after the edit; each run collects its own K-FAC factors (a cache hit reads fp32)."""
    model = random_init_model("tiny-llama", dtype=torch.float64, seed=0)
    torch.manual_seed(0)
    edit(model, tok, REQUESTS, config, capability_texts=[CAP_TEXT, "the dog runs"], cache_dir=str(cache),
         progress=False)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("method", list(registry()))
def test_settings_refused_for_a_method_do_not_change_its_edit(method, tok, tmp_path):
    editor = _mend_editor(tmp_path / "mend.safetensors") if registry()[method].update == "learned" else None
    base = _config(method, editor)
    unread = [f for f in READ_BY if not READ_BY[f](registry()[method], base)]
    assert set(unread) == {f for f, _, _ in unread_settings(base, {f: f"--{f}" for f in READ_BY})}
    if not unread:
        pytest.skip(f"{method} reads every shared setting with a flag")
    changed = _config(method, editor, **{f: CHANGED[f] for f in unread})
    a, b = _weights(method, base, tok, tmp_path / "a"), _weights(method, changed, tok, tmp_path / "b")
    assert all(torch.equal(a[n], b[n]) for n in a), f"{method} reads one of {unread}"


def test_a_read_setting_does_change_the_edit(tok, tmp_path):
    a = _weights("crispedit", _config("crispedit"), tok, tmp_path / "a")
    b = _weights("crispedit", _config("crispedit", gamma=0.3), tok, tmp_path / "b")
    assert any(not torch.equal(a[n], b[n]) for n in a)


def test_the_issue_cases_and_alphaedit_energy_rule():
    assert {f for f, _, _ in unread_settings(EditConfig("ft"), {"gamma": "--gamma"})} == {"gamma"}
    assert {f for f, _, _ in unread_settings(EditConfig("memit"), {"gamma": "--gamma"})} == {"gamma"}
    assert unread_settings(EditConfig("crispedit"), {"gamma": "--gamma"}) == []
    energy = EditConfig("alphaedit", cf_nullspace_rule="energy")
    assert unread_settings(energy, {"gamma": "--gamma"}) == []
    assert unread_settings(EditConfig("alphaedit"), {"gamma": "--gamma"})[0][0] == "gamma"
    assert readers("gamma") == ["crispedit", "crispedit_seq"]
