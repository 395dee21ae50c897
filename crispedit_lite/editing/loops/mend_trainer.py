r"""Train MEND's editor network on a frozen model (Mitchell et al. 2022, §3.2; official ``trainer.py``).

One training step takes one edit request and

1. records the factors :math:`(\mathbf u_t,\boldsymbol\delta_t)` of the base model on the edit
   (prompt + target, prompt masked) and forms every :math:`\Delta W_\ell` with the network
   (:mod:`crispedit_lite.editing.updates.mend`), keeping the graph to the network's parameters;
2. runs the edited model :math:`W+\Delta W` (``torch.func.functional_call``; the base weights never
   change) on the *outer* texts and the locality texts;
3. backpropagates

.. math::

    \mathcal L = c_{\rm edit}\,\mathcal L_{\rm edit} + c_{\rm loc}\,
    \mathrm{KL}\big(p_{\rm base}\,\|\,p_{\rm edited}\big),

with :math:`\mathcal L_{\rm edit}` the mean target NLL after the edit on the outer texts (the
official ZsRE run uses the paraphrase, ``mend_outer="paraphrase"``; ``"prompt+paraphrase"`` adds the
edit prompt) and the KL averaged over the tokens of the locality batch (``losses.py:kl_loc_loss``).

Gradients of ``mend_accumulate`` (10) edits are summed (each divided by 10) before one step of Adam on
the network and the step sizes (``mend_lr``, official 1e-6) and one of a second Adam on the step sizes
alone (``mend_lr_lr``, 1e-4), after clipping the gradient norm at ``mend_grad_clip`` (100), as
``EditTrainer`` does. The normalisation statistics are updated by every training edit. Every
``mend_val_every`` edits the held-out
requests are edited in eval mode, and the network with the lowest validation ``c_edit * L_edit +
c_loc * KL`` is kept (official ``early_stop_key: loss/total_edit_val``). A checkpoint after every
validation lets an interrupted run resume.

Where this loop differs from the official one: the optimiser steps after every ``accumulate`` edits
(the official loop skips the step at iteration 0, so its first step sees 11); validation keeps the best
network but has no early-stopping patience; the locality batch is the request's own locality fact
(ZsRE's NQ question and answer, as the official ZsRE runs; the SmolLM2 split's held-out fact) plus, with
capability texts, one window of ``mend_loc_max_length`` tokens; the base model and the locality rows share
one forward pass with the edit (rows without labels get no gradient), and the edited model one pass
with the outer texts. The command ``python -m crispedit_lite.editing.mend_train`` drives it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from crispedit_lite.atomic import atomic_path, write_json_atomic
from crispedit_lite.data.batches import pad_batch, tokenize_edits
from crispedit_lite.editing.loops.mend import collect_factors, save_editor, target_nll
from crispedit_lite.editing.updates.mend import MendNetwork

if TYPE_CHECKING:
    from crispedit_lite.editing.editors.mend import MendSettings

__all__ = ["MendTrainer", "kl_on_mask", "locality_windows", "settings_record", "write_json"]


def kl_on_mask(base_logits: Tensor, logits: Tensor, mask: Tensor) -> Tensor:
    r""":math:`\mathrm{KL}(p_{\rm base}\|p)` per token, averaged over the ``mask`` positions.

    The official ``losses.py:kl_loc_loss``.

    Listed on the book page ``api``.
    """
    base = base_logits.float().log_softmax(-1)
    kl = (base.exp() * (base - logits.float().log_softmax(-1))).sum(-1)
    mask = mask.to(kl.dtype)
    return (kl * mask).sum() / mask.sum()


def locality_windows(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Every text cut into consecutive windows of ``max_length`` tokens (the last kept if >= 8 tokens).

    Listed on the book page ``api``.
    """
    out: list[list[int]] = []
    for text in texts:
        ids = list(tokenizer(text)["input_ids"])
        out += [w for i in range(0, len(ids), max_length) if len(w := ids[i:i + max_length]) >= 8]
    if not out:
        raise ValueError("no locality window of at least 8 tokens in the capability texts")
    return out


