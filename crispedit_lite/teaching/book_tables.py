r"""Markdown tables that book pages include, rendered from committed benchmark JSON.

A book page that is not a notebook cannot compute its numbers, so it includes a Markdown file that a
benchmark script writes from its JSON (MyST ``{include}``); ``tests/book`` checks that the included file
is what this module renders from the committed JSON, so the page and the record cannot drift apart.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crispedit_lite.atomic import write_text_atomic

__all__ = ["ultraedit_eta_tables", "scale_tables", "step_ratio_table", "render_all", "write_all"]


def _fmt_sci(x: float, digits: int = 2) -> str:
    r"""A number for a Markdown table: plain from 0.1 to 10^4, else :math:`m\times10^{e}` in LaTeX."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    if 0.1 <= abs(x) < 1e4:
        return f"{x:.{digits}g}" if abs(x) < 100 else f"{x:.0f}"
    exponent = math.floor(math.log10(abs(x)))
    mantissa = x / 10**exponent
    return f"${mantissa:.1f}\\times10^{{{exponent}}}$"


def _eta(x: float) -> str:
    exponent = round(math.log10(x))
    return f"$10^{{{exponent}}}$" if math.isclose(x, 10.0**exponent) else f"${x:g}$"


def ultraedit_eta_tables(record: Mapping[str, Any], official_eta: float = 1e-6) -> str:
    r"""The :math:`\eta` tables of ``book/ultraedit.md`` from ``benchmarks/ultraedit_eta_sweep.py``'s JSON.

    One table per number of edits: teacher-forced reliability, generalisation and specificity after
    the edit (%), the KL to the base model on held-out text (nats per token) and the perplexity, with
    a line giving the scores before the edit and the command that produced the JSON.

    Rendered into the book's UltraEdit page (``book/_generated/ultraedit_eta_sweep.md``).

    Listed on the book page ``api``.
    """
    rows = list(record["rows"])
    out = [
        f"Produced by `{record['command']}` ({record['created']}); "
        f"model {record['model']}, edit set {record['edit_set']}.",
        "",
    ]
    for n in sorted({r["n_edits"] for r in rows}):
        group = sorted((r for r in rows if r["n_edits"] == n), key=lambda r: r["eta"])
        first = group[0]
        b = first["before"]
        turns = "one turn" if first["chunks"] == 1 else f"{first['chunks']} turns"
        out += [
            f"**{n} edits** ({turns}, {first['key_rows']} target positions per layer, "
            f"{first['layers']} layers). Before the edit: reliability {b['rel']:.1f} %, "
            f"generalisation {b['gen']:.1f} %, specificity {b['spec']:.1f} %, "
            f"perplexity {first['ppl_before']:.2f}.",
            "",
            "| $\\eta$ | TF reliability (%) | TF generalisation (%) | TF specificity (%) "
            "| KL to base (nats) | perplexity |",
            "|---|---|---|---|---|---|",
        ]
        for r in group:
            a = r["after"]
            label = _eta(r["eta"]) + (" (official)" if math.isclose(r["eta"], official_eta) else "")
            out.append(
                f"| {label} | {a['rel']:.1f} | {a['gen']:.1f} | {a['spec']:.1f} "
                f"| {_fmt_sci(r['kl'])} | {_fmt_sci(r['ppl'], 4)} |"
            )
        out.append("")
    return "\n".join(out)


# --- book/performance.md ----------------------------------------------------------------------------

