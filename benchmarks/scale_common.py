"""Shared parts of ``benchmarks/scale.py``: presets, the timer, the random-init model, logging.

The architectures of the paper's models (hidden and intermediate sizes, layers, heads, vocabulary,
edited layers) are read from :mod:`crispedit_lite.models.presets`; only the timing settings and the
CPU smoke-test shape ``tiny`` are stated here.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager

import torch

from crispedit_lite.models.presets import (
    DEFAULT_PATTERN,
    LAYER_PRESETS,
    LLAMA3_8B,
    QWEN2_5_1_5B,
    SHAPE_PRESETS,
)

WEIGHTS = "random init (timings only; no accuracy)"
N_EDITS, EPOCHS, BATCH = 3000, 25, 32
PAPER_TIMES = {
    "source": "CrispEdit Table 1 (hardware not stated in the paper's text; v1 says an NVIDIA A40)",
    "CrispEdit ZsRE": "4m 6s",
    "CrispEdit CounterFact": "3m 17s",
    "CrispEdit WikiBigEdit": "6m 29s",
}


def _paper_shape(model_id: str, shape_preset: str) -> dict:
    """Architecture of one of the paper's models, from ``crispedit_lite.models.presets`` (the one source)."""
    cfg = SHAPE_PRESETS[shape_preset]
    return dict(arch=cfg["model_type"], hidden=cfg["hidden_size"], inter=cfg["intermediate_size"],
                layers=cfg["num_hidden_layers"], heads=cfg["num_attention_heads"],
                kv=cfg["num_key_value_heads"], vocab=cfg["vocab_size"],
                edit_layers=list(LAYER_PRESETS[model_id]["layers"]), tie=cfg["tie_word_embeddings"])


# Timing settings per preset (the architecture of the paper's models comes from the presets above)
_TIMING = dict(kfac_seq=512, kfac_batch=4, kfac_batches=6, step_batch=BATCH, step_seq=32, prompt_len=24,
               eigh_repeats=2)
PRESETS = {
    "llama3-8b": dict(**_paper_shape(LLAMA3_8B, "llama3-8b-shape"), **_TIMING),
    "qwen2.5-1.5b": dict(**_paper_shape(QWEN2_5_1_5B, "qwen2.5-1.5b-shape"), **_TIMING),
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
    return [DEFAULT_PATTERN.format(i=i) for i in p["edit_layers"]]


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
