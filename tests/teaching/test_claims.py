"""The paper's side, the verdict rules and the claims table (teaching.paper_side, verdicts, claims)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crispedit_lite.reproduction.inventory import read_committed, result_kind
from crispedit_lite.reproduction.paper_tables import load_paper_tables, paper_value
from crispedit_lite.teaching import bench_evidence, claims, evidence, paper_side
from crispedit_lite.teaching.bench_claims import cost_claims, sequential_claims, sweep_claims
from crispedit_lite.teaching.editor_claims import editor_claims
from crispedit_lite.teaching.verdicts import HOLDS, NOT, PARTLY, ratio_verdict, trend_verdict

CAPS = paper_side.CAPABILITIES


def test_paper_editors_against_the_transcribed_cells():
    p = paper_side.paper_editors()
    base = np.mean([paper_value(1, "counterfact", "base", c) for c in CAPS])
    crisp = np.mean([paper_value(1, "counterfact", "crispedit", c) for c in CAPS])
    row = p.loc[("counterfact", "crispedit")]
    assert row["capability loss"] == pytest.approx(base - crisp) == pytest.approx(0.84)
    assert row["WILD Rel"] == pytest.approx(
        (
            paper_value(1, "counterfact", "crispedit", "QA Rel")
            + paper_value(1, "counterfact", "crispedit", "NoCtx Rel")
        )
        / 2
    )
    assert row["TF Spec"] == paper_value(3, "counterfact", "crispedit", "TF Spec")
    assert p.loc[("zsre", "base"), "capability loss"] == 0.0
    assert p.loc[("wikibigedit", "locbf_ft"), "capability loss"] < 0  # a gain is a negative loss


def test_paper_sweeps():
    t7 = paper_side.paper_sweep("table7")
    assert t7["setting"].iloc[0] == 0.0 and t7["capability loss"].iloc[0] == pytest.approx(13.0)  # FT
    assert list(t7["setting"]) == sorted(t7["setting"]) and len(t7) == 9
    t8 = paper_side.paper_sweep("table8")
    assert t8.groupby("dataset").size().to_dict() == {"counterfact": 7, "wikibigedit": 7, "zsre": 7}
    zsre = t8[t8["dataset"] == "zsre"].set_index("setting")
    assert zsre.loc[0.7, "QA Rel"] == paper_value(
        8, "zsre", "crispedit", "QA Rel", gamma=0.7, n_capability=10000
    )
    with pytest.raises(ValueError, match="table8' or 'table7"):
        paper_side.paper_sweep("table1")


def test_paper_method():
    assert paper_side.paper_method("memit") == "memit" and paper_side.paper_method("ft_seq") == "ft_seq"
    assert paper_side.paper_method("crispedit+nbhd") is None and paper_side.paper_method("base") is None


@pytest.mark.parametrize(
    ("ratio", "verdict"),
    [(0.05, HOLDS), (0.25, HOLDS), (0.3, PARTLY), (0.99, PARTLY), (1.0, NOT), (3.0, NOT)],
)
def test_ratio_verdict(ratio, verdict):
    assert ratio_verdict(ratio) == verdict


@pytest.mark.parametrize(
    ("values", "verdict"),
    [
        ([1.0, 0.5, 0.2], HOLDS),
        ([1.0, 1.05, 0.5], HOLDS),
        ([1.0, 1.2, 0.5], PARTLY),
        ([1.0, 0.9], PARTLY),
        ([1.0, 1.1], NOT),
    ],
)
def test_trend_verdict(values, verdict):
    assert trend_verdict(values) == verdict


def _group(kl: dict[str, float], rel: dict[str, float], spec: dict[str, float]) -> evidence.EditorGroup:
    rows = [
        {
            "editor": e,
            "label": e,
            "setting": {},
            "seed": 0,
            "TF Rel": rel[e],
            "TF Gen": 0.0,
            "TF Spec": spec[e],
            "PROB Rel": 0.0,
            "PROB Loc": 0.0,
            "KL": kl[e],
            "ΔPPL %": 100 * kl[e],
            "file": "f",
            "created": "",
            "details": {},
        }
        for e in kl
    ]
    return evidence.EditorGroup(model="m", n_edits=40, source="committed", rows=pd.DataFrame(rows))


EDITORS = ("crispedit", "ft", "adam_nscl", "memit", "alphaedit", "ultraedit")


def _verdicts(group):
    paper = load_paper_tables()
    rows = editor_claims([group], paper_side.paper_editors(paper), paper)
    return {r["key"]: (r["verdict"], r["value"]) for r in rows}


def test_editor_claims_follow_the_data():
    kl = dict(zip(EDITORS, (0.001, 0.02, 0.01, 0.005, 0.006, 0.03)))
    rel = dict(zip(EDITORS, (100.0, 100.0, 100.0, 80.0, 90.0, 30.0)))
    spec = dict(zip(EDITORS, (40.0, 20.0, 20.0, 60.0, 50.0, 20.0)))
    v = _verdicts(_group(kl, rel, spec))
    assert v["front"] == (HOLDS, 1.0)
    assert v["damage_vs_ft"] == (HOLDS, pytest.approx(0.05))
    assert v["adam_nscl"] == (HOLDS, pytest.approx(10.0))
    assert v["locality"] == (HOLDS, 0.0)  # MEMIT and AlphaEdit are not among the reliable editors
    assert v["closed_form"] == (HOLDS, 10.0) and v["ultraedit"] == (HOLDS, 70.0)
    # the same editors with CrispEdit damaging more than FT, AlphaEdit reliable and local
    kl["crispedit"], rel["alphaedit"], spec["alphaedit"] = 0.05, 98.0, 70.0
    v = _verdicts(_group(kl, rel, spec))
    assert v["front"][0] == NOT and v["damage_vs_ft"][0] == NOT and v["adam_nscl"][0] == NOT
    assert v["locality"] == (NOT, -30.0) and v["closed_form"] == (PARTLY, 2.0)


def test_editor_claims_need_their_editors():
    g = _group(
        {"crispedit": 0.1, "lora": 0.2}, {"crispedit": 1.0, "lora": 1.0}, {"crispedit": 1.0, "lora": 1.0}
    )
    assert _verdicts(g) == {}


def _sweep(kl_gamma, rel_gamma, kl_n):
    gam = pd.DataFrame({"gamma": [0.5, 0.7, 0.9, 0.99][: len(kl_gamma)], "KL": kl_gamma, "TF Rel": rel_gamma})
    n = pd.DataFrame({"n": [0, 2, 8, 32][: len(kl_n)], "KL": kl_n, "TF Rel": 100.0})
    for d in (gam, n):
        d.attrs.update(model="m", n_edits=12)
    return {"s.json": {"gamma": gam, "n": n}}


def test_sweep_claims():
    rows = {
        r["key"]: r
        for r in sweep_claims(
            _sweep([0.004, 0.003, 0.002, 0.001], [100, 100, 100, 80], [0.03, 0.01, 0.004, 0.002]),
            load_paper_tables(),
        )
    }
    assert rows["gamma_damage"]["verdict"] == HOLDS and rows["gamma_damage"]["value"] == pytest.approx(0.25)
    assert rows["gamma_reliability"]["verdict"] == HOLDS and rows["gamma_reliability"]["value"] == 20.0
    assert rows["n_damage"]["verdict"] == HOLDS and rows["n_damage"]["value"] == pytest.approx(0.002 / 0.03)
    assert "on 2 of 3 datasets" in rows["gamma_damage"]["paper"]  # the paper's own evidence is mixed
    rows = {
        r["key"]: r
        for r in sweep_claims(
            _sweep([0.001, 0.002, 0.003, 0.004], [100] * 4, [0.03, 0.02, 0.025, 0.02]), load_paper_tables()
        )
    }
    assert rows["gamma_damage"]["verdict"] == NOT and rows["gamma_reliability"]["verdict"] == NOT
    assert rows["n_damage"]["verdict"] == PARTLY


def test_cost_and_sequential_claims():
    p = paper_side.paper_editors()
    steps = pd.DataFrame([{"device": "cpu", "model": "m", "best / FT": 1.2, "dense / FT": 1.9}])
    scale = pd.DataFrame(
        [
            {
                "device": "GPU",
                "preset": "llama3-8b",
                "best / FT": 1.3,
                "best variant": "v",
                "official / FT": 1.5,
                "K-FAC / fwd-bwd": 0.8,
                "K-FAC, paper's set (s)": 300.0,
                "eigh, all layers (s)": 8.0,
            }
        ]
    )
    rows = {r["key"]: r for r in cost_claims(steps, scale, p)}
    assert rows["step_cost"]["verdict"] == HOLDS and rows["step_cost"]["value"] == 1.3
    assert "0.78-1.25x" in rows["step_cost"]["paper"] and rows["kfac_once"]["verdict"] == HOLDS
    rows = {
        r["key"]: r
        for r in cost_claims(
            steps.assign(**{"best / FT": 2.0}), scale.assign(**{"best / FT": 1.4, "K-FAC / fwd-bwd": 3.0}), p
        )
    }
    assert rows["step_cost"]["verdict"] == PARTLY and rows["kfac_once"]["verdict"] == NOT
    assert cost_claims(pd.DataFrame(columns=["best / FT"]), pd.DataFrame(columns=["best / FT"]), p) == []
    lh = pd.DataFrame(
        [
            {"editor": "crispedit_seq", "edits": 500, "KL": 0.01, "TF Rel (earlier)": 90.0},
            {"editor": "ft_seq", "edits": 500, "KL": 0.2, "TF Rel (earlier)": 30.0},
        ]
    )
    (row,) = sequential_claims(lh, p)
    assert row["verdict"] == HOLDS and row["value"] == pytest.approx(0.05)
    assert sequential_claims(lh.iloc[:1], p) == []


def test_the_committed_results_verdicts():
    """The verdicts the chapter states, from the committed files (regression)."""
    records, _ = read_committed()
    kinds = {n: result_kind(r, n) for n, r in records.items()}
    of = lambda k: {n: r for n, r in records.items() if kinds[n] == k}  # noqa: E731
    table = claims.claims_table(
        evidence.table1_groups(records),
        {n: bench_evidence.sweep_frames(r) for n, r in of("sweeps").items()},
        bench_evidence.step_ratio_summary(of("step_ratio")),
        bench_evidence.scale_summary(of("scale")),
    )
    assert list(table.columns) == list(claims.CLAIM_COLUMNS)
    smol = table[table["here"].str.startswith("smollm2-135m-instruct, 40 edits")].set_index("key")
    assert smol.loc["front", "verdict"] == HOLDS and smol.loc["front", "evidence"].endswith(": CrispEdit")
    assert smol.loc["damage_vs_ft", "verdict"] == HOLDS and 0.03 < smol.loc["damage_vs_ft", "value"] < 0.12
    assert smol.loc["adam_nscl", "verdict"] == PARTLY and 1.0 < smol.loc["adam_nscl", "value"] < 2.0
    assert smol.loc["locality", "verdict"] == NOT
    gemma = table[table["here"].str.startswith("gemma3-270m")]
    by = {
        (k, h.split("; ")[-1] if "; " in h else ""): v for k, h, v in gemma[["key", "here", "value"]].values
    }
    assert (
        0.7 < by[("damage_vs_ft", "")] < 0.95 and 0.1 < by[("damage_vs_ft", "CrispEdit (gamma 0.99)")] < 0.25
    )
    assert table.set_index("key").loc["n_damage", "verdict"] == HOLDS
    assert table.set_index("key").loc["gamma_reliability", "verdict"] == NOT
