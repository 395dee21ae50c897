#!/usr/bin/env python
"""CrispEdit at real model shapes: K-FAC, eigh, projection variants, step time, a 3,000-edit schedule.

Randomly initialised LLaMA-3-8B / Qwen-2.5-1.5B-shaped models (timings only; random weights say nothing
about accuracy, and give unrealistic curvature spectra). See benchmarks/README.md for every field.

    python benchmarks/scale.py --preset llama3-8b qwen2.5-1.5b          # on a GPU (~3-5 min on an H200)
    OMP_NUM_THREADS=1 python benchmarks/scale.py --preset tiny --device cpu [--quick]   # CPU smoke run
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import platform
import re
import statistics
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "crispedit_lite" / "resources" / "results"  # package data

from crispedit_lite.energy import _editable, _eigh, energy_threshold  # noqa: E402
from crispedit_lite.fastproject import (  # noqa: E402
    EigenbasisLinear,
    FastProjector,
    TokenFactorCapture,
    lowrank_project,
    plan_blocks,
    projection_flops,
    staircase,
)
from crispedit_lite.kfac import collect_kfac  # noqa: E402
from crispedit_lite.optim import ProjectedAdam  # noqa: E402
from crispedit_lite.projector import KroneckerProjector  # noqa: E402

WEIGHTS = "random init (timings only; no accuracy)"
N_EDITS, EPOCHS, BATCH = 3000, 25, 32
PAPER_TIMES = {
    "source": "CrispEdit Table 1 (hardware not stated in the paper's text; v1 says an NVIDIA A40)",
    "CrispEdit ZsRE": "4m 6s",
    "CrispEdit CounterFact": "3m 17s",
    "CrispEdit WikiBigEdit": "6m 29s",
}

PRESETS = {
    "llama3-8b": dict(
        arch="llama",
        hidden=4096,
        inter=14336,
        layers=32,
        heads=32,
        kv=8,
        vocab=128256,
        edit_layers=[19, 20, 21, 22, 23],
        tie=False,
        kfac_seq=512,
        kfac_batch=4,
        kfac_batches=6,
        step_batch=BATCH,
        step_seq=32,
        prompt_len=24,
        eigh_repeats=2,
    ),
    "qwen2.5-1.5b": dict(
        arch="qwen2",
        hidden=1536,
        inter=8960,
        layers=28,
        heads=12,
        kv=2,
        vocab=151936,
        edit_layers=[4, 5, 6],
        tie=True,
        kfac_seq=512,
        kfac_batch=4,
        kfac_batches=6,
        step_batch=BATCH,
        step_seq=32,
        prompt_len=24,
        eigh_repeats=2,
    ),
    "tiny": dict(
        arch="llama",
        hidden=64,
        inter=176,
        layers=4,
        heads=4,
        kv=2,
        vocab=512,
        edit_layers=[1, 2],
        tie=False,
        kfac_seq=32,
        kfac_batch=2,
        kfac_batches=4,
        step_batch=8,
        step_seq=16,
        prompt_len=10,
        eigh_repeats=1,
    ),
}
SECTIONS = ["build", "kfac", "eigh", "project", "step", "schedule"]
NOTE_SPECTRA = (
    "random weights give unrealistic curvature spectra (near-flat, no massive activations): "
    "the protected corner measured on them is NOT what a trained model gives; the synthetic "
    "power-law spectrum is a stand-in for a heavy-tailed one. Measure r_out/r_in on real "
    "factors before relying on the corner/block forms."
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Bench:
    def __init__(self, device: torch.device, warmup: int, repeats: int) -> None:
        self.device, self.warmup, self.repeats = device, warmup, repeats
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def reset_peak(self) -> float | None:
        if not self.cuda:
            return None
        self.sync()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**30

    def peak(self) -> float | None:
        if not self.cuda:
            return None
        self.sync()
        return torch.cuda.max_memory_allocated() / 2**30

    def time(self, fn, warmup: int | None = None, repeats: int | None = None) -> dict:
        """Median wall time of ``fn`` (device-synchronised), after warm-up; plus peak memory."""
        base = self.reset_peak()
        for _ in range(self.warmup if warmup is None else warmup):
            fn()
        self.sync()
        ts = []
        for _ in range(self.repeats if repeats is None else repeats):
            t0 = time.perf_counter()
            fn()
            self.sync()
            ts.append(time.perf_counter() - t0)
        peak = self.peak()
        return {
            "median_s": statistics.median(ts),
            "min_s": min(ts),
            "samples_s": ts,
            "peak_mem_GiB": peak,
            "mem_before_GiB": base,
            "extra_peak_GiB": None if peak is None else peak - base,
        }


@contextmanager
def matmul_precision(p: str):
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(p)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


def build_model(p: dict, device: torch.device, dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    cfg_cls, model_cls = (
        (LlamaConfig, LlamaForCausalLM) if p["arch"] == "llama" else (Qwen2Config, Qwen2ForCausalLM)
    )
    cfg = cfg_cls(
        vocab_size=p["vocab"],
        hidden_size=p["hidden"],
        intermediate_size=p["inter"],
        num_hidden_layers=p["layers"],
        num_attention_heads=p["heads"],
        num_key_value_heads=p["kv"],
        max_position_embeddings=4096,
        tie_word_embeddings=p["tie"],
        attn_implementation="sdpa",
        use_cache=False,
    )
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = model_cls(cfg)
    finally:
        torch.set_default_dtype(old)
    model = model.to(device=device, dtype=dtype)
    model.train(False)
    return model


def edit_names(p: dict) -> list[str]:
    return [f"model.layers.{i}.mlp.down_proj" for i in p["edit_layers"]]


def set_trainable(model, names: list[str] | None) -> list[torch.nn.Parameter]:
    """Freeze everything except the named modules' weights (all parameters if ``names`` is None)."""
    mods = dict(model.named_modules())
    for q in model.parameters():
        q.requires_grad_(names is None)
    if names is None:
        return list(model.parameters())
    out = []
    for n in names:
        mods[n].weight.requires_grad_(True)
        out.append(mods[n].weight)
    return out


