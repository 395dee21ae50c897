"""Adding an editor is one file, its tests and one registry line.

A throwaway editor, ``knob``, is written here as one module file with its own settings class (one
setting, ``its_knob``: how many of the edited ``down_proj`` matrices it trains, counted from the top)
and registered by one more entry in ``EDITOR_MODULES``. Nothing else in the package changes, and the
editor then runs through ``edit()``, through the command line (``edit --method knob --set its_knob=3``)
with its setting recorded in the results JSON, through a reproduction cell's parameters, and shows up
with its label and colour in the CPU tables and the book's figures.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from collections import Counter
from importlib import resources

import pytest
import torch

from tests.helpers import word_tokenizer

KNOB_FILE = '''"""Knob: plain FT-M of the top ``its_knob`` edited down_proj matrices (a throwaway editor)."""

from __future__ import annotations

from dataclasses import dataclass

from crispedit_lite.editing.loops.projected import run_gradient_editor
from crispedit_lite.editing.registry import EditJob, Editor
from crispedit_lite.editing.settings import EditorSettings, check


@dataclass(frozen=True)
class KnobSettings(EditorSettings):
    its_knob: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.its_knob > 0, "its_knob", "a positive integer", self.its_knob)


def run(job: EditJob):
    result = run_gradient_editor(job, job.modules[-job.config.settings.its_knob:], projector_kind=None)
    result.details["its_knob"] = job.config.settings.its_knob
    return result


EDITORS = (Editor(name="knob", changes="the top its_knob edited down_proj", statistics=(),
                  update="projected_gradient", run=run, label="Knob", color="#123456",
                  settings=KnobSettings, summary="FT-M of the top its_knob edited matrices"),)
'''
WORDS = ["<unk>", "<s>", "</s>", "the", "capital", "of", "france", "is", "rome", "river", "germany", "blue",
         "a", "big", "dog", "green"]


@pytest.fixture()
def knob(tmp_path_factory, monkeypatch):
    """The ``knob`` editor: one file in the editors package, one entry in ``EDITOR_MODULES``."""
    import crispedit_lite.editing.editors as editors_pkg

    registry_mod = importlib.import_module("crispedit_lite.editing.registry")  # the module, not registry()

    folder = tmp_path_factory.mktemp("editors")
    (folder / "knob.py").write_text(KNOB_FILE)
    monkeypatch.setattr(editors_pkg, "__path__", [*editors_pkg.__path__, str(folder)])
    monkeypatch.setattr(registry_mod, "EDITOR_MODULES", (*registry_mod.EDITOR_MODULES, "knob"))  # the line
    monkeypatch.setattr(registry_mod, "_REGISTRY", None)  # read the modules again
    yield registry_mod.get_editor("knob")
    sys.modules.pop("crispedit_lite.editing.editors.knob", None)


def test_the_new_editor_runs_through_edit(knob):
    from crispedit_lite.data import EditRequest
    from crispedit_lite.editing import EditConfig, edit, editor_names
    from crispedit_lite.models import prepare_tokenizer, random_init_model

    assert "knob" in editor_names() and knob.settings.__name__ == "KnobSettings"
    model = random_init_model("tiny-llama", dtype=torch.float64, seed=0)
    tok = prepare_tokenizer(word_tokenizer(WORDS))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    requests = [EditRequest("the capital of france is", "rome"), EditRequest("a big dog is", "green")]
    cfg = EditConfig(method="knob", its_knob=1, layers=(1, 2), epochs=2, batch_size=2, lr=1e-2)
    result = edit(model, tok, requests, cfg, progress=False)
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert changed == {"model.layers.2.mlp.down_proj.weight"} and result.details["its_knob"] == 1
    described = result.details["editor"]
    assert (described["label"], described["settings"]) == ("Knob", "KnobSettings")
    assert EditConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["its_knob"] == 1
    with pytest.raises(ValueError, match="its_knob must be a positive integer, got 0"):
        EditConfig(method="knob", its_knob=0)
    with pytest.raises(ValueError, match="its_knob=2 is a Knob setting .read by knob.; method memit reads"):
        EditConfig(method="memit", its_knob=2)


def test_the_new_editor_runs_through_the_command_line(knob, tmp_path, capsys):
    from crispedit_lite.cli import main

    text = resources.files("crispedit_lite").joinpath("resources/smollm2_counterfacts.json").read_text()
    words = Counter(re.findall(r"\w+|[^\w\s]", " ".join(json.dumps(r) for r in json.loads(text)["records"])))
    vocab = ["<unk>", "<s>", "</s>"] + [w for w, _ in words.most_common(497)]
    word_tokenizer(vocab).save_pretrained(tmp_path / "tok")
    argv = ["edit", "--model", "random:tiny-llama", "--tokenizer", str(tmp_path / "tok"), "--method", "knob",
            "--set", "its_knob=3", "--layers", "1,2,3", "--n-edits", "2", "--epochs", "1",
            "--batch-size", "2", "--eval", "teacher_forced", "--device", "cpu", "--no-progress",
            "--results-dir", str(tmp_path / "r"), "--run-id", "knob", "--quiet"]
    assert main(argv) == 0
    path = capsys.readouterr().out.strip()
    record = json.loads(open(path).read())
    assert record["settings"]["config"]["its_knob"] == 3 and record["settings"]["method"] == "knob"
    assert record["settings"]["editor"]["label"] == "Knob" and "--set its_knob=3" in record["command"]
    assert main([*argv[:7], "--set", "its_knob=0", *argv[9:]]) == 2  # its own validation, one line
    err = capsys.readouterr().err.strip()
    assert err == "error: argument --set: its_knob must be a positive integer, got 0"
    assert main([*argv[:5], "--method", "memit", *argv[7:]]) == 2
    err = capsys.readouterr().err
    assert "its_knob=3 is a Knob setting (read by knob); method memit reads: cf_lambda" in err


def test_the_new_editor_runs_through_a_reproduction_cell(knob):
    from crispedit_lite.editing.paper_presets import paper_values
    from crispedit_lite.reproduction.cells import config_from_parameters

    params = dict(MODEL="random:tiny-llama", DATASET="zsre", DATA_PATH="smollm2-counterfacts", N_EDITS=2,
                  METHOD="knob", GAMMA=0.9, N_CAPABILITY=4, LAYERS=[1, 2], SEQUENTIAL=False, CHUNK_SIZE=2,
                  JUDGE=False, RUN_LM_EVAL=False, RESULTS_DIR="results/x", SEED=0, DEVICE="cpu",
                  DTYPE="float32", EPOCHS=1, BATCH_SIZE=2, CONFIG={"its_knob": 2})
    cfg, preset = config_from_parameters(params)
    assert (cfg.method, cfg.settings.its_knob, cfg.layers, preset) == ("knob", 2, (1, 2), "cpu")
    with pytest.raises(ValueError, match="'knob' has no sequential form"):
        config_from_parameters({**params, "SEQUENTIAL": True})
    assert paper_values("knob", "wiki")["gamma"] == 0.9  # no values of its own: CrispEdit's


def test_the_new_editor_has_its_label_and_colour_in_the_tables_and_figures(knob, tmp_path):
    import matplotlib.colors as mcolors
    import pandas as pd

    from crispedit_lite.teaching import cpu_table
    from crispedit_lite.teaching.plotting import METHOD_COLORS, method_color

    assert cpu_table.LABELS["knob"] == cpu_table.label("knob") == "Knob"
    assert METHOD_COLORS["Knob"] == method_color("knob") == "#123456"
    df = pd.DataFrame([{"method": cpu_table.label(m), "seed": s, "TF Rel": r + s, "KL": k + s / 100,
                        "ΔPPL %": k * 10} for m, r, k in (("knob", 80, 0.01), ("ft", 90, 0.05))
                       for s in (0, 1)])
    fig = cpu_table.pareto_figure(df)
    handles, labels = fig.axes[0].get_legend_handles_labels()  # one error bar per method
    drawn = {name: mcolors.to_hex(handle[0].get_color()) for handle, name in zip(handles, labels)}
    assert drawn["Knob (front)"] == "#123456" and drawn["FT (front)"] == mcolors.to_hex(method_color("ft"))
