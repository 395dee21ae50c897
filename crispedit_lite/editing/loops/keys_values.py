r"""Keys and target values of locate-then-edit editors (MEMIT, AlphaEdit), read off the model.

* **Key** :math:`k` of an edit at layer :math:`l`: the input of ``down_proj`` (:math:`\sigma(W_{\rm
  gate}x)\odot W_{\rm up}x`) at the **last subject token**, averaged over context templates: the bare
  prompt, and the prompt behind five short prefixes that the model generates from "The", "Therefore",
  "Because", "I", "You" (10 tokens each, then ``". "``). The average is taken within each template
  group, then over the groups (``compute_ks`` of MEMIT's code). The official code *samples* the
  prefixes (``generate_fast``: top-5 sampling, ``memit_main.py``'s ``get_context_templates``);
  :func:`context_templates` offers that (``sampling="top_k"``, seeded) beside greedy decoding, the
  default here because it needs no seed. On SmolLM2 the greedy prefixes are degenerate
  ("You-er-er-er-er-"); the sampled ones read more like text. On 8 SmolLM2 edits, MEMIT's weight change
  with sampled templates differs from the greedy one by 56-70 % (relative Frobenius norm per layer),
  about as much as two sampling seeds differ from each other (66-87 %), while teacher-forced
  reliability moves by at most one edit (``benchmarks/closed_form_deviations.py``).
* **Target value** :math:`z = h^L + \delta` at the last edited layer :math:`L`: :math:`\delta` is added
  to layer :math:`L`'s block output at the subject's last token of every rewriting prompt and
  optimised with Adam on

  .. math::

      \frac1{|T|}\sum_{t\in T}-\log p(y\mid t(\text{prompt}))
      + \kappa\,\mathrm{KL}\big(p_\delta(\cdot\mid s\text{ is a})\,\|\,p_0(\cdot\mid s\text{ is a})\big)
      + \beta\,\frac{\lVert\delta\rVert}{\lVert h^L\rVert^2},

  stopping when the loss falls below 5e-2 and clamping :math:`\lVert\delta\rVert\le c\lVert
  h^L\rVert` after each step (Meng et al., 2023, eq. 16; ``compute_z``). The logits are read through
  the decoder's final norm and ``get_output_embeddings()`` (the tied embedding matrix on SmolLM2).

Every batch is padded on the tokenizer's ``padding_side`` with explicit position ids, so left and
right padding give the same keys and values. Decoder layers may return a tensor or a tuple.

Derived in notebook ``08_one_framework``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crispedit_lite.models.compat import layer_hidden, replace_hidden

__all__ = ["CONTEXT_SEEDS", "ValueSettings", "compute_keys", "compute_targets", "context_templates",
           "layer_outputs", "subject_span"]

CONTEXT_SEEDS: tuple[str, ...] = ("The", "Therefore", "Because", "I", "You")
STOP_LOSS = 5e-2  # compute_z's early stop


@dataclass(frozen=True)
class ValueSettings:
    r"""Target-value optimisation settings (``compute_z``).

    Adam ``lr`` for at most ``steps`` steps, ``kl_factor`` :math:`\kappa`, ``weight_decay``
    :math:`\beta`, ``clamp_norm`` :math:`c` (MEMIT's Llama-3-8B values as defaults).

    Derived in notebook ``08_one_framework``.
    """

    lr: float = 0.5
    steps: int = 25
    weight_decay: float = 1e-3
    clamp_norm: float = 4.0
    kl_factor: float = 0.0625


class _Stop(Exception):
    """Raised by a hook to skip the layers above the one read."""


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _batch(ids: Sequence[Sequence[int]], tokenizer: Any, device: torch.device
           ) -> tuple[dict[str, Tensor], list[int]]:
    """Pad on ``tokenizer.padding_side`` with position ids; return the batch and each row's offset."""
    width, left = max(len(x) for x in ids), getattr(tokenizer, "padding_side", "right") == "left"
    pad = next((p for p in (tokenizer.pad_token_id, tokenizer.eos_token_id) if p is not None), 0)
    input_ids = torch.full((len(ids), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    pos = torch.zeros((len(ids), width), dtype=torch.long)
    offsets = [width - len(x) if left else 0 for x in ids]
    for i, (x, o) in enumerate(zip(ids, offsets)):
        input_ids[i, o:o + len(x)], mask[i, o:o + len(x)] = torch.tensor(list(x)), 1
        pos[i, o:o + len(x)] = torch.arange(len(x))
    batch = {"input_ids": input_ids, "attention_mask": mask, "position_ids": pos}
    return {k: v.to(device) for k, v in batch.items()}, offsets


def subject_span(prompt: str, subject: str | None, record: Any) -> tuple[int, int]:
    """Character span of ``subject`` in ``prompt`` (exact match first, then case-insensitive).

    Raises:
        ValueError: naming ``record`` when the subject is missing or not in the prompt.

    Listed on the book page ``api``.
    """
    if not subject or not subject.strip():
        raise ValueError(f"edit record {record!r}: MEMIT-style editing needs a subject, got {subject!r}")
    start = prompt.find(subject)
    if start < 0:
        start = prompt.lower().find(subject.lower())
    if start < 0:
        raise ValueError(f"edit record {record!r}: subject {subject!r} does not occur in prompt "
                         f"{prompt!r}")
    return start, start + len(subject)


def _last_token(tokenizer: Any, text: str, end: int) -> tuple[list[int], int]:
    """Token ids of ``text`` and the index of the token holding character ``end - 1``."""
    try:
        enc = tokenizer(text, return_offsets_mapping=True)
        spans = enc["offset_mapping"]
        idx = [i for i, (a, b) in enumerate(spans) if b > a and a < end]
        if idx:
            return list(enc["input_ids"]), idx[-1]
    except (NotImplementedError, TypeError, KeyError):
        pass
    ids = list(tokenizer(text)["input_ids"])
    return ids, len(tokenizer(text[:end])["input_ids"]) - 1


def context_templates(model: nn.Module, tokenizer: Any, seeds: Sequence[str] = CONTEXT_SEEDS,
                      max_tokens: int = 10, *, sampling: str = "greedy", top_k: int = 5,
                      seed: int = 0) -> list[list[str]]:
    """``[["{}"], [prefix_1 + ". {}", ...]]``: the bare prompt and generated prefixes of ``max_tokens``.

    ``sampling="greedy"`` takes the most likely next token; ``"top_k"`` samples it from the ``top_k``
    most likely ones in proportion to their probabilities, as the official ``generate_fast`` does, with
    a CPU generator seeded by ``seed`` (the same templates on every device for one seed).

    Derived in notebook ``08_one_framework``.
    """
    if sampling not in ("greedy", "top_k"):
        raise ValueError(f"sampling must be 'greedy' or 'top_k', got {sampling!r}")
    if top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k}")
    device, out = _device(model), []
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for prefix in seeds:
            ids = list(tokenizer(prefix)["input_ids"])
            while len(ids) < max_tokens:
                batch, _ = _batch([ids], tokenizer, device)
                logits = model(**batch).logits[0, -1].float().cpu()
                if sampling == "greedy":
                    ids.append(int(logits.argmax()))
                    continue
                probs, idx = torch.softmax(logits, -1).topk(top_k)
                ids.append(int(idx[torch.multinomial(probs / probs.sum(), 1, generator=gen)]))
            text = tokenizer.decode(ids, skip_special_tokens=True)
            out.append(text.replace("{", "").replace("}", "") + ". {}")
    return [["{}"], out]


def _located(tokenizer: Any, requests: Sequence[Any], templates: Sequence[str],
             suffix: bool = False) -> list[tuple[list[int], int, int]]:
    """Per (request, template): token ids, subject-last index, number of prompt tokens."""
    rows = []
    for r, req in enumerate(requests):
        record = r if getattr(req, "case_id", None) is None else req.case_id
        _, b = subject_span(req.prompt, req.subject, record)
        for t in templates:
            head = t.index("{}")
            text = t.format(req.prompt).rstrip()
            n_prompt = len(tokenizer(text)["input_ids"])
            if suffix:
                text = f"{text} {req.target_new.strip()}"
            ids, idx = _last_token(tokenizer, text, head + b)
            rows.append((ids, idx, n_prompt))
    return rows


def _capture(model: nn.Module, module: nn.Module, rows: Sequence[tuple[list[int], int, int]],
             tokenizer: Any, *, read_input: bool, batch_size: int) -> Tensor:
    """Input (or output) of ``module`` at each row's index; stops the forward pass there."""
    got: list[Tensor] = []
    where: dict[str, Tensor] = {}

    def pick(_m, args, out=None):
        x = args[0] if read_input else layer_hidden(out)
        got.append(x[where["r"], where["p"]].detach().to(torch.float64))
        raise _Stop

    handle = module.register_forward_pre_hook(pick) if read_input else module.register_forward_hook(pick)
    device = _device(model)
    try:
        with torch.no_grad():
            for s in range(0, len(rows), batch_size):
                chunk = rows[s:s + batch_size]
                batch, offs = _batch([c[0] for c in chunk], tokenizer, device)
                where["r"] = torch.arange(len(chunk), device=device)
                where["p"] = torch.tensor([o + c[1] for o, c in zip(offs, chunk)], device=device)
                try:
                    model(**batch)
                except _Stop:
                    pass
    finally:
        handle.remove()
    return torch.cat(got)


def compute_keys(model: nn.Module, tokenizer: Any, requests: Sequence[Any], module: str,
                 templates: Sequence[Sequence[str]], *, batch_size: int = 32) -> Tensor:
    """Keys of ``requests`` at ``module`` (its input at the last subject token), ``(u, d_in)`` float64.

    Averaged within each template group, then over the groups. Derived in notebook ``08_one_framework``.
    """
    flat = [t for group in templates for t in group]
    rows = _located(tokenizer, requests, flat)
    k = _capture(model, model.get_submodule(module), rows, tokenizer, read_input=True,
                 batch_size=batch_size).reshape(len(requests), len(flat), -1)
    bounds = torch.tensor([0] + [len(g) for g in templates]).cumsum(0).tolist()
    return torch.stack([k[:, a:b].mean(1) for a, b in zip(bounds[:-1], bounds[1:])], 0).mean(0)


def layer_outputs(model: nn.Module, tokenizer: Any, requests: Sequence[Any], layer: str, *,
                  batch_size: int = 32) -> Tensor:
    """Block output :math:`h^L` of ``layer`` at the last subject token of each bare prompt, ``(u, d)``.

    Derived in notebook ``08_one_framework``.
    """
    rows = _located(tokenizer, requests, ["{}"])
    return _capture(model, model.get_submodule(layer), rows, tokenizer, read_input=False,
                    batch_size=batch_size)


def _up(x: Tensor) -> Tensor:
    return x if x.dtype == torch.float64 else x.float()


def _decoder(model: nn.Module) -> nn.Module:
    get = getattr(model, "get_decoder", None)
    dec = get() if callable(get) else None
    return dec if dec is not None else model.base_model


def compute_targets(model: nn.Module, tokenizer: Any, requests: Sequence[Any], layer: str,
                    templates: Sequence[Sequence[str]], settings: ValueSettings
                    ) -> tuple[Tensor, dict[str, Any]]:
    r"""Target values :math:`z_r = h^L_r + \delta_r` of every request at ``layer``, ``(u, d)`` float64.

    All requests are optimised in one batch; each has its own :math:`\delta_r`, loss, early stop and
    clamp, so the result equals optimising them one at a time (Adam is elementwise). Returns
    ``(z, info)`` with the first and last loss and the steps taken per request.

    Derived in notebook ``08_one_framework``.
    """
    flat = [t for group in templates for t in group]
    rows = _located(tokenizer, requests, flat, suffix=True)
    kl_reqs = [SimpleNamespace(prompt=f"{q.subject} is a", subject=q.subject,
                               case_id=getattr(q, "case_id", None)) for q in requests]
    kl_rows = _located(tokenizer, kl_reqs, ["{}"])
    u, n_t, device = len(requests), len(flat), _device(model)
    batch, offs = _batch([r[0][:-1] for r in rows] + [r[0] for r in kl_rows], tokenizer, device)
    sub_pos = torch.tensor([o + r[1] for o, r in zip(offs, rows + kl_rows)], device=device)
    owner = torch.cat([torch.arange(u).repeat_interleave(n_t), torch.arange(u)]).to(device)
    # (row, position, token, weight) of every target token: mean per token, then over templates
    tgt = [(i, offs[i] + n_p - 1 + j, ids[n_p + j], 1.0 / ((len(ids) - n_p) * n_t))
           for i, (ids, _, n_p) in enumerate(rows) for j in range(len(ids) - n_p)]
    for i, (ids, _, n_p) in enumerate(rows):
        if len(ids) <= n_p:
            raise ValueError(f"edit request {i // n_t}: target {requests[i // n_t].target_new!r} adds "
                             f"no token after its prompt")
    tgt_r, tgt_p, tgt_y = (torch.tensor([t[c] for t in tgt], device=device) for c in range(3))
    tgt_w = torch.tensor([t[3] for t in tgt], device=device, dtype=torch.float64)
    kl_rows_idx = torch.arange(u * n_t, u * n_t + u, device=device)
    block, dec, head = model.get_submodule(layer), _decoder(model), model.get_output_embeddings()
    h0 = layer_outputs(model, tokenizer, requests, layer)
    dtype = next(block.parameters()).dtype
    delta = torch.zeros_like(h0, dtype=dtype, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=settings.lr)
    h_norm = h0.norm(dim=1).to(dtype)

    def hook(_m, _args, out):
        h = layer_hidden(out)  # a tuple up to transformers 4.53, then a tensor
        add = torch.zeros_like(h).index_put((torch.arange(h.shape[0], device=device), sub_pos),
                                            delta[owner].to(h.dtype))
        return replace_hidden(out, h + add)

    active = torch.ones(u, dtype=torch.bool, device=device)
    first, last, init_kl = None, None, None
    steps = torch.zeros(u, dtype=torch.long, device=device)
    handle = block.register_forward_hook(hook)
    try:
        for it in range(settings.steps):
            hidden = dec(**batch).last_hidden_state
            logp = F.log_softmax(_up(head(hidden[tgt_r, tgt_p])), -1)
            nll = torch.zeros(u, device=device, dtype=logp.dtype).index_add(
                0, owner[tgt_r], -logp.gather(1, tgt_y[:, None])[:, 0] * tgt_w.to(logp.dtype))
            kl_logp = F.log_softmax(_up(head(hidden[kl_rows_idx, sub_pos[kl_rows_idx]])), -1)
            if init_kl is None:
                init_kl = kl_logp.detach()
            kl = (kl_logp.exp() * (kl_logp - init_kl)).sum(-1)
            loss = nll + settings.kl_factor * kl + settings.weight_decay * delta.norm(dim=1) / h_norm ** 2
            now = loss.detach()
            first = now.clone() if first is None else first
            last = now.clone() if last is None else torch.where(active, now, last)
            active &= now >= STOP_LOSS  # a request that reached the stop loss is frozen for good
            if it == settings.steps - 1 or not active.any():
                break
            keep = delta.detach()[~active].clone()
            opt.zero_grad()
            loss[active].sum().backward()
            opt.step()
            with torch.no_grad():
                delta[~active] = keep  # Adam's momentum must not move a frozen request
                max_norm = settings.clamp_norm * h_norm
                delta.mul_((max_norm / delta.norm(dim=1).clamp_min(1e-30)).clamp(max=1.0)[:, None])
            steps += active.long()
    finally:
        handle.remove()
    z = h0 + delta.detach().to(torch.float64)
    info = {"loss_first": [round(float(x), 4) for x in first],
            "loss_last": [round(float(x), 4) for x in last], "steps": steps.tolist(),
            "delta_over_h": [round(float(x), 4) for x in (delta.detach().norm(dim=1) / h_norm)]}
    return z, info
