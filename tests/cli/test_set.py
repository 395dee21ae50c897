"""``python -m crispedit_lite edit --set KEY=VALUE``: every setting of every editor, checked before loading.

Each setting of each editor's settings class (and each shared ``EditConfig`` field) can be set on the
command line and lands in the run's config; a key nobody reads, a key of another method, a value of the
wrong type or out of range is one line ``error: ...``, exit status 2, before any model is loaded and
with nothing written.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest

from crispedit_lite.cli import build_parser, main
from crispedit_lite.cli.edit import _check_args, build_config
from crispedit_lite.editing import EditConfig, registry
from crispedit_lite.editing.settings import field_types

BASE = ["edit", "--model", "smollm2-135m-instruct", "--n-edits", "2", "--device", "cpu", "--no-progress"]
PAIRS = [(n, f) for n, e in registry().items() if e.settings is not None for f in e.settings.field_names()]


def _other_value(tp: Any, default: Any) -> tuple[str, Any]:
    """``(text, value)``: a valid value of annotation ``tp`` that differs from ``default``."""
    args = get_args(tp)
    if get_origin(tp) is not None and type(None) in args and get_origin(tp) is not Literal:
        tp = next(a for a in args if a is not type(None))
    if get_origin(tp) is Literal:
        value = next(a for a in get_args(tp) if a != default)
        return str(value), value
    if get_origin(tp) is tuple:
        return "k_proj,o_proj", ("k_proj", "o_proj")
    if tp is bool:
        return str(not default).lower(), not default
    if tp is int:
        return str(3 if default is None else default + 1), 3 if default is None else default + 1
    if tp is float:
        value = 0.5 if not default else default / 2
        return repr(value), value
    return "other", "other"


def _config(argv: list[str]):
    args = build_parser().parse_args(argv)
    _check_args(args)
    return build_config(args)[0]


@pytest.mark.parametrize("method, field", PAIRS)
def test_set_reaches_every_setting_of_every_editor(method, field, tmp_path):
    cls = registry()[method].settings
    text, value = _other_value(field_types(cls)[field], getattr(cls(), field))
    out = ["--results-dir", str(tmp_path / "r")]
    cfg = _config([*BASE, *out, "--method", method, "--set", f"{field}={text}"])
    assert cfg.method == method and getattr(cfg.settings, field) == value != getattr(cls(), field)
    recorded = cfg.to_dict()[field]
    assert (tuple(recorded) if isinstance(recorded, list) else recorded) == value
    assert not (tmp_path / "r").exists()


def test_set_reaches_the_shared_fields_without_a_flag_and_the_paper_preset(tmp_path):
    out = ["--results-dir", str(tmp_path / "r")]
    sets = ["early_stop=0.05", "rule=paper", "project_update=true", "seq_reshuffle=yes", "seq_mask_prompt=1",
            "module_pattern=model.layers.{i}.mlp.up_proj", "layers=3,4"]
    cfg = _config([*BASE, *out, "--method", "crispedit_seq", *[a for s in sets for a in ("--set", s)]])
    assert (cfg.early_stop, cfg.rule, cfg.project_update, cfg.seq_reshuffle, cfg.settings.seq_mask_prompt,
            cfg.module_pattern, cfg.layers) == (0.05, "paper", True, True, True,
                                                "model.layers.{i}.mlp.up_proj", (3, 4))
    paper = _config([*BASE, *out, "--preset", "paper", "--dataset-name", "counterfact", "--method", "lora",
                     "--set", "lora_rank=4", "--set", "n_capability=7"])
    assert (paper.settings.lora_rank, paper.n_capability, paper.gamma, paper.eigh_dtype) == \
        (4, 7, 0.9, "float32")
    assert EditConfig.from_dict(paper.to_dict()) == paper


MISTAKES = {
    "unknown key": (["--method", "memit", "--set", "lora_rnak=4"],
                    "argument --set: unknown setting 'lora_rnak' for method memit"),
    "another method's key": (["--method", "memit", "--set", "lora_rank=4"],
                             "argument --set: lora_rank=4 is a LoRA setting (read by lora, lora_seq); "
                             "method memit reads: cf_lambda, cf_l2"),
    "a method without settings": (["--method", "ft", "--set", "ultra_lr=1e-4"],
                                  "is an UltraEdit setting (read by ultraedit); "
                                  "method ft reads: only the shared"),
    "not an integer": (["--method", "lora", "--set", "lora_rank=four"],
                       "argument --set: lora_rank='four': expected an integer"),
    "not a choice": (["--method", "lora", "--set", "lora_variant=best"],
                     "argument --set: lora_variant='best': expected one of 'official', 'allocate'"),
    "not a bool": (["--method", "crispedit_seq", "--set", "seq_mask_prompt=maybe"],
                   "seq_mask_prompt='maybe': expected true or false"),
    "out of range": (["--method", "adam_nscl", "--set", "nscl_gamma=2"],
                     "argument --set: nscl_gamma must be in (0, 1], got 2.0"),
    "shared field out of range": (["--set", "gamma=1.5"], "argument --set: gamma must lie in (0, 1]"),
    "shared field not a choice": (["--set", "rule=strict"], "rule='strict': expected one of 'paper', 'code'"),
    "no value": (["--set", "lora_rank"], "argument --set: expected KEY=VALUE"),
    "twice": (["--method", "lora", "--set", "lora_rank=4", "--set", "lora_rank=5"],
              "lora_rank is also given by --set"),
    "and by a flag": (["--gamma", "0.5", "--set", "gamma=0.6"], "gamma is also given by --gamma"),
    "seed": (["--set", "seed=3"], "seed has its own flag; pass --seed"),
    "method": (["--set", "method=ft"], "method has its own flag; pass --method"),
}


@pytest.fixture()
def no_model(monkeypatch):
    """Loading a model or reading the edit data fails the test: --set is checked before both."""
    import crispedit_lite.reproduction.experiment as experiment

    def refuse(*args, **kwargs):
        raise AssertionError("the command went past its checks")

    monkeypatch.setattr(experiment, "load_for_experiment", refuse)
    monkeypatch.setattr(experiment, "load_requests", refuse)


@pytest.mark.parametrize("name", MISTAKES)
def test_a_set_mistake_is_one_line_exit_2_before_the_model_loads(name, no_model, tmp_path, capsys):
    args, phrase = MISTAKES[name]
    code = main([*BASE, "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), *args])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("error: "), err
    assert phrase in lines[0] and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_set_mistake_through_the_entry_point(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "crispedit_lite", *BASE, "--method", "alphaedit",
                          "--set", "cf_nullspace_rule=relative", "--results-dir", str(tmp_path / "r")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 2 and run.stdout == "" and "Traceback" not in run.stderr
    assert run.stderr.strip() == ("error: argument --set: cf_nullspace_rule='relative': expected one of "
                                  "'absolute', 'energy'")
    assert not Path(tmp_path / "r").exists()
