"""crispedit_lite.reproduction.cells: notebook parameters -> EditConfig, a run's metrics and editable shares.

The paths are in ``test_paths.py``, the comparison with the paper in ``test_comparison.py``.
"""

from __future__ import annotations

import pytest
import yaml

from crispedit_lite.reproduction import cells as reproduce
from crispedit_lite.reproduction.cells import PARAMETERS, config_from_parameters
from tests.helpers import CPU_PARAMETERS, ROOT, cell_run_record


def _yaml(cell):
    return yaml.safe_load((ROOT / "reproduce" / f"{cell}.yaml").read_text())


def test_parameters_are_the_yaml_keys():
    optional = {"CONFIG"}  # other EditConfig fields, only where a cell needs them
    assert set(PARAMETERS) - optional == set(_yaml("table1_zsre_crispedit")) - optional == set(CPU_PARAMETERS)


def test_paper_model_gets_the_paper_preset():
    cfg, preset = config_from_parameters(_yaml("table1_zsre_crispedit"))
    assert preset == "paper"
    assert (cfg.method, cfg.gamma, cfg.n_capability, cfg.layers) == \
        ("crispedit", 0.7, 10_000, (19, 20, 21, 22, 23))
    assert (cfg.capability_source, cfg.capability_max_length, cfg.eigh_dtype) == ("wikipedia", 512, "float32")
    assert (cfg.epochs, cfg.batch_size, cfg.seed) == (25, 32, 0)
    seq, _ = config_from_parameters(_yaml("table5_qwen_wikibigedit_crispedit_seq"))
    assert (seq.method, seq.n_capability, seq.gamma, seq.chunk_size, seq.layers) == \
        ("crispedit_seq", 30, 0.995, 100, (4, 5, 6))


def test_other_models_get_the_cpu_preset_with_overrides():
    cfg, preset = config_from_parameters(CPU_PARAMETERS)
    assert preset == "cpu"
    assert (cfg.capability_source, cfg.gamma, cfg.n_capability, cfg.layers, cfg.epochs) == \
        ("offline", 0.9, 32, (20, 21), 8)
    assert config_from_parameters(dict(CPU_PARAMETERS, LAYERS=None))[0].layers is None
    seq = config_from_parameters(dict(CPU_PARAMETERS, SEQUENTIAL=True, CHUNK_SIZE=4))[0]
    assert seq.method == "crispedit_seq"


@pytest.mark.parametrize(("changes", "match"), [
    (dict(METHOD="crispedit_seq", SEQUENTIAL=False), "contradict"),
    (dict(METHOD="locbf_ft", SEQUENTIAL=True), "'locbf_ft' has no sequential form"),
    (dict(MODEL="Qwen/Qwen2.5-1.5B-Instruct", DATASET="smollm2"), "DATASET must be one of"),
    (dict(METHOD="memit2"), "unknown method 'memit2'"),
])
def test_bad_parameters_are_clear_errors(changes, match):
    with pytest.raises(ValueError, match=match):
        config_from_parameters(dict(CPU_PARAMETERS, **changes))
    params = dict(CPU_PARAMETERS)
    del params["GAMMA"]
    with pytest.raises(ValueError, match=r"lack \['GAMMA'\]"):
        config_from_parameters(params)


def test_run_metrics_and_editable_fractions():
    m = reproduce.run_metrics(cell_run_record("a")).set_index("metric")
    assert m.loc["TF Rel", "after"] == 100.0 and m.loc["TF Rel", "before"] == 0.0
    assert m.loc["QA Rel", "after"] == 50.0 and m.loc["QA Rel"].isna()["before"]
    assert list(m.index) == ["QA Rel", "QA Gen", "NoCtx Rel", "NoCtx Gen", "TF Rel", "TF Gen", "TF Spec"]
    f = reproduce.editable_fractions(cell_run_record("a"))
    assert list(f.index) == ["batch"] and f.loc["batch", "layer 20"] == 0.9
    seq = cell_run_record("s")
    seq["edit"]["projectors"] = {"final": {}, "editable_fraction_per_chunk": [
        {"model.layers.20.mlp.down_proj": 0.9}, {"model.layers.20.mlp.down_proj": 0.8}]}
    assert reproduce.editable_fractions(seq)["layer 20"].tolist() == [0.9, 0.8]
    assert reproduce.editable_fractions({"edit": {"projectors": {}}}).empty
