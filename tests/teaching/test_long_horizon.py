"""crispedit_lite.teaching.long_horizon: loading, collapse points, figures and the paper's orderings."""

from __future__ import annotations

import json
import math

import matplotlib
import pytest

from crispedit_lite.editing.registry import get_editor
from crispedit_lite.teaching import long_horizon as lh

matplotlib.use("Agg")


def _row(chunk, tf, retained, ppl, norm=1.01, share=0.5):
    h = {"norm_ratio": norm, "delta_ratio": norm - 1, "cond": 20.0, "cond_max": 25.0, "cond_ratio": 1.1,
         "overlap_out": 0.99, "overlap_in": 0.98, "protected_share": share}
    cur = {"n": 100, "tf_rel": tf, "prob_rel": tf, "tf_gen": tf / 2, "tf_loc": 80.0, "prob_gen": tf / 2,
           "prob_loc": 90.0}
    return {"chunk": chunk, "edits_applied": 100 * (chunk + 1), "current": cur,
            "retained": None if retained is None else {"n": 50, "tf_rel": retained, "prob_rel": retained + 5},
            "kl": 0.01 * (chunk + 1), "ppl": ppl, "health": {"pooled": h, "per_layer": {}},
            "steps": 10, "final_loss": 0.01, "edit_s": 60.0, "eval_s": 20.0}


def _record(editor, rows, sha="ab" * 32, done=True):
    return {"command": f"python benchmarks/long_horizon.py --editors {editor}", "model": "smollm2",
            "editor": editor, "method": editor, "label": get_editor(editor).label, "one_at_a_time": False,
            "config": {}, "modules": ["m"],
            "stream": {"name": "smollm2-stream", "records_sha256": sha, "n_edits": 100 * len(rows),
                       "chunk_size": 100, "n_chunks": len(rows)},
            "evaluation": {"retained_sample": 50}, "base": {"edits_applied": 0, "current": {
                "n": 100, "tf_rel": 10.0, "prob_rel": 0.0, "tf_gen": 10.0, "tf_loc": 100.0, "prob_gen": 0.0,
                "prob_loc": 100.0}, "kl": 0.0, "ppl": 20.0},
            "rows": rows, "done": done, "edit_s": 60.0 * len(rows), "eval_s": 20.0 * len(rows)}


@pytest.fixture()
def files(tmp_path):
    seq = [_row(0, 100, None, 20.5), _row(1, 100, 98, 21.0), _row(2, 99, 97, 21.5)]
    ft = [_row(0, 100, None, 25.0, norm=1.05), _row(1, 100, 40, 35.0, norm=1.1),
          _row(2, 40, 20, 60.0, norm=1.2)]
    paths = []
    for name, rows in (("crispedit_seq", seq), ("ft_seq", ft)):
        p = tmp_path / f"long-horizon-smollm2-{name}.json"
        p.write_text(json.dumps(_record(name, rows)))
        paths.append(p)
    return paths


def test_load_flattens_one_row_per_editor_and_chunk(files):
    df = lh.load_long_horizon(files)
    assert len(df) == 2 * 4 and set(df["editor"]) == {"crispedit_seq", "ft_seq"}
    base = df[df["edits_applied"] == 0]
    assert (base["KL"] == 0).all() and (base["ΔPPL %"] == 0).all() and (base["|W|/|W0|"] == 1).all()
    ft = df[df["editor"] == "ft_seq"].set_index("edits_applied")
    assert ft.loc[300, "ΔPPL %"] == pytest.approx(200.0)  # 60 / 20 - 1
    assert ft.loc[200, "PROB Rel (earlier)"] == 45 and math.isnan(ft.loc[100, "TF Rel (earlier)"])
    assert ft.loc[300, "|W|/|W0|"] == 1.2 and ft.loc[300, "label"] == "FT-Seq"
    assert df.attrs["runs"]["ft_seq"]["done"] and df.attrs["runs"]["ft_seq"]["chunks_done"] == 3


def test_load_refuses_two_files_of_one_editor_or_two_streams(files, tmp_path):
    with pytest.raises(ValueError, match="appears in two files"):
        lh.load_long_horizon([files[0], files[0]])
    other = tmp_path / "other.json"
    other.write_text(json.dumps(_record("memit_seq", [_row(0, 90, None, 20.1)], sha="cd" * 32)))
    with pytest.raises(ValueError, match="different streams"):
        lh.load_long_horizon([files[0], other])