# ----------------------------------------------------------------------------------------------
# sections
# ----------------------------------------------------------------------------------------------


def section_build(ctx) -> dict:
    p, dev = ctx["p"], ctx["device"]
    ctx["bench"].reset_peak()
    t0 = time.perf_counter()
    model = build_model(p, dev, ctx["dtype"])
    ctx["bench"].sync()
    dt = time.perf_counter() - t0
    ctx["model"] = model
    n = sum(q.numel() for q in model.parameters())
    return {
        "build_s": dt,
        "n_params": n,
        "n_params_B": n / 1e9,
        "dtype": str(ctx["dtype"]),
        "peak_mem_GiB": ctx["bench"].peak(),
        "edit_modules": edit_names(p),
        "config": {k: p[k] for k in ("hidden", "inter", "layers", "heads", "kv", "vocab")},
    }


def _random_batches(p, n, gen, device, vocab):
    return [
        {"input_ids": torch.randint(0, vocab, (p["kfac_batch"], p["kfac_seq"]), generator=gen).to(device)}
        for _ in range(n)
    ]


def section_kfac(ctx) -> dict:
    p, b, model = ctx["p"], ctx["bench"], ctx["model"]
    gen = torch.Generator().manual_seed(0)
    nb = p["kfac_batches"] if not ctx["quick"] else min(p["kfac_batches"], 3)
    batches = _random_batches(p, nb, gen, ctx["device"], p["vocab"])
    tok_per_batch = p["kfac_batch"] * (p["kfac_seq"] - 1)  # valid (shifted) tokens per batch
    names = edit_names(p)

    def run_kfac(precision: str):
        stamps = []

        def timed():
            for bt in batches:
                b.sync()
                stamps.append(time.perf_counter())
                yield bt
            b.sync()
            stamps.append(time.perf_counter())

        b.reset_peak()
        with matmul_precision(precision):
            t0 = time.perf_counter()
            factors = collect_kfac(model, names, timed(), labels="true", progress=False)
            total = time.perf_counter() - t0
        per = [stamps[i + 1] - stamps[i] for i in range(len(stamps) - 1)]
        steady = per[1:] if len(per) > 1 else per  # first batch = warm-up
        med = statistics.median(steady)
        return factors, {
            "per_batch_s": per,
            "median_batch_s": med,
            "tokens_per_s": tok_per_batch / med,
            "call_total_s": total,
            "peak_mem_GiB": b.peak(),
        }

    log(f"  kfac: collect_kfac on {len(names)} layers, {nb} batches of {p['kfac_batch']}x{p['kfac_seq']}")
    factors, k_ieee = run_kfac("highest")
    out = {
        "tokens_per_batch": tok_per_batch,
        "n_batches": nb,
        "labels": "true (teacher forcing)",
        "kfac_fp32_ieee": k_ieee,
    }
    if ctx["cuda"]:
        _, k_tf32 = run_kfac("high")
        out["kfac_fp32_tf32"] = k_tf32
    ctx["factors"] = factors

    def fwdbwd(names_or_none):
        params = set_trainable(model, names_or_none)
        it = iter(range(10**9))

        def fn():
            bt = batches[next(it) % len(batches)]
            logits = model(input_ids=bt["input_ids"]).logits
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), bt["input_ids"][:, 1:].flatten(), reduction="sum"
            )
            loss.backward()
            for q in params:
                q.grad = None

        r = b.time(fn, repeats=max(b.repeats // 2, 2))
        set_trainable(model, [])
        r["tokens_per_s"] = tok_per_batch / r["median_s"]
        return r

    log("  kfac: plain forward+backward baselines")
    out["fwdbwd_edit_layers"] = fwdbwd(names)  # backward down to the lowest edited layer
    out["fwdbwd_all_params"] = fwdbwd(None)  # full backward, every parameter's gradient
    best = max(out[k]["tokens_per_s"] for k in ("kfac_fp32_ieee", "kfac_fp32_tf32") if k in out)
    out["kfac_tokens_per_s"] = best
    out["fwdbwd_tokens_per_s"] = out["fwdbwd_edit_layers"]["tokens_per_s"]
    out["kfac_over_fwdbwd"] = best / out["fwdbwd_tokens_per_s"]
    out["target_kfac_over_fwdbwd"] = 0.5
    out["paper_capability_set_tokens"] = 10000 * 512
    out["paper_capability_set_s_extrapolated"] = 10000 * 512 / best
    return out


def _wishart_factors(p, device):
    gen = torch.Generator(device=device).manual_seed(1)
    out = {}
    for n in edit_names(p):
        xa = torch.randn(2048, p["inter"], device=device, generator=gen)
        xs = torch.randn(2048, p["hidden"], device=device, generator=gen)
        out[n] = type("F", (), {"A": xa.T @ xa / 2048, "S": xs.T @ xs / 2048})()
    return out


def _threshold_on_device(prod: torch.Tensor, gamma: float) -> float:
    """``energy_threshold(prod, gamma, "code")`` computed on prod's device (one sort, no host copy)."""
    srt = torch.sort(prod.reshape(-1).clamp_min(0.0), descending=True).values
    cum = torch.cumsum(srt, 0)
    total = cum[-1]
    if float(total) <= 0:
        return float("inf")
    g = torch.tensor([gamma], dtype=cum.dtype, device=cum.device)
    k = int(torch.searchsorted(cum / total, g).item()) + 1
    return float(srt[k - 1])


def _mask_from_eigs(eig_out, eig_in, gamma, rule="code", rtol=1e-9):
    """The library's energy rule ("code" tie rule, as KroneckerProjector's default) on all products."""
    prod = torch.outer(eig_out.to(torch.float64), eig_in.to(torch.float64))
    if prod.device.type == "cpu":
        thr = energy_threshold(prod, gamma, rule)
    else:  # same arithmetic on the GPU; checked against the library on CPU in the tiny preset
        thr = _threshold_on_device(prod, gamma)
    return _editable(prod, thr, rule, rtol), thr


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
            if not ctx["cuda"]:  # the on-device rule must agree with the library's
                prod = torch.outer(eig_out.double(), eig_in.double())
                assert _threshold_on_device(prod, g) == energy_threshold(prod, g, "code")
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


def section_step(ctx) -> dict:
    p, b, dev, model = ctx["p"], ctx["bench"], ctx["device"], ctx["model"]
    names = edit_names(p)
    mods = dict(model.named_modules())
    gen = torch.Generator().manual_seed(3)
    B, L = p["step_batch"], p["step_seq"]
    ids = torch.randint(0, p["vocab"], (B, L), generator=gen).to(dev)
    labels = ids.clone()
    labels[:, : p["prompt_len"]] = -100  # prompt masked, as the official training loop does
    bf16 = ctx["cuda"]
    variants = {}

    def loss_fn():
        logits = model(input_ids=ids).logits
        return F.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
        )

    def run(key, make_opt, params, precision="highest", info=None, cleanup=None):
        opt = make_opt()

        def step():
            opt.zero_grad(set_to_none=True)
            loss_fn().backward()
            opt.step()

        try:
            with matmul_precision(precision):
                r = b.time(step, warmup=max(b.warmup, 2))
        finally:
            if cleanup:
                cleanup()
        r.pop("samples_s", None)
        if info:
            r.update(info)
        if hasattr(opt, "projectors"):
            forms = {getattr(pr, "last_method", None) for pr in opt.projectors.values()}
            forms.discard(None)
            if forms:
                r["forms"] = sorted(forms)
        variants[key] = r
        base = variants.get("plain_ft", {}).get("median_s")
        ratio = f"  x{r['median_s'] / base:.3f} of plain FT" if base else ""
        log(f"  step {key:40s} {r['median_s'] * 1e3:9.2f} ms  peak {r['peak_mem_GiB'] or 0:.1f} GiB{ratio}")
        opt = None  # noqa: F841  (free the optimiser state before the next variant)
        if ctx["cuda"]:
            torch.cuda.empty_cache()

    params = set_trainable(model, names)
    run("plain_ft", lambda: torch.optim.Adam(params, lr=5e-4), params)
    for g in ctx["gammas"]:
        kps = {mods[n].weight: ctx["projectors"][n][g] for n in names}
        if g == ctx["gammas"][-1]:
            run(
                f"crispedit_reference_fp32_tf32_g{g}",
                lambda kps=kps: ProjectedAdam(params, kps, lr=5e-4),
                params,
                "high" if ctx["cuda"] else "highest",
            )
            if bf16:
                kb = {
                    w: KroneckerProjector(
                        k.U_in.to(torch.bfloat16),
                        k.U_out.to(torch.bfloat16),
                        k.mask,
                        k.eig_in,
                        k.eig_out,
                        k.gamma,
                        k.threshold,
                        k.rule,
                    )
                    for w, k in kps.items()
                }
                run(
                    f"crispedit_reference_bf16_g{g} (official code)",
                    lambda kb=kb: ProjectedAdam(params, kb, lr=5e-4),
                    params,
                )
                del kb
        dt = torch.bfloat16 if bf16 else torch.float32
        for tag, src in (("measured", ctx["projectors"]), ("synthetic", None)):
            cap = TokenFactorCapture({n: mods[n] for n in names})
            fps = {}
            for n in names:
                kp = src[n][g] if src is not None else ctx["synthetic"][g]
                fps[mods[n].weight] = FastProjector.from_projector(
                    kp, dtype=dt, method="auto", capture=cap, name=n
                )
            run(
                f"crispedit_fast_{tag}_g{g}",
                lambda fps=fps: ProjectedAdam(params, fps, lr=5e-4),
                params,
                "high" if ctx["cuda"] else "highest",
                cleanup=cap.remove,
            )
            del fps
        # eigenbasis reparameterisation (variant, not the paper's): stock Adam on the rotated deltas
        attached = {}
        for n in names:
            parent_name, attr = n.rsplit(".", 1)
            parent = mods[parent_name]
            attached[n] = (parent, attr, EigenbasisLinear(mods[n], ctx["projectors"][n][g], dtype=dt))
            setattr(parent, attr, attached[n][2])
        deltas = [m.delta for _, _, m in attached.values()]

        def restore(attached=attached):
            for parent, attr, m in attached.values():
                setattr(parent, attr, m.base)

        run(
            f"eigenbasis_reparam_g{g} (variant)",
            lambda deltas=deltas: torch.optim.Adam(deltas, lr=5e-4),
            deltas,
            cleanup=restore,
        )
        set_trainable(model, names)
        del attached, deltas
    params = set_trainable(model, names)
    run("plain_ft_repeat", lambda: torch.optim.Adam(params, lr=5e-4), params)  # drift check
    set_trainable(model, [])
    base = 0.5 * (variants["plain_ft"]["median_s"] + variants["plain_ft_repeat"]["median_s"])
    for v in variants.values():
        v["ratio_to_plain_ft"] = v["median_s"] / base
    best = min((k for k in variants if not k.startswith("plain_ft")), key=lambda k: variants[k]["median_s"])
    return {
        "batch": B,
        "seq": L,
        "prompt_len": p["prompt_len"],
        "tokens": B * L,
        "trainable": names,
        "optimizer": "Adam lr 5e-4 (bf16 params/state on GPU)",
        "plain_ft_s": base,
        "variants": variants,
        "best_crispedit_variant": best,
        "best_ratio_to_plain_ft": variants[best]["ratio_to_plain_ft"],
        "target_ratio": 1.15,
        "note": "synthetic-spectrum variants use a power-law mask on real eigenbases (timing only); "
        "measured variants use the random-init model's factors. " + NOTE_SPECTRA,
    }


def section_schedule(ctx, res) -> dict:
    steps_per_epoch = math.ceil(N_EDITS / BATCH)
    steps = EPOCHS * steps_per_epoch
    out = {
        "n_edits": N_EDITS,
        "epochs": EPOCHS,
        "batch": BATCH,
        "steps_per_epoch": steps_per_epoch,
        "steps": steps,
        "extrapolated": True,
        "how": "steps x median step time (+ eigh of every edited layer, once); early stopping never "
        "fires with random weights, so all 25 epochs are counted",
        "paper": PAPER_TIMES,
    }
    eig = res.get("eigh", {}).get("all_layers_eigh_s", 0.0)
    step = res.get("step", {}).get("variants", {})
    out["variants"] = {
        k: {"train_s": steps * v["median_s"], "with_eigh_s": steps * v["median_s"] + eig}
        for k, v in step.items()
    }
    kf = res.get("kfac", {})
    if kf:
        out["kfac_capability_10k_x512_s"] = kf.get("paper_capability_set_s_extrapolated")
    if ctx["full"] and step:
        out["full_run"] = run_full(ctx, steps)
    return out


def run_full(ctx, steps) -> dict:
    """Actually run the 2,350 steps with plain FT and the fastest CrispEdit form (measured factors)."""
    p, b, model = ctx["p"], ctx["bench"], ctx["model"]
    names = edit_names(p)
    mods = dict(model.named_modules())
    params = set_trainable(model, names)
    gen = torch.Generator().manual_seed(4)
    data = torch.randint(0, p["vocab"], (N_EDITS, p["step_seq"]), generator=gen).to(ctx["device"])
    out = {}
    g = ctx["gammas"][-1]
    dt = torch.bfloat16 if ctx["cuda"] else torch.float32
    for key in ("plain_ft", f"crispedit_fast_measured_g{g}"):
        cap = None
        if key == "plain_ft":
            opt = torch.optim.Adam(params, lr=5e-4)
        else:
            cap = TokenFactorCapture({n: mods[n] for n in names})
            fps = {
                mods[n].weight: FastProjector.from_projector(
                    ctx["projectors"][n][g], dtype=dt, capture=cap, name=n
                )
                for n in names
            }
            opt = ProjectedAdam(params, fps, lr=5e-4)
        b.sync()
        t0 = time.perf_counter()
        done = 0
        with matmul_precision("high" if ctx["cuda"] else "highest"):
            for _ in range(EPOCHS):
                perm = torch.randperm(N_EDITS, generator=gen)
                for i in range(0, N_EDITS, BATCH):
                    ids = data[perm[i : i + BATCH].to(data.device)]
                    labels = ids.clone()
                    labels[:, : p["prompt_len"]] = -100
                    opt.zero_grad(set_to_none=True)
                    logits = model(input_ids=ids).logits
                    F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten()).backward()
                    opt.step()
                    done += 1
        b.sync()
        out[key] = {"steps": done, "wall_s": time.perf_counter() - t0}
        log(f"  full schedule {key}: {done} steps in {out[key]['wall_s']:.1f} s")
        if cap:
            cap.remove()
        del opt
    set_trainable(model, [])
    return out


