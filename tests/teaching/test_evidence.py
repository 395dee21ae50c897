"""crispedit_lite.teaching.evidence and bench_evidence: the project's results as comparison tables."""

from __future__ import annotations

import pytest

from crispedit_lite.reproduction.committed import committed_path
from crispedit_lite.reproduction.inventory import read_committed, result_kind
from crispedit_lite.teaching import bench_evidence, cpu_table, evidence
from tests.helpers import cell_run_record


def _row(method, seed, tf, kl, ppl, spec=50.0, details=None, **config):
    row = {
        "method": method,
        "seed": seed,
        "kl": kl,
        "ppl": ppl,
        "details": details or {},
        "side_by_side": {
            "teacher_forced": {"rel": tf, "gen": tf / 2, "loc": spec},
            "probability": {"rel": tf, "gen": tf, "loc": 40.0},
        },
    }
    if method != "base":
        row["config"] = {
            "gamma": 0.7,
            "lr": 5e-4,
            "n_capability": 32,
            "epochs": 60,
            "batch_size": 8,
            **config,
        }
    return row


def _file(model, rows, created, n_edits=40):
    return {
        "model": model,
        "n_edits": n_edits,
        "seeds": sorted({r["seed"] for r in rows}),
        "rows": rows,
        "created": created,
        "command": f"python benchmarks/cpu_table1.py --model {model}",
    }


@pytest.fixture
def records():
    return {
        "t-a.json": _file(
            "m1",
            [
                _row("base", 0, 10.0, 0.0, 10.0),
                _row("ft", 0, 100.0, 0.02, 11.0),
                _row("crispedit", 0, 100.0, 0.002, 10.1),
                _row("lora", 0, 60.0, 0.3, 20.0),
            ],
            "2026-01-01 10:00",
        ),
        "t-b.json": _file(
            "m1",
            [
                _row("base", 1, 12.0, 0.0, 20.0),
                _row("ft", 1, 100.0, 0.04, 24.0),
                _row("crispedit", 1, 100.0, 0.004, 20.2),
                _row("crispedit", 1, 100.0, 0.001, 20.1, gamma=0.99),
            ],
            "2026-01-01 11:00",
        ),
        # a rerun of LoRA on subset 0, newer, with the regulariser recorded
        "t-lora.json": _file(
            "m1",
            [
                _row("base", 0, 10.0, 0.0, 10.0),
                _row("lora", 0, 70.0, 0.01, 10.5, details={"orth_reg": [0.1, 0.01]}),
            ],
            "2026-02-01 09:00",
        ),
        "t-other-model.json": _file(
            "m2",
            [_row("base", 0, 5.0, 0.0, 30.0), _row("ft", 0, 100.0, 0.1, 33.0)],
            "2026-01-03 10:00",
            n_edits=24,
        ),
        "sweep.json": {"rows": [{"sweep": "gamma", "value": 0.5}]},
    }


def test_groups_by_model_settings_and_newest_rows(records):
    groups = evidence.table1_groups(records)
    assert [(g.model, g.n_edits) for g in groups] == [("m1", 40), ("m2", 24)]  # most editors first
    g = groups[0]
    assert g.files == ["t-a.json", "t-b.json", "t-lora.json"] and g.title == "m1, 40 edits x 2 subsets"
    m = g.means
    assert list(m.index) == ["base", "CrispEdit", "CrispEdit (gamma 0.99)", "FT", "LoRA"]
    assert m.loc["CrispEdit (gamma 0.99)", "setting"] == {"gamma": 0.99}
    assert m.loc["CrispEdit", "KL"] == pytest.approx(0.003) and m.loc["CrispEdit", "subsets"] == 2
    # perplexity change against the same subset's unedited model: (11/10 - 1) and (24/20 - 1)
    assert m.loc["FT", "ΔPPL %"] == pytest.approx(15.0)
    # the newer file's LoRA row replaces the older one; the note goes with the old rows
    lora = g.rows[g.rows["editor"] == "lora"]
    assert (
        len(lora) == 1 and lora["KL"].item() == pytest.approx(0.01) and lora["file"].item() == "t-lora.json"
    )
    assert g.notes() == []
    assert list(g.plain().index) == ["CrispEdit", "FT", "LoRA"]


def test_lora_rows_without_the_regulariser_carry_a_note(records):
    del records["t-lora.json"]
    records["t-b.json"]["note"] = "stopped by hand after subset 1"
    (g, _) = evidence.table1_groups(records)
    files_note, lora_note = g.notes()
    assert files_note == "t-b.json: stopped by hand after subset 1"
    assert "t-a.json" in lora_note and "orth_reg" in lora_note


