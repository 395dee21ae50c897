"""``scale.py`` sections ``build`` (the random-init model on the device) and ``kfac`` (K-FAC throughput)."""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from scale_common import build_model, edit_names, log, matmul_precision, set_trainable

from crispedit_lite.kfac import collect_kfac


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
