"""The editor registry as the one source of editor facts: labels, colours, settings, presets, paper rows.

Every registered editor has a display label and a colour of its own, its own settings class (or none)
whose values are checked field by field, and ``EditConfig`` stays flat: built from flat names, written
as a flat dict, read back from that dict and from every results record committed under
``crispedit_lite/resources/results``.
"""

from __future__ import annotations

import colorsys
import dataclasses
import json
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest

from crispedit_lite.editing import EditConfig, cpu_config, get_editor, paper_config, registry
from crispedit_lite.editing.config import SHARED_FIELDS
from crispedit_lite.editing.paper_presets import paper_values
from crispedit_lite.editing.registry import base_methods, sequential_form, settings_owners
from crispedit_lite.editing.settings import EditorSettings, field_types, parse_value
from crispedit_lite.reproduction.paper_tables import paper_tables_data

ROOT = Path(__file__).resolve().parents[2]
EDITORS = list(registry())
WITH_SETTINGS = [n for n, e in registry().items() if e.settings is not None]


def _rgb(hex_color: str) -> tuple[float, float, float]:
    return tuple(int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5))


def _distance(a: str, b: str) -> float:
    return sum((x - y) ** 2 for x, y in zip(_rgb(a), _rgb(b))) ** 0.5 * 255


# ---- labels, colours, paper rows ----------------------------------------------------------------

def test_every_editor_has_its_own_label_and_colour():
    labels = [e.label for e in registry().values()]
    colors = [e.color.lower() for e in registry().values()]
    assert all(labels) and len(set(labels)) == len(labels)
    assert len(set(colors)) == len(colors)
    assert get_editor("ft_seq").label == "FT-Seq" and get_editor("lora_seq").label == "LoRA-Seq"
    assert get_editor("crispedit_seq").label == "CrispEdit-Seq"


def test_colours_do_not_collide_with_the_other_curves_of_the_book():
    from crispedit_lite.teaching.plotting import METHOD_COLORS, OTHER_COLORS, method_color

    every = {**OTHER_COLORS, **{e.label: e.color for e in registry().values()}}
    names = list(every)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert _distance(every[a], every[b]) > 40, (a, every[a], b, every[b])
    assert METHOD_COLORS == every
    assert method_color("ft_seq") == method_color("FT-Seq") == get_editor("ft_seq").color
    assert method_color("no such method", "k") == "k"


def test_sequential_forms_are_darker_shades_of_their_batch_method():
    pairs = [(n, e.sequential_form) for n, e in registry().items() if e.sequential_form]
    assert {b for b, _ in pairs} >= {"crispedit", "ft", "lora", "memit", "alphaedit"}
    for batch, seq in pairs:
        (hb, lb, sb), (hs, ls, ss) = (colorsys.rgb_to_hls(*_rgb(get_editor(n).color)) for n in (batch, seq))
        assert ls < lb - 0.1, (batch, seq)
        assert sb < 0.05 or min(abs(hb - hs), 1 - abs(hb - hs)) < 0.03, (batch, seq)  # same hue
        assert sequential_form(batch) == seq and sequential_form(seq) == seq
    with pytest.raises(ValueError, match="'locbf_ft' has no sequential form"):
        sequential_form("locbf_ft")
    assert "ultraedit" in base_methods() and not set(base_methods()) & {s for _, s in pairs}


def test_paper_rows_are_the_transcribed_row_texts_of_table1():
    rows = {r["method"]: r["label"] for r in paper_tables_data()["rows"] if r["table"] == "table1"}
    for name, e in registry().items():
        if e.paper_row:
            assert rows[name] == e.paper_row, name
    assert {m for m in rows if m != "base"} == {n for n, e in registry().items() if e.paper_row}
    assert get_editor("ft_seq").paper_row == "FT Sequential"


def test_cpu_table_labels_come_from_the_registry():
    from crispedit_lite.teaching import cpu_table

    labels = cpu_table.LABELS
    assert labels["ft_seq"] == "FT-Seq" and labels["crispedit+nbhd"] == "CrispEdit + nbhd texts"
    assert all(cpu_table.label(n) == e.label for n, e in registry().items())
    assert cpu_table.label("base") == "base" and cpu_table.label("unheard") == "unheard"


# ---- settings classes -----------------------------------------------------------------------------

def test_settings_classes_are_frozen_checked_and_do_not_shadow_shared_fields():
    assert {"crispedit", "ft", "ft_seq"} <= {n for n, e in registry().items() if e.settings is None}
    assert get_editor("memit").settings is get_editor("alphaedit_seq").settings
    assert get_editor("lora").settings is get_editor("lora_seq").settings
    for name in WITH_SETTINGS:
        cls = get_editor(name).settings
        assert issubclass(cls, EditorSettings) and cls.__dataclass_params__.frozen
        assert not set(cls.field_names()) & set(SHARED_FIELDS) and "method" not in cls.field_names()
        default = cls()
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(default, cls.field_names()[0], None)
        paper = cls(**cls.paper)  # the paper's values are valid settings
        assert set(cls.paper) <= set(cls.field_names()) and paper.to_dict() == {**default.to_dict(), **{
            k: list(v) if isinstance(v, tuple) else v for k, v in cls.paper.items()}}