def test_run_groups_from_command_line_results():
    def run(rid, method, kl, ppl, created):
        r = cell_run_record(rid, method=method, created=created)
        r["metrics"]["before"]["proxies"] = {"perplexity": 10.0}
        r["metrics"]["after"]["proxies"] = {"kl_to_base": kl, "perplexity": ppl}
        return r

    runs = [
        run("a", "crispedit", 0.01, 10.2, "2026-01-01T00:00:00"),
        run("b", "ft", 0.05, 11.0, "2026-01-01T00:00:00"),
        run("c", "ft", 0.04, 10.8, "2026-01-02T00:00:00"),  # newer FT run counts
        run("d", "crispedit", 0.01, 10.2, "2026-01-01T00:00:00"),
    ]
    runs[3]["settings"]["model"] = "other"  # a group of one method compares nothing
    (g,) = evidence.run_groups(runs)
    assert g.source == "runs: counterfact" and g.model == "smollm2-135m-instruct"
    m = g.means
    assert m.loc["FT", "KL"] == pytest.approx(0.04) and m.loc["FT", "ΔPPL %"] == pytest.approx(8.0)
    assert m.loc["CrispEdit", "TF Rel"] == 100.0 and m.loc["CrispEdit", "TF Spec"] == 70.0
    assert len(evidence.run_groups(runs, min_editors=1)) == 2


def test_committed_groups_agree_with_chapter_6s_table():
    records, _ = read_committed("cpu-table1-*.json")
    groups = {g.model: g for g in evidence.table1_groups(records)}
    smol = groups["smollm2-135m-instruct"]
    names = smol.files
    t = cpu_table.load_table([committed_path(n) for n in names])
    reference = cpu_table.summary(t, ["TF Rel", "TF Spec", "KL", "ΔPPL %"])
    seen = [(r["method"], r["seed"]) for n in names for r in records[n]["rows"]]
    repeated = {m for m, s in seen if m != "base" and seen.count((m, s)) > 1}
    mine = smol.means
    for label in reference.index:
        if label == "base" or smol.rows.loc[smol.rows["label"] == label, "editor"].iloc[0] in repeated:
            continue
        for col in ("TF Rel", "TF Spec", "KL", "ΔPPL %"):
            assert mine.loc[label, col] == pytest.approx(reference.loc[label, col]), (label, col)
    gemma = groups["gemma3-270m"].means
    assert set(gemma.index) >= {
        "CrispEdit",
        "FT",
        "Adam-NSCL",
        "CrispEdit (gamma 0.99)",
        "CrispEdit (lr 0.0005)",
    }


def test_bench_tables_from_committed_files():
    records, _ = read_committed()
    of = {
        k: {n: r for n, r in records.items() if result_kind(r, n) == k}
        for k in ("sweeps", "step_ratio", "scale")
    }
    sw = bench_evidence.sweep_frames(of["sweeps"]["ch06-sweeps-smollm2.json"])
    assert list(sw["gamma"]["gamma"]) == sorted(sw["gamma"]["gamma"]) and sw["n"]["n"].iloc[0] == 0
    assert sw["n"]["method"].iloc[0] == "ft" and set(sw["n"]["method"].iloc[1:]) == {"crispedit"}
    steps = bench_evidence.step_ratio_summary(of["step_ratio"])
    for _, r in steps.iterrows():
        rows = {x["form"]: x["crispedit_over_ft"] for x in of["step_ratio"][r["file"]]["rows"]}
        exact = {f: v for f, v in rows.items() if f not in ("ft", *bench_evidence.VARIANT_FORMS)}
        assert r["best / FT"] == min(exact.values()) and r["dense / FT"] == rows["reference"]
    scale = bench_evidence.scale_summary(of["scale"])
    assert set(scale["preset"]) == {"llama3-8b", "qwen2.5-1.5b"}
    assert scale["best variant"].str.startswith("crispedit").all()  # the optimiser variants are left out
    assert (scale["best / FT"] <= scale["official / FT"]).all()


def test_eta_and_long_horizon_summaries():
    eta = bench_evidence.eta_summary(
        {
            "rows": [
                {
                    "eta": 1e-4,
                    "n_edits": 8,
                    "before": {"rel": 4.0},
                    "after": {"rel": 40.0, "spec": 70.0},
                    "kl": 0.01,
                },
                {
                    "eta": 1e-6,
                    "n_edits": 8,
                    "before": {"rel": 4.0},
                    "after": {"rel": 4.0, "spec": 99.0},
                    "kl": 1e-6,
                },
            ]
        }
    )
    assert list(eta["eta"]) == [1e-6, 1e-4] and eta["TF Rel"].max() == 40.0

    def lh(editor, kls, done):
        rows = [
            {
                "edits_applied": 100 * (k + 1),
                "current": {"tf_rel": 90.0},
                "retained": {"tf_rel": 80.0 - k},
                "kl": kl,
                "ppl": 10.0 * (1 + kl),
            }
            for k, kl in enumerate(kls)
        ]
        return {
            "editor": editor,
            "label": editor,
            "stream": {"chunk_size": 100},
            "base": {"ppl": 10.0},
            "rows": rows,
            "done": done,
        }

    df = bench_evidence.long_horizon_summary(
        {"a.json": lh("crispedit_seq", [0.01, 0.02, 0.03], True), "b.json": lh("ft_seq", [0.1, 0.5], False)}
    )
    assert list(df["edits"]) == [200, 200]  # the most edits that both reached
    assert list(df["KL"]) == [0.02, 0.5] and df["ΔPPL %"].iloc[1] == pytest.approx(50.0)