# ----------------------------------------------------------------------------------------------


def hardware(device: torch.device) -> dict:
    import transformers

    hw = {
        "device": str(device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        prop = torch.cuda.get_device_properties(device)
        hw.update(
            gpu=torch.cuda.get_device_name(device),
            cuda=torch.version.cuda,
            gpu_mem_GiB=prop.total_memory / 2**30,
            sm_count=prop.multi_processor_count,
            capability=f"{prop.major}.{prop.minor}",
        )
    return hw


def summary(name: str, res: dict) -> None:
    print(f"\n=== {name} ===", flush=True)
    if "build" in res:
        bd = res["build"]
        print(f"build            {bd['build_s']:.2f} s  {bd['n_params_B']:.3f} B params", flush=True)
    if "kfac" in res:
        k = res["kfac"]
        print(
            f"K-FAC            {k['kfac_tokens_per_s']:.0f} tok/s vs fwd/bwd {k['fwdbwd_tokens_per_s']:.0f} "
            f"tok/s -> {k['kfac_over_fwdbwd']:.2f} (target >= 0.5)",
            flush=True,
        )
    if "eigh" in res:
        e = res["eigh"]
        print(
            f"eigh per layer   {e['median_eigh_layer_s']:.3f} s (median), "
            f"all layers {e['all_layers_eigh_s']:.2f} s",
            flush=True,
        )
    if "project" in res:
        print("projection (one layer, per step):", flush=True)
        for k, v in res["project"]["variants"].items():
            print(f"  {k:44s} {v['median_s'] * 1e3:9.3f} ms  rel_err {v['rel_err']:.1e}", flush=True)
    if "step" in res:
        s = res["step"]
        print(f"step (batch {s['batch']} x {s['seq']} tokens):", flush=True)
        for k, v in s["variants"].items():
            pk = v["peak_mem_GiB"]
            print(
                f"  {k:44s} {v['median_s'] * 1e3:9.2f} ms  x{v['ratio_to_plain_ft']:.3f}  "
                f"peak {pk if pk is not None else float('nan'):.1f} GiB",
                flush=True,
            )
        print(
            f"  best: {s['best_crispedit_variant']} x{s['best_ratio_to_plain_ft']:.3f} (target 1.15)",
            flush=True,
        )
    if "schedule" in res:
        sc = res["schedule"]
        print(f"3,000-edit schedule ({sc['steps']} steps, EXTRAPOLATED):", flush=True)
        for k, v in sc["variants"].items():
            print(f"  {k:44s} {v['train_s']:8.1f} s train, {v['with_eigh_s']:8.1f} s with eigh", flush=True)
        for k, v in sc.get("full_run", {}).items():
            print(f"  measured full run {k}: {v['wall_s']:.1f} s", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", nargs="+", default=["llama3-8b", "qwen2.5-1.5b"], choices=list(PRESETS))
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cuda or cpu")
    ap.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {SECTIONS} (dependencies run silently)",
    )
    ap.add_argument("--gammas", default="0.7,0.9", help="energy thresholds (paper: 0.7 ZsRE, 0.9 CF/Wiki)")
    ap.add_argument("--alpha", type=float, default=1.0, help="power-law exponent of the synthetic spectrum")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="1 warm-up, 2 repeats, fewer batches (smoke test)")
    ap.add_argument("--full", action="store_true", help="also run the whole 2,350-step schedule (minutes)")
    ap.add_argument(
        "--out", default=None,
        help="JSON path (default crispedit_lite/resources/results/scale-<device>-<date>.json)"
    )
    args = ap.parse_args(argv)

    dev = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    cuda = dev.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    warmup, repeats = (1, 2) if args.quick else (args.warmup, args.repeats)
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in wanted if s not in SECTIONS]
    if bad:
        ap.error(f"unknown sections {bad}; choose from {SECTIONS}")
    need = set(wanted)
    if need & {"project", "step"}:
        need.add("eigh")
    if need & {"kfac", "step"} or "eigh" in need:
        need.add("build")
    gammas = [float(g) for g in args.gammas.split(",")]
    hw = hardware(dev)
    slug = re.sub(r"[^a-z0-9]+", "-", (hw.get("gpu") or "cpu").lower()).strip("-")
    date = _dt.datetime.now(_dt.timezone.utc)
    out = Path(args.out) if args.out else RESULTS / f"scale-{slug}-{date:%Y%m%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    res = {
        "command": " ".join([Path(sys.executable).name] + sys.argv)
        if argv is None
        else "scale.py " + " ".join(argv),
        "date": date.isoformat(timespec="seconds"),
        "hardware": hw,
        "weights": WEIGHTS,
        "settings": {
            "sections": wanted,
            "gammas": gammas,
            "alpha": args.alpha,
            "warmup": warmup,
            "repeats": repeats,
            "dtype": str(dtype),
            "full": args.full,
        },
        "notes": [
            NOTE_SPECTRA,
            "every *_s field is a median wall time with the device synchronised; "
            "schedule times are extrapolated unless under full_run",
        ],
        "presets": {},
    }

    def save():
        out.write_text(json.dumps(res, indent=1, default=str))

    log(
        f"device {dev} ({hw.get('gpu', platform.processor() or 'cpu')}), torch {torch.__version__}; "
        f"writing {out}"
    )
    save()
    rc = 0
    for name in args.preset:
        p = PRESETS[name]
        pres = res["presets"].setdefault(name, {})
        ctx = {
            "p": p,
            "device": dev,
            "cuda": cuda,
            "dtype": dtype,
            "gammas": gammas,
            "alpha": args.alpha,
            "quick": args.quick,
            "full": args.full,
            "bench": Bench(dev, warmup, repeats),
        }
        log(f"preset {name}")
        for sec in SECTIONS:
            if sec not in need:
                continue
            t0 = time.perf_counter()
            try:
                if sec == "build":
                    r = section_build(ctx)
                elif sec == "kfac":
                    r = section_kfac(ctx)
                elif sec == "eigh":
                    r = section_eigh(ctx)
                elif sec == "project":
                    r = section_project(ctx)
                elif sec == "step":
                    r = section_step(ctx)
                else:
                    r = section_schedule(ctx, pres)
            except Exception as exc:  # keep going: a partial JSON is still useful
                traceback.print_exc()
                pres[sec] = {"error": f"{type(exc).__name__}: {exc}"}
                rc = 1
                save()
                if sec in ("build", "eigh"):
                    break
                continue
            r["section_wall_s"] = time.perf_counter() - t0
            if sec in wanted:
                pres[sec] = r
            log(f"{name}: {sec} done in {r['section_wall_s']:.1f} s")
            save()
        summary(name, {k: v for k, v in pres.items() if "error" not in v})
        for k in ("model", "factors", "projectors", "synthetic"):
            ctx.pop(k, None)
        if cuda:
            torch.cuda.empty_cache()
    save()
    log(f"wrote {out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