class MendTrainer:
    """The training loop of the module docstring; :meth:`train` runs it, resuming from ``out_dir``.

    Args:
        model, tokenizer: the frozen base model and its tokenizer (right padding).
        modules: the edited ``nn.Linear`` matrices.
        settings: :class:`~crispedit_lite.editing.editors.mend.MendSettings`.
        train, val: edit requests (with ``rephrase_prompt``; ``locality_prompt`` and
            ``locality_answer`` join the locality batch as a sentence when present).
        loc_texts: capability texts cut into locality windows (``None``: the facts alone).
        out_dir: checkpoint, editor files and the training curve.

    Listed on the book page ``api``.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, modules: Sequence[str], settings: MendSettings,
                 train: Sequence[Any], val: Sequence[Any], loc_texts: Sequence[str] | None,
                 out_dir: str | Path, seed: int = 0) -> None:
        self.model, self.tok, self.modules, self.s = model, tokenizer, list(modules), settings
        self.train_set = list(train)
        # a seeded sample spreads the validation edits over the held-out subjects
        self.val_set = random.Random(seed).sample(list(val), min(settings.mend_val_size, len(val)))
        if not self.train_set or not self.val_set:
            raise ValueError("MEND training needs training and validation requests")
        self.windows = (locality_windows(tokenizer, loc_texts, settings.mend_loc_max_length)
                        if loc_texts else [])
        self.out, self.seed = Path(out_dir), seed
        for p in model.parameters():
            p.requires_grad_(False)
        self.device = model.get_submodule(self.modules[0]).weight.device
        shapes = {m: tuple(model.get_submodule(m).weight.shape) for m in self.modules}
        torch.manual_seed(seed)
        self.net = MendNetwork(shapes, edit_lr=settings.mend_edit_lr, **settings.network()).to(self.device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=settings.mend_lr)
        self.lr_opt = torch.optim.Adam([self.net.edit_lrs], lr=settings.mend_lr_lr)
        self.step, self.curve, self.best = 0, {"train": [], "val": []}, None
        self.wall = 0.0

    # --- one edit -------------------------------------------------------------------------------
    def _locality(self, r: Any, k: int) -> list[list[int]]:
        seqs = []
        if self.windows:
            seqs.append(random.Random(self.seed * 1_000_003 + k).choice(self.windows))
        if getattr(r, "locality_prompt", None) and getattr(r, "locality_answer", None):
            seqs.append(list(self.tok(f"{r.locality_prompt} {r.locality_answer}")["input_ids"]))
        if not seqs:
            raise ValueError(f"request {r.case_id!r}: no locality text (no capability text, no "
                             "locality fact)")
        return seqs

    def _batches(self, r: Any, k: int) -> tuple[dict, dict, int]:
        """The base pass (edit + locality rows) and the edited pass (outer + locality rows); ``n_loc``."""
        inner = tokenize_edits([r], self.tok)
        prompts = [r.rephrase_prompt or r.prompt]
        if self.s.mend_outer == "prompt+paraphrase":
            prompts.insert(0, r.prompt)
        outer = tokenize_edits([(p, r.target_new) for p in prompts], self.tok)
        loc = self._locality(r, k)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id

        def join(b: dict) -> dict:
            n = b["attention_mask"].sum(1).tolist()
            ids = [b["input_ids"][i, :m].tolist() for i, m in enumerate(n)] + loc
            labels = [b["labels"][i, :m].tolist() for i, m in enumerate(n)] + [[-100] * len(x) for x in loc]
            return {key: v.to(self.device) for key, v in pad_batch(ids, labels, pad).items()}

        return join(inner), join(outer), len(loc)

    def edit_step(self, r: Any, k: int, training: bool) -> dict[str, float]:
        """One edit of request ``r`` (step ``k``); backpropagates ``loss / accumulate`` when training."""
        from torch.func import functional_call

        base, edited, n_loc = self._batches(r, k)
        nll_pre, factors, base_logits = collect_factors(self.model, base, self.modules)
        self.net.train(training)
        with torch.set_grad_enabled(training):
            deltas = self.net.deltas(factors)
            weights = {m: self.model.get_submodule(m).weight for m in deltas}
            params = {f"{m}.weight": w + deltas[m].to(w.dtype) for m, w in weights.items()}
            logits = functional_call(self.model, params, args=(), kwargs={
                "input_ids": edited["input_ids"], "attention_mask": edited["attention_mask"]}).logits
            n_out = logits.shape[0] - n_loc
            l_edit, acc = target_nll(logits[:n_out], edited["labels"][:n_out])
            width = min(base_logits.shape[1], logits.shape[1])  # the locality rows, padded in both passes
            l_loc = kl_on_mask(base_logits[-n_loc:, :width], logits[-n_loc:, :width],
                               base["attention_mask"][-n_loc:, :width])
            total = self.s.mend_c_edit * l_edit + self.s.mend_c_loc * l_loc
        if training:
            params_net = list(self.net.parameters())
            grads = torch.autograd.grad(total / self.s.mend_accumulate, params_net, allow_unused=True)
            if all(g is None or torch.isfinite(g).all() for g in grads):  # official safe_backward
                for p, g in zip(params_net, grads, strict=True):
                    if g is not None:
                        p.grad = g if p.grad is None else p.grad + g
        total, l_edit, l_loc = total.detach(), l_edit.detach(), l_loc.detach()
        return {"loss": float(total), "l_edit": float(l_edit), "kl": float(l_loc), "edit_acc": float(acc),
                "nll_pre": float(nll_pre)}

    # --- loop -----------------------------------------------------------------------------------
    def _request(self, k: int) -> Any:
        epoch, i = divmod(k, len(self.train_set))
        order = list(range(len(self.train_set)))
        random.Random(self.seed + epoch).shuffle(order)
        return self.train_set[order[i]]

    def validate(self) -> dict[str, float]:
        """Mean edit loss, KL, edit success and total over the validation requests (eval mode)."""
        rows = [self.edit_step(r, -1 - i, training=False) for i, r in enumerate(self.val_set)]
        out = {k: sum(row[k] for row in rows) / len(rows) for k in rows[0]}
        out["total_edit"] = self.s.mend_c_edit * out["l_edit"] + self.s.mend_c_loc * out["kl"]
        return out

    def _optimise(self) -> float:
        grad = float(torch.nn.utils.clip_grad_norm_(list(self.net.parameters()), self.s.mend_grad_clip))
        self.opt.step()
        self.lr_opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.lr_opt.zero_grad(set_to_none=True)
        return grad

    def _save(self, name: str, obj: Any) -> None:
        with atomic_path(self.out / name) as tmp:
            torch.save(obj, tmp)

    def checkpoint(self) -> None:
        """Write everything needed to resume (atomically)."""
        self._save("checkpoint.pt", {"net": self.net.state_dict(), "opt": self.opt.state_dict(),
                                     "lr_opt": self.lr_opt.state_dict(), "step": self.step,
                                     "curve": self.curve, "best": self.best, "wall": self.wall,
                                     "settings": self.s.to_dict()})

    def resume(self) -> bool:
        """Load ``out_dir/checkpoint.pt`` if there is one; whether it did (``mend_steps`` may differ).

        A checkpoint that names the settings without their ``mend_`` prefix (as the first trainer wrote
        them) is read with the prefix.
        """
        path = self.out / "checkpoint.pt"
        if not path.is_file():
            return False
        ck = torch.load(path, map_location=self.device, weights_only=False)
        mine = {k: v for k, v in settings_record(self.s).items() if k != "mend_steps"}  # a budget
        theirs = {k if k.startswith("mend_") else f"mend_{k}": v for k, v in ck["settings"].items()}
        changed = sorted(k for k in mine if theirs.get(k) != mine[k])
        if changed:
            raise ValueError(f"{path}: the checkpoint was written with other MEND settings ({changed}); "
                             "use a new --out")
        self.net.load_state_dict(ck["net"])
        self.opt.load_state_dict(ck["opt"])
        self.lr_opt.load_state_dict(ck["lr_opt"])
        self.step, self.curve, self.best, self.wall = ck["step"], ck["curve"], ck["best"], ck["wall"]
        return True

    def train(self, progress: bool = True, log_every: int = 25,
              metadata: dict[str, str] | None = None) -> dict:
        """Train up to ``mend_steps`` edits (resuming); returns the curve. Writes ``best.safetensors``."""
        from tqdm.auto import tqdm

        self.out.mkdir(parents=True, exist_ok=True)
        self.resume()
        window: list[dict[str, float]] = []
        bar = tqdm(total=self.s.mend_steps, initial=self.step, desc="MEND training", disable=not progress)
        start = time.perf_counter() - self.wall
        while self.step < self.s.mend_steps:
            row = self.edit_step(self._request(self.step), self.step, training=True)
            self.step += 1
            if self.step % self.s.mend_accumulate == 0:
                row["grad_norm"] = self._optimise()
            window.append(row)
            if self.step % log_every == 0:
                mean = {k: sum(w.get(k, 0.0) for w in window) / len(window) for k in row if k != "grad_norm"}
                lrs = [round(float(x), 7) for x in self.net.edit_lrs.detach()]
                self.curve["train"].append({"step": self.step, **mean, "edit_lrs": lrs})
                bar.set_postfix(loss=f"{mean['loss']:.3f}", acc=f"{mean['edit_acc']:.2f}",
                                kl=f"{mean['kl']:.3f}")
                window = []
            if self.step % self.s.mend_val_every == 0 or self.step == self.s.mend_steps or self.step == 1:
                val = self.validate()
                self.wall = time.perf_counter() - start
                self.curve["val"].append({"step": self.step, **val, "wall_s": round(self.wall, 1)})
                if self.step > 1 and (self.best is None or val["total_edit"] < self.best["total_edit"]):
                    self.best = {"step": self.step, **val}
                    save_editor(self.net, self.out / "best.safetensors", metadata=metadata)
                self.checkpoint()
            bar.update(1)
        bar.close()
        self.wall = time.perf_counter() - start
        return self.curve


def settings_record(settings: MendSettings) -> dict[str, Any]:
    """The settings a trained network depends on: every ``mend_*`` field but the edit-time ones.

    Listed on the book page ``api``.
    """
    from crispedit_lite.editing.editors.mend import EDIT_TIME

    return {k: v for k, v in settings.to_dict().items() if k not in EDIT_TIME}


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically (:func:`crispedit_lite.atomic.write_json_atomic`).

    Listed on the book page ``api``.
    """
    path = Path(path)
    write_json_atomic(path, obj, indent=1)
    return path
