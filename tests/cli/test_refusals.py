"""Every user mistake of ``edit`` and ``collect-kfac``: one line, exit 2, nothing written, no weights loaded.

The table :data:`CASES` holds one row per mistake: its arguments, the phrase the one-line message must
hold and whether only the inputs decide it (then the weights must never load). Each row runs through
``crispedit_lite.cli.main`` in this process with every model loader replaced by one that fails the test
if called; :data:`ENTRY_POINT` names a representative subset that also runs as
``python -m crispedit_lite`` in a subprocess. Every run must give exit status 2, exactly one line on
stderr starting ``error:``, no traceback, nothing on stdout, and leave the folder it may write to exactly
as it was (no results, no cache entry, no ``.lock``, no temporary file).

The model is ``random:tiny-llama`` (256 positions, 4 layers) with the word-level tokenizer of the
``tokenizer_dir`` fixture, or that model saved to a folder (for device maps, which apply to saved
models).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _records() -> list[dict]:
    text = resources.files("crispedit_lite").joinpath("resources/smollm2_counterfacts.json").read_text()
    return json.loads(text)["records"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tokenizer_dir):
    """Bad inputs (long, empty, deep, subject-less, repeated records), a saved tiny model, a work folder."""
    from transformers import AutoTokenizer

    from crispedit_lite.models import random_init_model

    d = tmp_path_factory.mktemp("refusals")
    recs = _records()
    (d / "long.json").write_text(json.dumps([dict(recs[0], prompt="the " * 300)] + recs[1:3]))
    (d / "empty.json").write_text("[]")
    (d / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (d / "nosubject.json").write_text(json.dumps([dict(recs[0], subject="Nobody At All")]))
    (d / "cf.json").write_text(json.dumps(recs[:4]))
    random_init_model("tiny-llama").save_pretrained(d / "saved")
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(d / "saved")
    (d / "work").mkdir()
    return d, tokenizer_dir


def _cases(d: Path, tok: str) -> dict[str, tuple[list[str], str, bool]]:
    """name -> (arguments, phrase of the one-line message, decided by the inputs alone)."""
    w = d / "work"
    out = ["--results-dir", str(w / "results"), "--cache-dir", str(w / "cache")]
    base = ["edit", "--model", "random:tiny-llama", "--tokenizer", tok, "--n-edits", "2", "--device", "cpu",
            "--no-progress", *out]
    crisp = [*base, "--layers", "1", "--n-capability", "4", "--capability-max-length", "16"]
    saved = ["edit", "--model", str(d / "saved"), "--n-edits", "2", "--layers", "1", "--no-progress", *out]
    collect = ["collect-kfac", "--model", "random:tiny-llama", "--tokenizer", tok, "--n-capability", "2",
               "--cache-dir", str(w / "cache"), "--no-progress"]
    return {
        # silent wrong runs
        "lr is infinite": ([*crisp, "--lr", "inf"],
                           "argument --lr: expected a finite positive number, got inf", True),
        "lr is NaN": ([*crisp, "--lr", "nan"], "argument --lr: expected a finite positive number", True),
        "float16 on a CPU": ([*crisp, "--dtype", "float16"],
                             "argument --dtype: float16 cannot train on a CPU", True),
        "a layer twice": ([*base, "--layers", "1,1"], "argument --layers: layer 1 is given twice", True),
        "gamma with ft": ([*base, "--layers", "1", "--method", "ft", "--gamma", "0.5"],
                          "argument --gamma: method ft does not read gamma (read by crispedit, crispedit_seq",
                          True),
        "gamma with memit": ([*base, "--layers", "1,2", "--method", "memit", "--gamma", "0.5"],
                             "argument --gamma: method memit does not read gamma", True),
        "epochs with memit": ([*base, "--layers", "1,2", "--method", "memit", "--epochs", "3"],
                              "argument --epochs: method memit does not read epochs", True),
        "capability text with ft": ([*base, "--layers", "1", "--method", "ft", "--n-capability", "8"],
                                    "argument --n-capability: method ft does not read n_capability", True),
        "--set of an unread shared field": ([*base, "--layers", "1", "--method", "ft", "--set",
                                             "kfac_labels=sampled"],
                                            "argument --set kfac_labels: method ft does not read kfac_labels",
                                            True),
        "prompt longer than the context": ([*crisp, "--data", str(d / "long.json")],
                                           "tokens, but model random:tiny-llama has 256 positions", True),
        # tracebacks that are one line now
        "device map names an unknown device": ([*saved, "--device-map", '{"": "cuda:7"}'],
                                               "argument --device-map: entry '': 'cuda:7'", True),
        "device map names no device": ([*saved, "--device-map", '{"": "tpu"}'],
                                       "argument --device-map: entry '': 'tpu'", True),
        "device map names an unknown module": ([*saved, "--device-map", '{"model.nope": "cpu"}'],
                                               "argument --device-map: entry 'model.nope' names no module",
                                               True),
        "hf: data offline": ([*crisp, "--data", "hf:nobody/no-such-edits"],
                             "argument --data: 'hf:nobody/no-such-edits' is a Hugging Face dataset that is "
                             "not in the local cache", True),
        "unreachable URL": ([*crisp, "--data", "http://127.0.0.1:9/edits.json"],
                            "argument --data: could not download edit records", True),
        "deeply nested JSON": ([*crisp, "--data", str(d / "deep.json")], "JSON nested too deeply", True),
        "300-character run id": ([*crisp, "--run-id", "r" * 300], "argument --run-id: ", True),
        "paper preset offline": ([*base, "--layers", "1", "--preset", "paper", "--data", str(d / "cf.json")],
                                 "argument --capability-source: Wikipedia is streamed", True),
        "Wikipedia offline": ([*crisp, "--capability-source", "wikipedia"],
                              "argument --capability-source: Wikipedia is streamed", True),
        "lm_eval offline": ([*crisp, "--eval", "lm_eval"], "argument --eval: lm_eval downloads its task data",
                            True),
        # checks that ran only after the model was loaded
        "layer out of range": ([*base, "--layers", "9"],
                               "argument --layers: model random:tiny-llama: layer 9 out of range for pattern "
                               "'model.layers.{i}.mlp.down_proj': layers 0..3", True),
        "no layer preset for the model": ([*base, "--method", "ft"], "argument --layers: model "
                                          "random:tiny-llama: no layer preset", True),
        "unmatched module pattern": ([*crisp, "--set", "module_pattern=model.layers.{i}.mlp.nothing"],
                                     "argument --set module_pattern: model random:tiny-llama: no module "
                                     "matches pattern", True),
        "empty data": ([*crisp, "--data", str(d / "empty.json")], "argument --data: no edit records", True),
        "subject not in its prompt": ([*base, "--layers", "1,2", "--method", "memit", "--data",
                                       str(d / "nosubject.json")],
                                      "subject 'Nobody At All' does not occur in prompt", True),
        "capability texts of 1 token": ([*crisp[:-1], "1"], "argument --capability-max-length: a capability "
                                        "text needs at least 2 tokens", True),
        "capability texts longer than the context": ([*crisp[:-1], "1000"], "argument "
                                                     "--capability-max-length: 1000 tokens, but model", True),
        "a 70-bit seed": ([*crisp, "--seed", str(2**70)],
                          "argument --seed: expected an integer in [0, 2**32 - 1]", True),
        "the meta device": ([*crisp, "--device", "meta"], "argument --device: 'meta' holds no weights", True),
        "results under /proc": ([*crisp, "--results-dir", "/proc/crispedit/results"],
                                "argument --results-dir: '/proc' cannot be written", True),
        "collect: layer out of range": ([*collect, "--layers", "7"], "argument --layers: model "
                                        "random:tiny-llama: layer 7 out of range", True),
        "collect: unmatched module pattern": ([*collect, "--layers", "1", "--module-pattern",
                                               "model.layers.{i}.mlp.nothing"],
                                              "argument --module-pattern: model random:tiny-llama: no module",
                                              True),
        "collect: --max-length 1": ([*collect, "--layers", "1", "--max-length", "1"],
                                    "argument --max-length: a capability text needs at least 2 tokens", True),
        "collect: a 70-bit seed": ([*collect, "--layers", "1", "--seed", str(2**70)], "argument --seed: ",
                                   True),
        "collect: float16 on a CPU": ([*collect, "--layers", "1", "--device", "cpu", "--dtype", "float16"],
                                      "argument --dtype: float16 cannot train on a CPU", True),
        "collect: the meta device": ([*collect, "--layers", "1", "--device", "meta"], "argument --device: ",
                                     True),
        "collect: Wikipedia offline": ([*collect, "--layers", "1", "--capability-source", "wikipedia"],
                                       "argument --capability-source: Wikipedia is streamed", True),
    }


#: one mistake of each class also runs through the real entry point, in a subprocess
ENTRY_POINT = ("lr is infinite", "a layer twice", "gamma with memit", "prompt longer than the context",
               "deeply nested JSON", "collect: --max-length 1")


def _listing(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def _check_one_line(code: int, out: str, err: str, phrase: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and out == ""
    assert phrase in lines[0], lines[0]


@pytest.fixture()
def no_weights(monkeypatch):
    """Loading or building any model's weights fails the test."""
    import crispedit_lite.models as models
    import crispedit_lite.models.load as load
    import crispedit_lite.reproduction.experiment as experiment

    def refuse(*args, **kwargs):
        raise AssertionError("the weights were loaded before the mistake was refused")

    for mod, name in ((experiment, "load_for_experiment"), (load, "load_model"), (load, "random_init_model"),
                      (models, "load_model"), (models, "random_init_model")):
        monkeypatch.setattr(mod, name, refuse)