def _wrong_value(tp: Any) -> Any:
    """A value of the wrong type for annotation ``tp``."""
    inner = [a for a in get_args(tp) if a is not type(None)][0] if get_origin(tp) is not None and \
        type(None) in get_args(tp) else tp
    if get_origin(inner) is Literal:
        return "no-such-choice"
    if get_origin(inner) is tuple:
        return 3
    return {bool: "yes", int: "three", float: "half", str: 3}[inner]


@pytest.mark.parametrize("name, field", [(n, f) for n in WITH_SETTINGS
                                         for f in get_editor(n).settings.field_names()])
def test_every_setting_rejects_a_value_of_the_wrong_type_in_one_line_naming_it(name, field):
    cls = get_editor(name).settings
    with pytest.raises(ValueError) as err:
        cls(**{field: _wrong_value(field_types(cls)[field])})
    assert str(err.value).startswith(f"{field} must be ") and "\n" not in str(err.value)
    with pytest.raises(ValueError, match=field):  # the same through EditConfig's flat names
        EditConfig(name, **{field: _wrong_value(field_types(cls)[field])})


@pytest.mark.parametrize("method, changes, match", [
    ("lora", {"lora_rank": 0}, "lora_rank must be a positive integer, got 0"),
    ("lora", {"lora_dropout": 1.0}, r"lora_dropout must be in \[0, 1\)"),
    ("lora_seq", {"lora_targets": []}, "lora_targets must be a non-empty list"),
    ("adam_nscl", {"nscl_gamma": 1.5}, r"nscl_gamma must be in \(0, 1\], got 1.5"),
    ("adam_nscl", {"nscl_early_stop": -1.0}, "nscl_early_stop must be >= 0"),
    ("memit", {"cf_lambda": -1.0}, "cf_lambda must be >= 0"),
    ("alphaedit", {"cf_nullspace_gamma": 0.0}, r"cf_nullspace_gamma must be in \(0, 1\]"),
    ("alphaedit_seq", {"cf_v_steps": 0}, "cf_v_steps must be positive"),
    ("ultraedit", {"ultra_lr": 0.0}, "ultra_lr must be positive"),
    ("locbf_ft", {"locbf_layer": -1}, "locbf_layer must be a non-negative layer index"),
    ("crispedit_seq", {"seq_mask_prompt": "yes"}, "seq_mask_prompt must be true or false"),
])
def test_range_checks_name_the_setting_and_what_was_expected(method, changes, match):
    with pytest.raises(ValueError, match=match):
        EditConfig(method, **changes)


def test_parse_value_reads_each_type_from_text():
    from crispedit_lite.editing.editors.lora import LoraSettings

    types = field_types(LoraSettings)
    assert parse_value("lora_targets", "q_proj, k_proj", types["lora_targets"]) == ("q_proj", "k_proj")
    assert parse_value("lora_variant", "allocate", types["lora_variant"]) == "allocate"
    assert parse_value("cf_v_steps", "none", int | None) is None and parse_value("x", "yes", bool) is True
    for text, tp, match in (("abc", int, "x='abc': expected an integer"),
                            ("1.5", int, "expected an integer"), ("maybe", bool, "expected true or false"),
                            ("fast-ish", types["lora_variant"], "expected one of 'official', 'allocate'")):
        with pytest.raises(ValueError, match=match):
            parse_value("x", text, tp)


# ---- EditConfig: flat construction, flat dict, old records ---------------------------------------

def test_flat_names_go_to_the_methods_settings_and_other_methods_names_are_errors():
    cfg = EditConfig(method="lora", lora_rank=4)
    assert cfg.settings.lora_rank == 4 and cfg.lora_rank == 4 and cfg.settings.lora_alpha == 32
    assert cpu_config("memit", cf_lambda=1.5e3).settings.cf_lambda == 1500.0
    assert EditConfig(method="crispedit").settings is None
    assert EditConfig(method="lora_seq", settings={"lora_alpha": 16}).settings.lora_alpha == 16
    with pytest.raises(ValueError) as err:
        EditConfig(method="memit", lora_rank=4)
    msg = str(err.value)
    assert "lora_rank=4 is a LoRA setting (read by lora, lora_seq); method memit reads: cf_lambda" in msg
    assert "\n" not in msg
    with pytest.raises(ValueError, match="unknown setting 'lora_rnak' for method lora .did you mean"):
        EditConfig(method="lora", lora_rnak=4)
    with pytest.raises(ValueError, match="method ft reads: only the shared settings"):
        cpu_config("ft", ultra_lr=1e-4)
    with pytest.raises(AttributeError, match="alphaedit_seq read it"):
        _ = cfg.cf_lambda
    with pytest.raises(ValueError, match="extra"):
        EditConfig(method="crispedit", extra={})  # removed: nobody read it


