"""crispedit_lite.editing.config: ``EditConfig`` validation and the paper and CPU presets."""

from __future__ import annotations

import json

import pytest

from crispedit_lite.editing import EditConfig, cpu_config, paper_config


def test_configs_validate_and_presets():
    with pytest.raises(ValueError, match="unknown method 'rome'; known methods: crispedit, "):
        EditConfig(method="rome")
    with pytest.raises(ValueError, match="gamma must lie in"):
        EditConfig(gamma=0.0)
    with pytest.raises(ValueError, match="epochs must be positive"):
        EditConfig(epochs=0)
    with pytest.raises(ValueError, match="lr must be positive"):
        EditConfig(lr=-1.0)
    p = paper_config("crispedit", "counterfact")
    assert (p.epochs, p.batch_size, p.lr, p.early_stop, p.gamma, p.n_capability) == (
        25, 32, 5e-4, 0.01, 0.9, 10_000)
    assert paper_config("crispedit_seq", "wikibigedit").gamma == 0.995
    c = cpu_config("ft", layers=[18])
    assert c.capability_source == "offline" and c.layers == (18,)
    assert json.loads(json.dumps(c.with_(gamma=0.5).to_dict()))["gamma"] == 0.5