_FORM_NAMES = {
    "ft": "FT (no projection)",
    "reference": "reference (paper: four dense products)",
    "guarded": "**guarded staircase blocks (what `edit()` uses)**",
    "fast_auto": "`FastProjector`, automatic choice",
    "fast_lowrank": "`FastProjector`, low-rank form",
    "fast_blocks": "`FastProjector`, staircase blocks",
    "eigenbasis": "eigenbasis variant (Adam in the rotated coordinates)",
    "reparam": "eigenbasis variant, re-parameterised layer",
}
_STEP_NAMES = [
    ("plain_ft", "plain FT (no projection)"),
    ("crispedit_reference_fp32_tf32_g0.9", "CrispEdit, paper's projection, fp32 with TF32, γ = 0.9"),
    (
        "crispedit_reference_bf16_g0.9 (official code)",
        "CrispEdit, paper's projection in bf16 (official code), γ = 0.9",
    ),
    ("crispedit_fast_measured_g{g}", "CrispEdit, fast forms on the random model's spectra, γ = {g}"),
    ("crispedit_fast_synthetic_g{g}", "CrispEdit, fast forms on a synthetic power-law spectrum, γ = {g}"),
    (
        "eigenbasis_reparam_g{g} (variant)",
        "eigenbasis re-parameterisation (a variant, **not** the paper's optimiser), γ = {g}",
    ),
]


def step_ratio_command(record: Mapping[str, Any]) -> str:
    """The command that repeats a ``benchmarks/step_ratio.py`` run: recorded, or rebuilt from its settings.

    Used by the book's performance page.
    """
    if record.get("command"):
        return str(record["command"])
    forms = ",".join(r["form"] for r in record["rows"])
    return (
        f"python benchmarks/step_ratio.py --forms {forms} --repeats {record['repeats']} "
        f"--gamma {record['gamma']:g} --batch {record['batch']}"
    )


def step_ratio_table(runs: Mapping[str, Mapping[str, Any]]) -> str:
    """Median step and ratio to FT per projection form, one column pair per ``step_ratio`` run.

    Rendered into the book's performance page.

    Listed on the book page ``api``.
    """
    names = list(runs)
    forms = [f for f in _FORM_NAMES if any(f in {r["form"] for r in runs[n]["rows"]} for n in names)]
    head = (
        "| form | "
        + " | ".join(f"median step (s), run {k} | ratio to FT, run {k}" for k in range(1, len(names) + 1))
        + " |"
    )
    out = [head, "|---|" + "---|---|" * len(names)]
    for form in forms:
        cells = []
        for n in names:
            row = {r["form"]: r for r in runs[n]["rows"]}.get(form)
            cells += (
                ["–", "–"] if row is None else [f"{row['median_s']:.2f}", f"{row['crispedit_over_ft']:.2f}"]
            )
        out.append(f"| {_FORM_NAMES[form]} | " + " | ".join(cells) + " |")
    out.append("")
    for k, n in enumerate(names, 1):
        r = runs[n]
        out.append(
            f"Run {k} ({r['created']}, {r['threads']} thread(s), {r['repeats']} repeats, batch "
            f"{r['batch']}, γ = {r['gamma']:g}): `{step_ratio_command(r)}`, "
            f"JSON `crispedit_lite/resources/results/{n}`."
        )
        out.append("")
    return "\n".join(out)


def _ms(x: float) -> str:
    return f"{1e3 * x:.1f} ms"