def test_replace_and_with_keep_or_reset_the_settings():
    cfg = EditConfig(method="lora", lora_rank=4)
    assert cfg.with_(lora_alpha=8).settings.lora_rank == 4 and cfg.with_(lora_alpha=8).lora_alpha == 8
    assert cfg.with_(method="lora_seq").settings == cfg.settings  # the same settings class
    assert dataclasses.replace(EditConfig("crispedit_seq"), method="crispedit").settings is None
    with pytest.raises(ValueError, match="does not read LoraSettings .lora_rank changed"):
        cfg.with_(method="memit")


@pytest.mark.parametrize("method", EDITORS)
def test_to_dict_is_flat_with_the_shared_fields_and_the_methods_own_settings(method):
    cfg = cpu_config(method, seed=3, layers=(1, 2))
    d = cfg.to_dict()
    own = get_editor(method).settings.field_names() if get_editor(method).settings else ()
    assert list(d) == ["method", *SHARED_FIELDS, *own]
    assert not any(isinstance(v, (dict, tuple, EditorSettings)) for v in d.values())
    back = EditConfig.from_dict(json.loads(json.dumps(d)))
    assert back == cfg and back.to_dict() == d


def test_non_default_settings_round_trip():
    for cfg in (EditConfig("lora_seq", lora_targets=["k_proj"], lora_variant="allocate"),
                EditConfig("alphaedit", cf_nullspace_rule="energy", cf_v_steps=7),
                EditConfig("ultraedit", ultra_token="all", ultra_lr=1e-4),
                EditConfig("locbf_ft", locbf_layer=3)):
        assert EditConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def _recorded_configs() -> list[tuple[str, dict]]:
    """Every EditConfig dict recorded in the committed results JSON (``config`` / ``edit_config``)."""
    found: list[tuple[str, dict]] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("config", "edit_config") and isinstance(v, dict) and "method" in v:
                    found.append((where, v))
                walk(v, where)
        elif isinstance(node, list):
            for v in node:
                walk(v, where)

    for path in sorted((ROOT / "crispedit_lite" / "resources" / "results").glob("*.json")):
        walk(json.loads(path.read_text()), path.name)
    return found


def test_every_config_recorded_in_the_committed_results_loads():
    records = _recorded_configs()
    assert len(records) >= 20 and {r["method"] for _, r in records} >= {"crispedit", "memit", "ultraedit"}
    keys = set().union(*(r for _, r in records))
    assert {"extra", "lora_rank", "cf_lambda", "ultra_lr"} <= keys  # the old flat records
    for where, record in records:
        cfg = EditConfig.from_dict(record)
        assert cfg.method == record["method"], where
        own = get_editor(cfg.method).settings.field_names() if get_editor(cfg.method).settings else ()
        for key in (*SHARED_FIELDS, *own):
            if key in record:
                expected = tuple(record[key]) if isinstance(record[key], list) else record[key]
                assert getattr(cfg, key) == expected, (where, key)
        ignored = set(record) - {"method", "extra", *SHARED_FIELDS, *own}
        assert all(settings_owners(k) for k in ignored), (where, ignored)  # other methods' settings only
    ultra = next(r for _, r in records if r["method"] == "ultraedit" and r["ultra_lr"] != 1e-6)
    assert EditConfig.from_dict(ultra).settings.ultra_lr == ultra["ultra_lr"]
    with pytest.raises(ValueError, match="unknown setting 'gama'"):
        EditConfig.from_dict({"method": "crispedit", "gama": 0.5})


# ---- the paper's (n, gamma) are the editors' ------------------------------------------------------

def test_paper_values_are_read_from_the_editors():
    assert paper_values("crispedit_seq", "wiki")["n_capability"] == 200
    assert (paper_values("ft", "counterfact")["gamma"], paper_values("ft", "counterfact")["n_capability"]) \
        == (0.9, 10_000)  # a method without values of its own: CrispEdit's
    seq = get_editor("crispedit_seq").paper_n_gamma
    assert paper_config("crispedit_seq", "zsre", model="Qwen/Qwen2.5-1.5B-Instruct").gamma == \
        seq["qwen2.5-1.5b"]["zsre"][1]
    for e in registry().values():
        for family, table in e.paper_n_gamma.items():
            assert set(table) == {"zsre", "zsre10k", "counterfact", "wikibigedit"}, (e.name, family)
