"""crispedit_lite.reproduction.experiment: run_experiment and the command line on a random tiny LLaMA.

The tokenizer is a word-level one over the bundled edit set's words (the ``tokenizer_dir`` fixture of
``tests/conftest.py``; no hub access); the model is ``random:tiny-llama`` (vocabulary 512). Metrics of a
random model are meaningless, but they must be *reproducible*: the same settings and seed on a CPU give
the same numbers.
"""

from __future__ import annotations

import json

import pytest

from crispedit_lite.cli import main
from crispedit_lite.editing import cpu_config
from crispedit_lite.reproduction.experiment import run_experiment
from crispedit_lite.reproduction.results import read_results, validate_result
from tests.helpers import ROOT, SPECIALS, word_tokenizer

FAST = dict(epochs=2, batch_size=4, n_capability=4, capability_max_length=32, layers=(1, 2))


def _run(tokenizer_dir, results_dir, method="crispedit", run_id=None, **changes):
    cfg = cpu_config(method, **{**FAST, **changes})
    return run_experiment(cfg, model="random:tiny-llama", tokenizer=tokenizer_dir, n_edits=4,
                          evals=("wild", "teacher_forced", "proxies"), results_dir=str(results_dir),
                          run_id=run_id, dataset_name="counterfact", command="pytest", progress=False)


@pytest.fixture(scope="module")
def first_run(tokenizer_dir, tmp_path_factory):
    return _run(tokenizer_dir, tmp_path_factory.mktemp("res"), run_id="first")


def test_result_json_validates_and_records_the_run(first_run):
    on_disk = json.loads(open(first_run["_path"]).read())
    validate_result(on_disk)
    assert on_disk["run_id"] == "first" and on_disk["command"] == "pytest"
    s = on_disk["settings"]
    assert (s["model"], s["dataset"], s["n_edits"], s["method"], s["seed"]) == \
        ("random:tiny-llama", "counterfact", 4, "crispedit", 0)
    assert s["config"]["layers"] == [1, 2] and s["config"]["capability_source"] == "offline"
    assert {"before", "after"} <= set(on_disk["metrics"])
    assert {"wild", "teacher_forced", "proxies"} <= set(on_disk["metrics"]["after"])
    assert {"load_s", "eval_before_s", "kfac_s", "train_s", "eval_after_s"} <= set(on_disk["timings"])
    assert on_disk["generations"] and "cpu_peak_rss_gib" in on_disk["memory"]
    assert on_disk["environment"]["packages"]["torch"]
    assert any("random-init" in n for n in on_disk["notes"])
    assert any("not Wikipedia" in n for n in on_disk["notes"])
    assert read_results(first_run["_path"].rsplit("/", 1)[0])[0]["run_id"] == "first"


def test_same_settings_and_seed_reproduce_the_metrics_exactly(first_run, tokenizer_dir, tmp_path):
    again = _run(tokenizer_dir, tmp_path, run_id="again")
    assert again["metrics"] == first_run["metrics"]
    assert again["generations"] == first_run["generations"]
    assert again["edit"]["train"][0]["epoch_losses"] == first_run["edit"]["train"][0]["epoch_losses"]


def test_results_are_never_overwritten(first_run, tokenizer_dir):
    path = first_run["_path"]
    before = open(path).read()
    with pytest.raises(ValueError, match="never overwritten"):
        _run(tokenizer_dir, path.rsplit("/", 1)[0], method="ft", run_id="first")
    assert open(path).read() == before


def test_default_run_ids_are_unique(tokenizer_dir, tmp_path):
    a = _run(tokenizer_dir, tmp_path, method="ft", epochs=1)
    b = _run(tokenizer_dir, tmp_path, method="ft", epochs=1)
    assert a["run_id"] != b["run_id"] and len(list(tmp_path.glob("*.json"))) == 2


def test_cli_edit_writes_a_result(tokenizer_dir, tmp_path, capsys):
    rc = main(["edit", "--model", "random:tiny-llama", "--tokenizer", tokenizer_dir, "--n-edits", "2",
               "--method", "ft", "--epochs", "1", "--batch-size", "2", "--layers", "1",
               "--eval", "teacher_forced", "--device", "cpu", "--results-dir", str(tmp_path),
               "--run-id", "cli", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["metric", "before", "after"] and out[1].startswith("TF reliability (%)")
    (run,) = read_results(tmp_path)
    assert out[-1] == run["_path"]
    assert run["run_id"] == "cli" and run["settings"]["method"] == "ft"
    assert run["command"].startswith("python -m crispedit_lite edit --model random:tiny-llama")
    assert run["settings"]["config"]["epochs"] == 1 and run["settings"]["config"]["layers"] == [1]
    assert run["settings"]["preset"] == {"name": "cpu"}


def test_cli_reproduce_unknown_cell_lists_cells(tmp_path, capsys):
    root = ROOT
    assert main(["reproduce", "nonexistent", "--root", str(root), "--results-root", str(tmp_path)]) == 2
    assert "no reproduce/nonexistent.yaml; cells include ['table" in capsys.readouterr().err
    assert main(["reproduce", "table1_zsre_crispedt", "--root", str(root),
                 "--results-root", str(tmp_path)]) == 2
    assert "table1_zsre_crispedit" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_cli_reproduce_skips_a_cell_whose_marker_holds(first_run, tmp_path, capsys):
    import nbformat

    from crispedit_lite.reproduction.finished import write_marker

    root, cell = ROOT, "table1_zsre_crispedit"
    (tmp_path / cell).mkdir()
    (tmp_path / cell / "half.json").write_text("{")  # never finished
    done = tmp_path / cell / "done.json"
    done.write_text(open(first_run["_path"]).read())
    nbformat.write(nbformat.v4.new_notebook(), tmp_path / f"{cell}.ipynb")
    write_marker(tmp_path, cell, done, tmp_path / f"{cell}.ipynb", root / "reproduce" / f"{cell}.yaml")
    assert main(["reproduce", cell, "--root", str(root), "--results-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "table1_zsre_crispedit: finished (" in out and "done.json); skipped" in out
    assert "1 cell(s): 0 done, 1 skipped (finished), 0 failed" in out


def test_bad_dtype_is_a_clear_error(tokenizer_dir, tmp_path):
    with pytest.raises(ValueError, match="dtype must be one of"):
        run_experiment(cpu_config("ft"), model="random:tiny-llama", tokenizer=tokenizer_dir,
                       dtype="float8", results_dir=str(tmp_path), progress=False)


def test_random_model_with_a_larger_tokenizer_is_a_clear_error(tmp_path):
    vocab = SPECIALS + [f"w{i}" for i in range(600)]  # more tokens than tiny-llama's 512 embeddings
    word_tokenizer(vocab).save_pretrained(tmp_path / "tok")
    with pytest.raises(ValueError, match=r"has 603 tokens but random:tiny-llama has vocab_size 512"):
        run_experiment(cpu_config("ft"), model="random:tiny-llama", tokenizer=str(tmp_path / "tok"),
                       results_dir=str(tmp_path / "res"), progress=False)
