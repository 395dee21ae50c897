"""``scale.py`` section ``eigh``: eigendecompositions, the energy rule, protected corners and block plans."""

from __future__ import annotations

import statistics
import time

import torch
from scale_common import NOTE_SPECTRA, edit_names, log

from crispedit_lite.energy import _eigh, energy_mask
from crispedit_lite.fastproject import plan_blocks, projection_flops, staircase
from crispedit_lite.projector import KroneckerProjector


def _wishart_factors(p, device):
    gen = torch.Generator(device=device).manual_seed(1)
    out = {}
    for n in edit_names(p):
        xa = torch.randn(2048, p["inter"], device=device, generator=gen)
        xs = torch.randn(2048, p["hidden"], device=device, generator=gen)
        out[n] = type("F", (), {"A": xa.T @ xa / 2048, "S": xs.T @ xs / 2048})()
    return out


def _mask_from_eigs(eig_out, eig_in, gamma, rule="code", rtol=1e-9):
    """The library's energy rule (``crispedit_lite.energy.energy_mask``) on all products, on their device."""
    return energy_mask(torch.outer(eig_out.to(torch.float64), eig_in.to(torch.float64)), gamma, rule, rtol)


def _corner_stats(kp: KroneckerProjector, T: int) -> dict:
    """Protected corner, block plan and relative FLOPs from the mask alone (no eigenbasis copies)."""
    po = torch.sort(kp.eig_out.double().cpu(), descending=True, stable=True).indices
    pi = torch.sort(kp.eig_in.double().cpu(), descending=True, stable=True).indices
    mask = kp.mask[po.to(kp.mask.device)][:, pi.to(kp.mask.device)]  # sort on the mask's device
    widths, r_out, r_in = staircase(~mask)
    d_out, d_in = mask.shape
    blocks = plan_blocks(widths, d_out, d_in)
    fl = projection_flops(d_out, d_in, T, r_out, r_in, blocks=blocks)
    ref = fl["reference"]
    return {
        "r_out": r_out,
        "r_in": r_in,
        "protected_fraction": float((~mask).float().mean()),
        "n_blocks": len(blocks),
        "blocks": [[b.r0, b.r1, b.c0, b.c1] for b in blocks[:64]],
        "cost_vs_reference": {k: v / ref for k, v in fl.items()},
    }


def section_eigh(ctx) -> dict:
    p, b, dev = ctx["p"], ctx["bench"], ctx["device"]
    factors = ctx.get("factors")
    src = "collect_kfac on random tokens (random-init model)"
    if factors is None:
        factors, src = _wishart_factors(p, dev), "Wishart random features (kfac section skipped)"
    T = p["step_batch"] * p["step_seq"]
    _eigh(torch.eye(64, device=dev) + 0.1, "warm-up", torch.float32)  # solver handles, workspace
    b.sync()
    layers, projs = {}, {}
    for name in edit_names(p):
        A = factors[name].A.to(dev, torch.float32)
        S = factors[name].S.to(dev, torch.float32)
        rec = {}
        for key, M in (("A", A), ("S", S)):
            ts = []
            for _ in range(p["eigh_repeats"] if not ctx["quick"] else 1):
                b.sync()
                t0 = time.perf_counter()
                ev, U = _eigh(M, key, torch.float32)
                b.sync()
                ts.append(time.perf_counter() - t0)
            rec[f"eigh_{key}_s"] = statistics.median(ts)
            rec[f"eigh_{key}_dim"] = M.shape[0]
            if key == "A":
                eig_in, U_in = ev, U
            else:
                eig_out, U_out = ev, U
        rec["eigh_layer_s"] = rec["eigh_A_s"] + rec["eigh_S_s"]
        rec["gammas"] = {}
        projs[name] = {}
        for g in ctx["gammas"]:
            t0 = time.perf_counter()
            mask, thr = _mask_from_eigs(eig_out, eig_in, g)
            b.sync()
            rule_s = time.perf_counter() - t0
            kp = KroneckerProjector(
                U_in=U_in,
                U_out=U_out,
                mask=mask,
                eig_in=eig_in,
                eig_out=eig_out,
                gamma=g,
                threshold=thr,
                rule="code",
            )
            projs[name][g] = kp
            st = _corner_stats(kp, T)
            st["energy_rule_s"] = rule_s
            rec["gammas"][str(g)] = st
        layers[name] = rec
        log(
            f"  eigh {name}: A {rec['eigh_A_s']:.3f}s S {rec['eigh_S_s']:.3f}s; "
            + ", ".join(
                f"g={g}: r_out={v['r_out']} r_in={v['r_in']} prot={v['protected_fraction']:.4f}"
                for g, v in rec["gammas"].items()
            )
        )
        del A, S
    ctx["projectors"] = projs
    # synthetic heavy-tailed spectrum on the first layer's (orthogonal) eigenbases
    name0 = edit_names(p)[0]
    kp0 = projs[name0][ctx["gammas"][0]]
    d_out, d_in = kp0.shape
    synth = {}
    ctx["synthetic"] = {}
    for g in ctx["gammas"]:
        # power law lambda_k = k^-alpha, assigned to eigh's ascending column order
        eo = torch.arange(d_out, 0, -1, dtype=torch.float64, device=dev) ** (-ctx["alpha"])
        ei = torch.arange(d_in, 0, -1, dtype=torch.float64, device=dev) ** (-ctx["alpha"])
        mask, thr = _mask_from_eigs(eo, ei, g)
        kp = KroneckerProjector(
            U_in=kp0.U_in,
            U_out=kp0.U_out,
            mask=mask,
            eig_in=ei,
            eig_out=eo,
            gamma=g,
            threshold=thr,
            rule="code",
        )
        ctx["synthetic"][g] = kp
        synth[str(g)] = _corner_stats(kp, T)
        log(
            f"  synthetic alpha={ctx['alpha']} g={g}: r_out={synth[str(g)]['r_out']} "
            f"r_in={synth[str(g)]['r_in']} blocks={synth[str(g)]['n_blocks']} "
            f"cost(blocks)={synth[str(g)]['cost_vs_reference'].get('blocks', float('nan')):.3f}"
        )
    med = statistics.median(v["eigh_layer_s"] for v in layers.values())
    return {
        "factors_source": src,
        "eigh_dtype": "float32",
        "layers": layers,
        "median_eigh_layer_s": med,
        "all_layers_eigh_s": sum(v["eigh_layer_s"] for v in layers.values()),
        "synthetic": {
            "alpha": ctx["alpha"],
            "spectrum": "lambda_k = k^-alpha for both factors",
            "gammas": synth,
        },
        "note": NOTE_SPECTRA,
    }