def test_the_committed_files_are_found_in_the_package_data(files, tmp_path, monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    for p in files:
        (results / p.name).write_text(p.read_text())
    (results / "cpu-table1-smollm2.json").write_text("{}")  # another benchmark's file is not read
    monkeypatch.setattr("crispedit_lite.reproduction.committed._folder", lambda: results)
    assert [p.name for p in lh.long_horizon_files()] == sorted(p.name for p in files)
    monkeypatch.setattr("crispedit_lite.reproduction.committed._folder", lambda: tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no long-horizon results"):
        lh.long_horizon_files()


def test_collapse_points_follow_their_rules(files):
    c = lh.collapse_points(lh.load_long_horizon(files))
    assert c.loc["ft_seq", "forgets"] == 200  # retained 40 < 50 after the second chunk
    assert c.loc["ft_seq", "stops learning"] == 300  # TF Rel 40 on the third chunk
    assert c.loc["ft_seq", "breaks"] == 300  # PPL 60 > 2 x 20 (35 is not)
    assert c.loc["crispedit_seq", ["forgets", "stops learning", "breaks"]].isna().all()
    assert c.loc["crispedit_seq", "edits run"] == 300 and c.loc["crispedit_seq", "done"]
    strict = lh.collapse_points(lh.load_long_horizon(files), threshold=99.5, ppl_factor=1.05)
    assert strict.loc["crispedit_seq", "forgets"] == 200 and strict.loc["crispedit_seq", "breaks"] == 300


def test_figures_draw_one_line_per_editor_in_its_colour(files):
    import matplotlib.pyplot as plt

    df = lh.load_long_horizon(files)
    for make, n_panels in ((lh.reliability_figure, 3), (lh.damage_figure, 3), (lh.health_figure, 6)):
        fig = make(df)
        axes = [ax for ax in fig.axes if ax.lines]
        assert len(axes) == n_panels
        for ax in axes:
            colours = {line.get_label(): matplotlib.colors.to_hex(line.get_color()) for line in ax.lines}
            assert colours == {"CrispEdit-Seq": get_editor("crispedit_seq").color,
                               "FT-Seq": get_editor("ft_seq").color}
        plt.close(fig)


def test_paper_rows_are_the_table1_means_over_the_three_datasets():
    p = lh.paper_sequential_rows(["crispedit_seq", "alphaedit_seq", "memit_chunked", "memit_seq", "ultraedit",
                                  "nonexistent"])
    # MEMIT-Seq has no paper row
    assert list(p.index) == ["crispedit_seq", "alphaedit_seq", "memit_chunked", "ultraedit"]
    assert p.loc["crispedit_seq", "paper QA Rel"] == pytest.approx((71.1 + 66.5 + 66.7) / 3)
    assert p.loc["alphaedit_seq", "paper method"] == "alphaedit"  # run in sequential batches of 100
    assert p.loc["memit_chunked", "paper method"] == "memit"  # the paper's MEMIT cells ran chunk by chunk
    assert p.loc["memit_chunked", "paper NoCtx Rel"] == pytest.approx(0.1 / 3)
    # CrispEdit-Seq's five capability benchmarks average 63.52 / 64.00 / 62.88 (paper, Table 1)
    assert p.loc["crispedit_seq", "paper capability"] == pytest.approx((63.52 + 64.00 + 62.88) / 3, abs=1e-6)


def test_orderings_rank_this_run_and_the_paper(files):
    o = lh.orderings(lh.load_long_horizon(files))
    assert o.attrs["edits"] == 300
    assert o.loc["crispedit_seq", "rank retained"] == 1 and o.loc["ft_seq", "rank retained"] == 2
    assert o.loc["crispedit_seq", "rank ΔPPL"] == 1
    assert o.loc["crispedit_seq", "paper rank NoCtx Rel"] == 1  # 50.8 vs FT Sequential's 1.3
    assert o.loc["ft_seq", "paper method"] == "ft_seq"
    with pytest.raises(ValueError, match="no editor has a row"):
        lh.orderings(lh.load_long_horizon(files), at=150)