@pytest.mark.parametrize("name", list(_cases(Path("/x"), "tok")))
def test_a_mistake_is_one_line_exit_2_before_loading_and_writes_nothing(inputs, no_weights, capsys, name):
    from crispedit_lite.cli import main

    d, tok = inputs
    args, phrase, _ = _cases(d, tok)[name]
    before = _listing(d)
    code = main(args)
    out, err = capsys.readouterr()
    _check_one_line(code, out, err, phrase)
    assert _listing(d) == before


def test_the_table_covers_every_class_and_runs_its_subset_through_the_entry_point(inputs):
    d, tok = inputs
    cases = _cases(d, tok)
    assert len(cases) >= 35 and set(ENTRY_POINT) <= set(cases)
    before = _listing(d)

    def run(name: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "crispedit_lite", *cases[name][0]], cwd=d / "work",
                              env=ENV, capture_output=True, text=True, timeout=300)

    with ThreadPoolExecutor(max_workers=3) as pool:
        runs = dict(zip(ENTRY_POINT, pool.map(run, ENTRY_POINT)))
    for name, r in runs.items():
        _check_one_line(r.returncode, r.stdout, r.stderr, cases[name][1])
    assert _listing(d) == before


def test_repeated_records_are_dropped_with_a_warning_and_recorded(inputs, tmp_path, capsys):
    from crispedit_lite.cli import main

    d, tok = inputs
    recs = _records()
    (tmp_path / "dups.json").write_text(json.dumps([recs[0]] * 40 + [recs[1], recs[0]]))
    code = main(["edit", "--model", "random:tiny-llama", "--tokenizer", tok, "--method", "ft",
                 "--layers", "1",
                 "--epochs", "1", "--n-edits", "16", "--data", str(tmp_path / "dups.json"), "--device", "cpu",
                 "--eval", "teacher_forced", "--no-progress", "--results-dir", str(tmp_path / "r"),
                 "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1
    assert "40 record(s) repeat an earlier edit (record 1 repeats record 0)" in warnings[0]
    record = json.loads(Path(out.strip()).read_text())
    assert record["settings"]["n_edits"] == 2 and record["settings"]["duplicates_dropped"] == 40
    assert any("repeat an earlier edit" in n for n in record["notes"])


def _enospc(*args, **kwargs):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_for_the_results_is_one_line_and_leaves_nothing(inputs, tmp_path, capsys, monkeypatch):
    import crispedit_lite.atomic as atomic
    from crispedit_lite.cli import main

    d, tok = inputs
    monkeypatch.setattr(atomic, "_fsync", _enospc)  # the disk fills up while the results JSON is written
    code = main(["edit", "--model", "random:tiny-llama", "--tokenizer", tok, "--method", "ft",
                 "--layers", "1",
                 "--epochs", "1", "--n-edits", "2", "--device", "cpu", "--eval", "teacher_forced",
                 "--no-progress", "--results-dir", str(tmp_path / "r"), "--run-id", "full"])
    out, err = capsys.readouterr()
    _check_one_line(code, "", err, f"no space left on the device of {tmp_path / 'r' / 'full.json'}; nothing "
                    "was written there")
    assert list((tmp_path / "r").iterdir()) == []


def test_a_full_disk_for_the_cache_is_one_line_and_leaves_nothing(inputs, tmp_path, capsys, monkeypatch):
    import crispedit_lite.kfac.io as kio
    from crispedit_lite.cli import main

    d, tok = inputs
    monkeypatch.setattr(kio, "save_file", _enospc)
    code = main(["collect-kfac", "--model", "random:tiny-llama", "--tokenizer", tok, "--layers", "1",
                 "--n-capability", "2", "--max-length", "16", "--cache-dir", str(tmp_path / "k"), "--device",
                 "cpu", "--no-progress"])
    out, err = capsys.readouterr()
    _check_one_line(code, "", err, "no space left on the device of ")
    assert ".safetensors; nothing was written there" in err
    assert list((tmp_path / "k").iterdir()) == []  # no entry, no temporary file, no lock


def test_a_diverged_run_is_recorded_as_diverged_and_refused(inputs, tmp_path, capsys, monkeypatch):
    import torch

    import crispedit_lite.editing as editing
    from crispedit_lite.cli import main
    from crispedit_lite.reproduction.results import read_results, result_problem

    d, tok = inputs
    real_edit = editing.edit

    def diverging(model, *args, **kwargs):  # the edit leaves NaN weights, as --lr inf used to
        result = real_edit(model, *args, **kwargs)
        with torch.no_grad():
            model.model.layers[1].mlp.down_proj.weight.fill_(float("nan"))
        return result

    monkeypatch.setattr(editing, "edit", diverging)
    code = main(["edit", "--model", "random:tiny-llama", "--tokenizer", tok, "--method", "ft",
                 "--layers", "1",
                 "--epochs", "1", "--n-edits", "2", "--device", "cpu", "--eval", "teacher_forced,proxies",
                 "--no-progress", "--results-dir", str(tmp_path / "r"), "--run-id", "nan"])
    out, err = capsys.readouterr()
    _check_one_line(code, "", err, "error: the run diverged: metrics.after.")
    path = tmp_path / "r" / "nan.json"
    assert f"recorded as diverged in {path}" in err
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    record = json.loads(text)  # strict JSON: null where the numbers were not finite
    assert record["diverged"]["nonfinite"] and record["diverged"]["nonfinite"][0].startswith("metrics.after.")
    assert result_problem(record).startswith("the run diverged")
    assert read_results(tmp_path / "r") == []
    assert len(read_results(tmp_path / "r", include_diverged=True)) == 1
