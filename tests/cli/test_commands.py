"""crispedit_lite.cli: the commands through their real entry point (``python -m crispedit_lite``).

Every class of mistake must give one line on stderr (``error: ...``), exit status 2, no traceback,
and write nothing; a success ends with the before/after table and the results JSON's path. The
model is ``random:tiny-llama`` with the word-level tokenizer of the ``tokenizer_dir`` fixture
(``tests/conftest.py``; offline).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from crispedit_lite.cli.checks import UsageError
from crispedit_lite.cli.edit import headline_rows
from crispedit_lite.cli.presets import paper_dataset_for
from tests.helpers import ROOT

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
TINY = ["--n-edits", "2", "--epochs", "1", "--batch-size", "2", "--n-capability", "4",
        "--capability-max-length", "16", "--layers", "1", "--device", "cpu", "--no-progress"]
#: TINY without the capability text's settings, which FT does not read (giving them is an error)
TINY_FT = [a for i, a in enumerate(TINY) if a not in ("--n-capability", "--capability-max-length")
           and TINY[i - 1] not in ("--n-capability", "--capability-max-length")]


def cli(*args: str, cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    """``python -m crispedit_lite ARGS`` in ``cwd``."""
    return subprocess.run([sys.executable, "-m", "crispedit_lite", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def _records() -> list[dict]:
    from importlib import resources

    text = resources.files("crispedit_lite").joinpath("resources/smollm2_counterfacts.json").read_text()
    return json.loads(text)["records"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tokenizer_dir):
    """A folder of bad and good inputs: binary, unknown-format, CounterFact-field and ZsRE files."""
    d = tmp_path_factory.mktemp("inputs")
    (d / "binary.json").write_bytes(bytes(range(256)) * 4)
    (d / "unknown.json").write_text(json.dumps([{"question": "q", "answer": "a"}]))
    (d / "edits.json").write_text(json.dumps(_records()))
    (d / "a_file").write_text("not a folder")
    (d / "map.json").write_text("[1, 2]")
    (d / "results").mkdir()
    (d / "results" / "taken.json").write_text("{}")
    return d, tokenizer_dir


def _mistakes(d: Path, tok: str) -> dict[str, tuple[list[str], str]]:
    """name -> (arguments, a phrase the one-line message must contain)."""
    model = ["--model", "random:tiny-llama", "--tokenizer", tok]
    out = ["--results-dir", str(d / "out"), "--cache-dir", str(d / "cache")]
    edit = ["edit", *model, *TINY, *out]
    return {
        "gamma above 1": ([*edit, "--gamma", "1.5"],
                          "argument --gamma: the energy threshold must lie in (0, 1]"),
        "gamma not a number": ([*edit, "--gamma", "high"], "argument --gamma: invalid float value: 'high'"),
        "unknown method": ([*edit, "--method", "crisp"], "unknown method 'crisp'"),
        "missing data file": ([*edit, "--data", str(d / "nope.json")], "argument --data: edit source"),
        "binary data file": ([*edit, "--data", str(d / "binary.json")], "is not UTF-8 text"),
        "data is a folder": ([*edit, "--data", str(d)], "is not a file"),
        "unknown record format": ([*edit, "--data", str(d / "unknown.json")],
                                  "argument --data: record 0: cannot tell the format"),
        "layers not integers": (edit[:-len(out)] + ["--layers", "a,b", *out],
                                "argument --layers: expected comma-separated layer indices"),
        "results dir is a file": ([*edit[:-len(out)], "--results-dir", str(d / "a_file")],
                                  "argument --results-dir: "),
        "cache dir under a file": ([*edit, "--cache-dir", str(d / "a_file" / "k")], "argument --cache-dir: "),
        "unknown model": (["edit", "--model", "smollm", *TINY, *out],
                          "argument --model: unknown model 'smollm'"),
        "unknown shape preset": (["edit", "--model", "random:huge", "--tokenizer", tok, *TINY, *out],
                                 "unknown shape preset 'huge'"),
        "random model without tokenizer": (["edit", "--model", "random:tiny-llama", *TINY, *out],
                                           "argument --tokenizer"),
        "unknown evaluation": ([*edit, "--eval", "wild,bleu"],
                               "argument --eval: unknown evaluation(s) ['bleu']"),
        "bad device map": ([*edit, "--device-map", str(d / "map.json")], "argument --device-map"),
        "device map on a random model": ([*edit, "--device-map", "auto"], "argument --device-map"),
        "bad device": ([*edit, "--device", "tpu9"], "argument --device"),
        "run id taken": ([*edit[:-len(out)], "--results-dir", str(d / "results"), "--run-id", "taken"],
                         "never overwritten"),
        "negative n-edits": ([*edit, "--n-edits", "-3"],
                             "argument --n-edits: expected a finite positive number"),
        "preset: name contradicts records": ([*edit, "--preset", "paper", "--data", str(d / "edits.json"),
                                              "--dataset-name", "zsre"], "are in the counterfact format"),
        "preset: CounterFact or Wiki undecided": (
            [*edit, "--preset", "paper", "--data", str(d / "edits.json"), "--method", "crispedit_seq"],
            "pass --dataset-name"),
        "unknown option": ([*edit, "--gama", "0.5"], "unrecognized arguments: --gama"),
        "unknown subcommand": (["train"], "invalid choice: 'train'"),
        "unknown cell": (["reproduce", "table1_zsre_crisp", "--root", str(ROOT),
                          "--results-root", str(d / "out")], "no reproduce/table1_zsre_crisp.yaml"),
        "unknown table": (["reproduce", "--table", "table42", "--root", str(ROOT),
                           "--results-root", str(d / "out")], "tables with cells: table1"),
        "cell and table": (["reproduce", "table7_n10", "--table", "table7", "--root", str(ROOT)],
                           "give one CELL or --table"),
        "collect: paper preset without n": (["collect-kfac", *model, "--preset", "paper", "--cache-dir",
                                             str(d / "cache")], "argument --n-capability"),
        "collect: bad checkpoint interval": (
            ["collect-kfac", *model, "--checkpoint-every", "0", "--cache-dir", str(d / "cache")],
            "argument --checkpoint-every"),
        "layer out of range (before loading)": ([*edit, "--layers", "9"], "argument --layers: model "
                                                "random:tiny-llama: layer 9 out of range"),
    }


# one mistake of each class goes through a subprocess (the real entry point); the rest through main()
ENTRY_POINT = ("gamma above 1", "gamma not a number", "unknown method", "binary data file",
               "unknown record format", "layers not integers", "results dir is a file", "unknown model",
               "unknown evaluation", "bad device map", "preset: CounterFact or Wiki undecided",
               "unknown option", "unknown table", "collect: paper preset without n",
               "layer out of range (before loading)")


def _listing(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


@pytest.fixture(scope="module")
def entry_point_runs(inputs):
    d, tok = inputs
    cases = _mistakes(d, tok)
    before = _listing(d)
    with ThreadPoolExecutor(max_workers=3) as pool:
        runs = dict(zip(ENTRY_POINT, pool.map(lambda n: cli(*cases[n][0], cwd=d), ENTRY_POINT)))
    return runs, before == _listing(d)


def _check_one_line(code: int, out: str, err: str, phrase: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and out == ""
    assert phrase in lines[0]


@pytest.mark.parametrize("name", ENTRY_POINT)
def test_a_mistake_through_the_entry_point_is_one_line_exit_2_and_writes_nothing(
        inputs, entry_point_runs, name):
    d, tok = inputs
    runs, unchanged = entry_point_runs
    _check_one_line(runs[name].returncode, runs[name].stdout, runs[name].stderr, _mistakes(d, tok)[name][1])
    assert unchanged and (d / "results" / "taken.json").read_text() == "{}"


@pytest.mark.parametrize("name", [n for n in _mistakes(Path("/x"), "tok") if n not in ENTRY_POINT])
def test_every_other_mistake_is_one_line_exit_2_and_writes_nothing(inputs, capsys, name):
    from crispedit_lite.cli import main

    d, tok = inputs
    args, phrase = _mistakes(d, tok)[name]
    before = _listing(d)
    code = main(args)
    out, err = capsys.readouterr()
    _check_one_line(code, out, err, phrase)
    assert _listing(d) == before and (d / "results" / "taken.json").read_text() == "{}"


def test_debug_shows_the_traceback(tmp_path):
    run = cli("edit", "--gamma", "2", "--debug", cwd=tmp_path)
    assert run.returncode == 1 and "Traceback" in run.stderr and "UsageError" in run.stderr


def test_success_prints_the_table_then_the_path(inputs, tmp_path):
    d, tok = inputs
    run = cli("edit", "--model", "random:tiny-llama", "--tokenizer", tok, *TINY_FT, "--method", "ft",
              "--results-dir", str(tmp_path / "r"), "--run-id", "ok", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[0].split() == ["metric", "before", "after"]
    labels = [line.rsplit(None, 2)[0] for line in lines[1:-1]]
    assert labels[:3] == ["TF reliability (%)", "TF generalization (%)", "TF specificity (%)"]
    assert "WILD qa reliability (%)" in labels and "perplexity" in labels and "KL to base (nats)" in labels
    record = json.loads(Path(lines[-1]).read_text())
    assert lines[-1] == str(tmp_path / "r" / "ok.json")
    tf = record["metrics"]["after"]["teacher_forced"]["scores"]
    row = next(line for line in lines if line.startswith("TF specificity"))
    assert float(row.split()[-1]) == pytest.approx(tf["spec"], rel=1e-3)
    quiet = cli("edit", "--model", "random:tiny-llama", "--tokenizer", tok, *TINY_FT, "--method", "ft",
                "--eval", "teacher_forced", "--results-dir", str(tmp_path / "r"), "--quiet", cwd=tmp_path)
    assert quiet.returncode == 0 and len(quiet.stdout.strip().splitlines()) == 1
    assert Path(quiet.stdout.strip()).is_file()


def test_paper_preset_counterfact_file_without_a_name_gets_gamma_0_9(inputs, tmp_path):
    d, tok = inputs
    run = cli("edit", "--model", "random:tiny-llama", "--tokenizer", tok, *TINY, "--preset", "paper",
              "--capability-source", "offline", "--eval", "teacher_forced", "--data", str(d / "edits.json"),
              "--results-dir", str(tmp_path / "r"), "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)
    assert record["settings"]["config"]["gamma"] == 0.9
    preset = record["settings"]["preset"]
    assert preset["name"] == "paper" and preset["dataset"] == "counterfact"
    assert preset["decided_by"].startswith("record format 'counterfact'")
    assert preset["overridden_by_arguments"] == ["n_capability"]


def test_paper_dataset_is_decided_by_name_file_or_format():
    cf = _records()[:2]
    zsre = [{"subject": "s", "src": "q?", "alt": "a", "rephrase": "r?", "loc": "nq question: x",
             "loc_ans": "y"}]
    by = lambda method, name, data, recs, model="random:tiny-llama": paper_dataset_for(  # noqa: E731
        method, model, name, data, recs)
    assert by("crispedit", None, "/d/x.json", cf)["gamma"] == 0.9
    assert by("crispedit", None, "/d/x.json", zsre)["gamma"] == 0.7
    seq_wiki = by("crispedit_seq", None, "data/wiki_big_edit_3k.json", cf)
    assert (seq_wiki["dataset"], seq_wiki["n_capability"], seq_wiki["gamma"]) == ("wikibigedit", 200, 0.995)
    assert by("crispedit_seq", "counterfact", "/d/x.json", cf)["gamma"] == 0.999
    assert by("crispedit", "wiki", "/d/x.json", cf)["decided_by"] == "--dataset-name 'wiki'"
    assert by("crispedit", "zsre10k", "/d/x.json", zsre)["n_capability"] == 1000  # Table 4
    qwen = by("crispedit", None, "/d/x.json", zsre, model="Qwen/Qwen2.5-1.5B-Instruct")
    assert (qwen["n_capability"], qwen["gamma"], qwen["model_family"]) == (1000, 0.7, "qwen2.5-1.5b")
    with pytest.raises(UsageError, match="cannot be told from its records"):
        by("crispedit", "mine", "/d/x.json", [{"q": 1}])
    with pytest.raises(UsageError, match="presets differ for crispedit_seq"):
        by("crispedit_seq", "mine", "/d/x.json", cf)
    wiki = paper_dataset_for("crispedit_seq", "m", None, "/d/x.json", cf, data_format="wikibigedit")
    assert (wiki["dataset"], wiki["gamma"]) == ("wikibigedit", 0.995)


def test_headline_rows_pick_each_family_and_skip_what_was_not_measured():
    before = {"teacher_forced": {"scores": {"rel": 10.0, "gen": 5.0, "spec": 90.0}}}
    after = {"teacher_forced": {"scores": {"rel": 100.0, "gen": 80.0, "spec": 85.0}},
             "wild": {"scores": {"qa": {"rel": 50.0, "gen": 40.0, "loc": 30.0}}},
             "proxies": {"perplexity": 12.0, "kl_to_base": 0.01},
             "lm_eval": {"mmlu": {"score": 61.0}}}
    rows = headline_rows({"before": before, "after": after})
    assert rows[0] == ("TF reliability (%)", 10.0, 100.0)
    assert ("WILD qa locality (%)", None, 30.0) in rows and ("lm-eval mmlu (%)", None, 61.0) in rows
    assert [r[0] for r in rows][-3:] == ["perplexity", "KL to base (nats)", "lm-eval mmlu (%)"]


def test_collect_kfac_fills_the_cache_that_edit_then_hits(inputs, tmp_path):
    d, tok = inputs
    model = ["--model", "random:tiny-llama", "--tokenizer", tok]
    run = cli("collect-kfac", *model, "--layers", "1", "--n-capability", "4", "--capability-source",
              "offline", "--max-length", "16", "--kfac-labels", "true", "--cache-dir", str(tmp_path / "k"),
              "--device", "cpu", "--no-progress", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    entry = run.stdout.strip().splitlines()[-1]
    assert Path(entry).is_file() and Path(entry).parent == tmp_path / "k"
    edit = cli("edit", *model, *TINY, "--eval", "teacher_forced", "--cache-dir", str(tmp_path / "k"),
               "--results-dir", str(tmp_path / "r"), "--quiet", cwd=tmp_path)
    assert edit.returncode == 0, edit.stderr
    cap = json.loads(Path(edit.stdout.strip()).read_text())["edit"]["capability"]
    assert cap["hit"] is True and cap["cache"] == entry


def test_device_map_reaches_the_loader_and_the_record(inputs, tmp_path, capsys):
    from transformers import AutoTokenizer

    from crispedit_lite.cli import main
    from crispedit_lite.models import random_init_model

    d, tok = inputs
    random_init_model("tiny-llama").save_pretrained(tmp_path / "m")
    AutoTokenizer.from_pretrained(tok).save_pretrained(tmp_path / "m")
    (tmp_path / "map.json").write_text(json.dumps({"": "cpu"}))
    assert main(["edit", "--model", str(tmp_path / "m"), *TINY, "--eval", "teacher_forced",
                 "--device-map", str(tmp_path / "map.json"), "--results-dir", str(tmp_path / "r"),
                 "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["settings"]["device_map"] == {"": "cpu"}


def test_mend_edits_a_shape_without_a_layer_preset(inputs, tmp_path):
    """MEND picks its own matrices (the last three layers): no --layers needed, and none accepted.

    The editor network is the untrained one that the GPU session builds for random shapes
    (``benchmarks/mend_random_editor.py``); the preflight once asked for the layers MEND does not read.
    """
    d, tok = inputs
    net = tmp_path / "mend-tiny.safetensors"
    script = ROOT / "benchmarks" / "mend_random_editor.py"
    made = subprocess.run([sys.executable, str(script), "random:tiny-llama", str(net)], cwd=tmp_path,
                          env={**ENV, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=240)
    assert made.returncode == 0, made.stderr
    assert "9 matrices" in made.stdout  # gate, up and down_proj of layers 1-3 of 4
    run = cli("edit", "--model", "random:tiny-llama", "--tokenizer", tok, "--data", str(d / "edits.json"),
              "--n-edits", "2", "--method", "mend", "--eval", "teacher_forced", "--device", "cpu",
              "--no-progress", "--set", f"mend_editor={net}", "--results-dir", str(tmp_path / "r"),
              "--run-id", "mend", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    record = json.loads((tmp_path / "r" / "mend.json").read_text())
    assert record["edit"]["config"]["method"] == "mend" and len(record["edit"]["modules"]) == 9
    refused = cli("edit", "--model", "random:tiny-llama", "--tokenizer", tok, "--data", str(d / "edits.json"),
                  "--n-edits", "2", "--method", "mend", "--layers", "1", "--no-progress",
                  "--set", f"mend_editor={net}", "--results-dir", str(tmp_path / "r2"), cwd=tmp_path)
    assert refused.returncode == 2 and "does not read layers" in refused.stderr
