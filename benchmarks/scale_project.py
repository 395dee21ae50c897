"""``scale.py`` section ``project``: one layer's projection in every form (reference, low-rank, fast)."""

from __future__ import annotations

import torch
from scale_common import NOTE_SPECTRA, edit_names, log, matmul_precision

from crispedit_lite.fastproject import FastProjector, lowrank_project, projection_flops
from crispedit_lite.projector import KroneckerProjector


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def section_project(ctx) -> dict:
    p, b, dev = ctx["p"], ctx["bench"], ctx["device"]
    name0 = edit_names(p)[0]
    T = p["step_batch"] * p["step_seq"]
    gen = torch.Generator(device=dev).manual_seed(2)
    d_out, d_in = p["hidden"], p["inter"]
    gout = torch.randn(T, d_out, device=dev, generator=gen).to(ctx["dtype"])
    ain = torch.randn(T, d_in, device=dev, generator=gen).to(ctx["dtype"])
    G = gout.T @ ain  # the bf16 weight gradient autograd would hand over
    fact = (gout, ain)
    variants = {}
    bf16 = ctx["cuda"]  # bf16 GEMMs only where they are the fast path

    def add(key, fn, ref, flops, precision="highest", extra=None):
        with matmul_precision(precision):
            r = b.time(fn)
            out = fn()
        r.pop("samples_s", None)
        r["rel_err"] = _rel(out, ref)
        r["flops"] = flops
        r["tflops_per_s"] = flops / r["median_s"] / 1e12
        if extra:
            r.update(extra)
        variants[key] = r
        log(
            f"  project {key:38s} {r['median_s'] * 1e3:9.3f} ms  {r['tflops_per_s']:7.2f} TFLOP/s  "
            f"rel_err {r['rel_err']:.1e}"
        )

    def ref_of(kp):
        with matmul_precision("highest"):
            return kp.project(G.float())

    def bf16_copy(kp):
        return KroneckerProjector(
            kp.U_in.to(torch.bfloat16),
            kp.U_out.to(torch.bfloat16),
            kp.mask,
            kp.eig_in,
            kp.eig_out,
            kp.gamma,
            kp.threshold,
            kp.rule,
        )

    g_main = ctx["gammas"][-1] if len(ctx["gammas"]) else 0.9
    kp = ctx["projectors"][name0][g_main]
    fl = projection_flops(d_out, d_in, T)
    ref = ref_of(kp)
    add("reference_fp32_ieee", lambda: kp.project(G), ref, fl["reference"], "highest")
    if ctx["cuda"]:
        add("reference_fp32_tf32", lambda: kp.project(G), ref, fl["reference"], "high")
    if bf16:
        kb = bf16_copy(kp)
        add("reference_bf16 (official code)", lambda: kb.project(G), ref, fl["reference"])
    prec = "high" if ctx["cuda"] else "highest"
    add(
        "lowrank_fp32" + ("_tf32" if ctx["cuda"] else ""),
        lambda: lowrank_project(kp, gout, ain),
        ref,
        fl["lowrank"],
        prec,
    )
    if bf16:
        add("lowrank_bf16", lambda: lowrank_project(kb, gout, ain), ref, fl["lowrank"])

    def fast_variants(tag, kp_g):
        refg = ref_of(kp_g)
        dt = torch.bfloat16 if bf16 else torch.float32
        for plan in ("corner", "blocks"):
            fp = FastProjector.from_projector(kp_g, dtype=dt, method=plan, plan=plan)
            flg = fp.flops(T)
            info = {"r_out": fp.r_out, "r_in": fp.r_in, "n_blocks": len(fp.blocks)}
            add(
                f"{tag}_{plan}_G_{'bf16' if bf16 else 'fp32'}",
                lambda fp=fp: fp.project(G),
                refg,
                flg[plan],
                prec,
                info,
            )
            how = fp.choose(T)
            add(
                f"{tag}_{plan}_auto_factors_{'bf16' if bf16 else 'fp32'}",
                lambda fp=fp: fp.project(G, factors=fact),
                refg,
                flg[how],
                prec,
                {**info, "form": how},
            )
        fpa = fp  # the block plan, now free to pick any form by FLOPs
        fpa.method = "auto"
        how = fpa.choose(T)
        add(
            f"{tag}_chooser_{'bf16' if bf16 else 'fp32'}",
            lambda: fpa.project(G, factors=fact),
            refg,
            fpa.flops(T)[how],
            prec,
            {"form": how},
        )

    for g in ctx["gammas"]:
        fast_variants(f"measured_g{g}", ctx["projectors"][name0][g])
        fast_variants(f"synthetic_a{ctx['alpha']}_g{g}", ctx["synthetic"][g])
    return {
        "layer": name0,
        "shape": [d_out, d_in],
        "T_tokens": T,
        "variants": variants,
        "note": "rel_err is against the fp32 (no TF32) reference projection of the same mask. "
        + NOTE_SPECTRA,
    }