def scale_tables(
    record: Mapping[str, Any], llama: str = "llama3-8b", qwen: str = "qwen2.5-1.5b"
) -> dict[str, str]:
    """The tables of the performance page from ``benchmarks/scale.py``'s JSON.

    Returns the setup lines, LLaMA-3-8B's phases, edit steps and schedule, and the Qwen-2.5-1.5B summary.

    Rendered into the book's performance page.

    Listed on the book page ``api``.
    """
    hw, st = record["hardware"], record["settings"]
    command = re.sub(r"\s--out\s+\S+", "", record["command"])
    setup = (
        f"- **Device**: one {hw['gpu']} ({hw['gpu_mem_GiB']:.1f} GiB, {hw['sm_count']} SMs), CUDA "
        f"{hw['cuda']}, torch {hw['torch']}, transformers {hw['transformers']}, "
        f"{str(st['dtype']).replace('torch.', '')} weights; **date**: {record['date'][:10]}.\n"
        f"- **Command**: `{command}`; every time is a median over {st['repeats']} repeats after "
        f"{st['warmup']} warm-ups, with the device synchronised.\n"
    )
    p = record["presets"][llama]
    k, proj = p["kfac"], p["project"]["variants"]
    eighs = [v["eigh_layer_s"] for v in p["eigh"]["layers"].values()]
    med = sorted(eighs)[len(eighs) // 2]
    d_in = next(iter(p["eigh"]["layers"].values()))["eigh_A_dim"]
    d_out = next(iter(p["eigh"]["layers"].values()))["eigh_S_dim"]
    ref, bf16 = proj["reference_fp32_ieee"], proj["reference_bf16 (official code)"]
    phases = "\n".join(
        [
            "| phase | measured | note |",
            "|---|---|---|",
            f"| K-FAC collection ({len(eighs)} layers, one pass) | {k['kfac_tokens_per_s']:,.0f} tokens/s "
            "| plain "
            f"forward+backward of the same batches: {k['fwdbwd_tokens_per_s']:,.0f} tokens/s, ratio "
            f"**{k['kfac_over_fwdbwd']:.2f}** |",
            f"| eigendecomposition, fp32 `eigh` | {med:.2f} s per layer (median), {sum(eighs):.1f} s for "
            f"{len(eighs)} layers | $\\mathbf A$ is {d_in}², $\\mathbf S$ {d_out}² |",
            f"| one projection, paper's 4 dense products, strict fp32 | {_ms(ref['median_s'])} per layer | "
            f"{ref['flops'] / 1e12:.2f} TFLOP each |",
            f"| same with TF32 | {_ms(proj['reference_fp32_tf32']['median_s'])} per layer | |",
            f"| same in bf16 (the official code's choice) | {_ms(bf16['median_s'])} "
            f"per layer | relative error {bf16['rel_err']:.1e} vs fp64 |",
            "| low-rank gradient form (from per-token factors), bf16 | "
            f"{_ms(proj['lowrank_bf16']['median_s'])} per layer | exact rewrite (form (a) above) |",
            "",
        ]
    )
    sv, sched = p["step"]["variants"], p["schedule"]["variants"]
    gammas = [f"{g:g}" for g in st["gammas"]]
    layer = min(int(re.search(r"layers\.(\d+)\.", n).group(1)) for n in p["step"]["trainable"])
    steps = [
        f"Edit step (batch {p['step']['batch']} × {p['step']['seq']} tokens, forward + backward to layer "
        f"{layer} + Adam), relative to plain FT:",
        "",
        "| variant | step | × plain FT | peak memory |",
        "|---|---|---|---|",
    ]
    sched_rows = ["| variant | training | with eigendecompositions |", "|---|---|---|"]
    for key, label in _STEP_NAMES:
        keys = [key.format(g=g) for g in gammas] if "{g}" in key else [key]
        keys = [x for x in keys if x in sv]
        if not keys:
            continue
        lab = label.format(g=" / ".join(gammas)) if "{g}" in label else label
        t = " / ".join(_ms(sv[x]["median_s"]) for x in keys)
        ratio = " / ".join(f"{sv[x]['ratio_to_plain_ft']:.2f}" for x in keys)
        if key == "plain_ft":
            ratio = (
                f"1.00 (repeat: {_ms(sv['plain_ft_repeat']['median_s'])})"
                if "plain_ft_repeat" in sv
                else "1.00"
            )
        mem = " / ".join(f"{sv[x]['peak_mem_GiB']:.1f}" for x in keys) + " GiB"
        steps.append(f"| {lab} | {t} | {ratio} | {mem} |")
        sched_rows.append(
            f"| {lab} | "
            + " / ".join(f"{sched[x]['train_s']:.0f} s" for x in keys)
            + " | "
            + " / ".join(f"{sched[x]['with_eigh_s']:.0f} s" for x in keys)
            + " |"
        )
    sp = p["schedule"]
    schedule = (
        f"{sp['n_edits']:,} edits at paper settings ({sp['epochs']} epochs × {sp['steps_per_epoch']} steps "
        f"of {sp['batch']} = {sp['steps']:,} steps), **extrapolated**: {sp['how']}.\n\n"
        + "\n".join(sched_rows)
        + "\n"
    )
    q = record["presets"][qwen]
    qe = [v["eigh_layer_s"] for v in q["eigh"]["layers"].values()]
    qv, qs = q["project"]["variants"], q["step"]["variants"]
    ratios = [v["ratio_to_plain_ft"] for n, v in qs.items() if n.startswith(("crispedit", "eigenbasis"))]
    qwen_text = (
        f"K-FAC {q['kfac']['kfac_tokens_per_s']:,.0f} tokens/s vs {q['kfac']['fwdbwd_tokens_per_s']:,.0f} "
        f"tokens/s forward+backward (ratio {q['kfac']['kfac_over_fwdbwd']:.2f}); `eigh` "
        f"{sorted(qe)[len(qe) // 2]:.2f} s per layer; one projection "
        f"{_ms(qv['reference_fp32_ieee']['median_s'])} strict fp32, "
        f"{_ms(qv['reference_fp32_tf32']['median_s'])} "
        f"TF32, {_ms(qv['reference_bf16 (official code)']['median_s'])} bf16; every CrispEdit step variant "
        f"within {min(ratios):.2f}–{max(ratios):.2f}× of plain FT ({_ms(qs['plain_ft']['median_s'])} at "
        f"batch {q['step']['batch']}).\n"
    )
    return {
        "setup": setup,
        "llama_phases": phases,
        "llama_steps": "\n".join(steps) + "\n",
        "llama_schedule": schedule,
        "qwen": qwen_text,
    }


def rehearsal_line(record: Mapping[str, Any]) -> str:
    """The timings of the CPU rehearsal of the command line (a results JSON of ``run_experiment``).

    Rendered into the book's performance page.
    """
    t = record["timings"]
    epochs = record["edit"]["config"]["epochs"]
    return (
        f"The edit took {t['total_s']:.0f} s (K-FAC {t['kfac_s']:.0f} s, eigendecompositions "
        f"{t['eigh_s']:.1f} s, {epochs} epochs of training {t['train_s']:.0f} s), and each evaluation "
        f"about {(t['eval_before_s'] + t['eval_after_s']) / 2:.0f} s.\n"
    )


# --- every generated include ------------------------------------------------------------------------

GENERATED_DIR = Path("book") / "_generated"
SCALE_JSON = "crispedit_lite/resources/results/scale-h200-2026-11-30.json"
STEP_RATIO_JSONS = (
    "step-ratio-cpu-smollm2-135m-instruct-2026-12-01.json",
    "step-ratio-cpu-smollm2-135m-instruct-2026-12-01-guarded.json",
)
REHEARSAL_JSON = "crispedit_lite/resources/results/cli-cpu-rehearsal-smollm2-shape-2026-11-30.json"
ULTRAEDIT_JSON = "crispedit_lite/resources/results/ultraedit-eta-sweep-smollm2.json"


def render_all(root: str | Path) -> dict[str, str]:
    """``{file name under book/_generated: text}`` rendered from the committed JSON under ``root``.

    Checked against the files that the book's performance page and the book's UltraEdit page include.

    Listed on the book page ``api``.
    """
    root = Path(root)

    def load(rel: str) -> Any:
        return json.loads((root / rel).read_text(encoding="utf-8"))

    out = {"ultraedit_eta_sweep.md": ultraedit_eta_tables(load(ULTRAEDIT_JSON))}
    for name, text in scale_tables(load(SCALE_JSON)).items():
        out[f"performance_{name}.md"] = text
    out["performance_step_ratio.md"] = step_ratio_table(
        {n: load(f"crispedit_lite/resources/results/{n}") for n in STEP_RATIO_JSONS}
    )
    out["performance_rehearsal.md"] = rehearsal_line(load(REHEARSAL_JSON))
    return out


def write_all(root: str | Path) -> list[Path]:
    """Write every generated include (atomically) and return the paths.

    Writes the includes of the book's performance page and the book's UltraEdit page.

    Listed on the book page ``api``.
    """
    root = Path(root)
    written = []
    for name, text in render_all(root).items():
        path = root / GENERATED_DIR / name
        written.append(write_text_atomic(path, text))
    return written


if __name__ == "__main__":  # python -m crispedit_lite.teaching.book_tables [root]
    import sys

    for p in write_all(sys.argv[1] if len(sys.argv) > 1 else "."):
        print(f"wrote {p}")
