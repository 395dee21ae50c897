r"""Long-horizon sequential editing on a CPU: thousands of edits in chunks, measured after every chunk.

Every editor of :data:`TRACKS` edits the embedded SmolLM2 with the shipped stream
(``load_edits("smollm2-stream")``, cities -> country / US state, every fact known to the base model)
chunk after chunk, from the same base weights and in the same order, handing its state from chunk to
chunk (``edit(..., carry=)``: exactly one sequential run, split into calls). After every chunk it
records

* reliability on the chunk just edited (teacher-forced token accuracy and the ROME/MEMIT probability
  test :math:`P(\text{new})>P(\text{true})`; Rel on the prompt, Gen on the paraphrase, Loc on the
  neighbourhood prompt), and the retained reliability (TF and PROB on the prompts) of a fixed random
  sample of the edits of all earlier chunks (``--retained`` edits: the first ones of one seeded order
  of the stream that lie in earlier chunks);
* the damage: mean per-token KL to the base model and perplexity on held-out capability text;
* the health of every edited matrix (:mod:`crispedit_lite.evaluation.health`): norms, ``||dW||``,
  condition number, overlap of the top-``k`` singular subspaces with the base weights, and the share of
  the update in the protected subspace of the CrispEdit projector built from the capability factors of
  that matrix at ``--gamma`` (one ruler for every editor).

The run is resumable per (editor, chunk): after every chunk the edited weights, the editor's carried
state and the rows so far are saved atomically under ``--checkpoint-dir``; a rerun with the same
settings goes on from there (a larger ``--n-edits`` extends a finished run). The editors of one
process share one model and take turns, one chunk each, so all of them advance together; each writes
its own JSON (``--out`` with ``{editor}``), so editors can also run in separate processes.

Usage (one CPU thread; the cost of every chunk is in the JSON, ``rows[*].edit_s`` and ``eval_s``)::

    OMP_NUM_THREADS=1 python benchmarks/long_horizon.py --editors crispedit_seq,ft_seq,ultraedit
    OMP_NUM_THREADS=1 python benchmarks/long_horizon.py --editors alphaedit_seq,memit_seq
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from crispedit_lite.data import load_edits, read_records
from crispedit_lite.data.capability import capability_texts
from crispedit_lite.data.edits import records_digest
from crispedit_lite.editing import capability_factors, cpu_config, edit, needs_capability
from crispedit_lite.editing.kfac_cache import build_projectors
from crispedit_lite.editing.registry import get_editor
from crispedit_lite.evaluation import (
    default_proxy_texts,
    kl_to_base,
    perplexity,
    probability_evaluate,
    teacher_forced_evaluate,
    token_logprobs,
)
from crispedit_lite.evaluation.health import TOP_K, base_spectrum, layer_health, pooled_health
from crispedit_lite.models import cache_root, load_model
from crispedit_lite.reproduction.results import write_json_atomic


@dataclasses.dataclass(frozen=True)
class Track:
    """One editor of the comparison: its registry method, config changes, and edits one at a time."""

    method: str
    changes: dict[str, Any] = dataclasses.field(default_factory=dict)
    batch: int | None = None  # edits per edit() call: None the whole chunk


# The gradient editors train each chunk with the official sequential runs' budget (CrispEdit App. E:
# batch 32, at most 25 epochs per chunk of 100, stop once the epoch loss is below 0.01; Adam 5e-4).
PAPER_CHUNK = {"batch_size": 32, "epochs": 25}
# One line per editor. UltraEdit's official step size (1e-6) barely moves SmolLM2; 1e-4 is the value
# its sweep on this model picked (book/ultraedit.md), as in benchmarks/cpu_table1.py. MEMIT-Seq and
# AlphaEdit-Seq solve each chunk in batches of 25 edits (the key cache carried between them): one batch
# of 100 needs about 14 GB on a CPU (the target-value optimisation of all edits and templates at once);
# the official MEMIT row also ran in batches of 32.
TRACKS: dict[str, Track] = {
    "crispedit_seq": Track("crispedit_seq", PAPER_CHUNK),
    "alphaedit_seq": Track("alphaedit_seq", batch=25),
    "memit_seq": Track("memit_seq", batch=25),
    "ft_seq": Track("ft_seq", PAPER_CHUNK),
    "ultraedit": Track("ultraedit", {"ultra_lr": 1e-4}),
    # "memit_chunked": Track("memit_chunked"),
    "mend_seq": Track("mend_seq"),  # one edit per MEND step, in the chunk's seeded order; carries nothing
}
STREAM = "smollm2-stream"
MODEL = "smollm2-135m-instruct"
OUT = str(Path(__file__).resolve().parents[1] / "crispedit_lite" / "resources" / "results"
          / "long-horizon-smollm2-{editor}.json")  # package data
PROXY_MAX_LENGTH = 128


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then ``os.replace`` (never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def prompts_only(records: list[Any]) -> list[Any]:
    """The records without paraphrase and neighbourhood prompt (retained reliability reads the prompt)."""
    return [dataclasses.replace(r, rephrase_prompt=None, locality_prompt=None, locality_answer=None)
            for r in records]


def reliability(model, tok, records: list[Any], full: bool) -> dict[str, float | int | None]:
    """TF and PROB Rel (and, ``full``, Gen and Loc) over ``records``, x100."""
    recs = records if full else prompts_only(records)
    tf = teacher_forced_evaluate(model, tok, recs, batch_size=32)["scores"]
    pr = probability_evaluate(model, tok, recs, batch_size=32)["scores"]
    out = {"n": len(records), "tf_rel": tf["rel"], "prob_rel": pr["rel"]}
    if full:
        out.update(tf_gen=tf["gen"], tf_loc=tf["spec"], prob_gen=pr["gen"], prob_loc=pr["loc"])
    return out


class Stream:
    """The edit stream in chunks, the retained sample, and the held-out text with its base log-probs."""

    def __init__(self, model, tok, args) -> None:
        self.records = load_edits(args.stream)
        n = len(self.records)
        if n < args.n_edits:
            raise SystemExit(f"--n-edits {args.n_edits}: the stream has {n} records")
        c = args.chunk_size
        self.chunks = [self.records[i:i + c] for i in range(0, args.n_edits, c)]
        self.order = random.Random(args.seed).sample(range(n), n)  # the same for any --n-edits
        self.retained, self.size = args.retained, c
        self.digest = records_digest(read_records(args.stream))
        self.proxy = default_proxy_texts(args.n_proxy, seed=0)
        self.base_lp = token_logprobs(model, tok, self.proxy, max_length=PROXY_MAX_LENGTH)

    def earlier(self, k: int) -> list[Any]:
        """The retained sample after chunk ``k``: up to ``retained`` edits of chunks ``0..k-1``."""
        return [self.records[i] for i in self.order if i < k * self.size][:self.retained]

    def damage(self, model, tok) -> dict[str, float]:
        """KL to the base model and perplexity on the held-out text."""
        kw = {"max_length": PROXY_MAX_LENGTH, "batch_size": 4}
        return {"kl": kl_to_base(model, tok, self.proxy, base=self.base_lp, **kw),
                "ppl": perplexity(model, tok, self.proxy, **kw)}


class Health:
    """Base spectra and protected-subspace projectors of an editor's matrices, built at the base weights."""

    def __init__(self, model, tok, modules: list[str], caps: list[str], cfg, gamma: float) -> None:
        self.modules = modules
        self.W0 = {m: model.get_submodule(m).weight.detach().to("cpu", copy=True) for m in modules}
        self.spectra = {m: base_spectrum(w, TOP_K) for m, w in self.W0.items()}
        factors, _ = capability_factors(model, tok, modules, caps, max_length=cfg.capability_max_length,
                                        labels=cfg.kfac_labels, seed=cfg.seed, progress=False)
        projectors, self.stats = build_projectors(model, factors, gamma, rule=cfg.rule)
        by_weight = {id(model.get_submodule(m).weight): m for m in modules}
        self.projectors = {by_weight[id(w)]: p for w, p in projectors.items()}

    def measure(self, model) -> dict[str, Any]:
        """Per matrix :func:`layer_health`, and :func:`pooled_health` over them."""
        per = {m: layer_health(model.get_submodule(m).weight, self.W0[m], k=TOP_K,
                               projector=self.projectors[m], base=self.spectra[m]) for m in self.modules}
        return {"pooled": pooled_health(per),
                "per_layer": {m: {k: v for k, v in h.items() if k not in ("delta_sq", "leak_sq", "k")}
                              for m, h in per.items()}}


class TrackRun:
    """One editor's run over the stream, one chunk per :meth:`step`, resumable from its checkpoint.

    Several runs share one model: :meth:`step` puts this run's weights in, edits one chunk, measures,
    saves, and puts the base weights back, so the editors of one process take turns chunk by chunk.
    """

    def __init__(self, name: str, model, tok, stream: Stream, caps: list[str], args, base_row: dict) -> None:
        self.name, self.model, self.tok, self.stream = name, model, tok, stream
        self.caps, self.args = caps, args
        self.track, self.base_row = TRACKS[name], base_row
        self.editor = get_editor(self.track.method)
        size = self.track.batch or args.chunk_size
        self.cfg = cpu_config(self.track.method, chunk_size=size, seed=args.seed, gamma=args.gamma,
                              **self.track.changes)
        self.ckpt = Path(args.checkpoint_dir) / f"{name}-{stream.digest[:12]}-c{args.chunk_size}.pt"
        self.out = Path(args.out.format(editor=name))
        settings = {"config": self.cfg.to_dict(), "stream_sha256": stream.digest,
                    "chunk_size": args.chunk_size, "batch": self.track.batch,
                    "retained": args.retained, "seed": args.seed}
        self.state = {"rows": [], "carry": {}, "modules": None, "weights": {}, "settings": settings}
        if self.ckpt.exists() and not args.restart:
            self.state = torch.load(self.ckpt, weights_only=False)
            if self.state["settings"] != settings:
                raise SystemExit(f"{self.ckpt}: saved with other settings; pass --restart to start over")
        # built while the model holds the base weights (every run is parked between steps)
        self.health = None if self.state["modules"] is None else \
            Health(model, tok, self.state["modules"], caps, self.cfg, args.gamma)

    @property
    def done(self) -> bool:
        """Whether every chunk of the stream is edited and measured."""
        return len(self.state["rows"]) >= len(self.stream.chunks)

    def _put(self, weights: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for m, w in weights.items():
                self.model.get_submodule(m).weight.copy_(w)

    def step(self) -> dict[str, Any]:
        """Edit the next chunk from this run's weights, measure, checkpoint, write; leave the base weights."""
        model, tok, stream, state, args = self.model, self.tok, self.stream, self.state, self.args
        k = len(state["rows"])
        chunk = stream.chunks[k]
        self._put(state["weights"])
        texts = self.caps if needs_capability(self.track.method) else None
        kw = dict(capability_texts=texts, carry=state["carry"], progress=False)
        t = time.perf_counter()
        size = self.track.batch or len(chunk)
        results = [edit(model, tok, chunk[i:i + size], self.cfg, **kw) for i in range(0, len(chunk), size)]
        edit_s = time.perf_counter() - t
        if self.health is None:  # first chunk: the base weights are the result's originals
            state["modules"] = list(results[0].modules)
            edited = {m: model.get_submodule(m).weight.detach().clone() for m in state["modules"]}
            results[0].restore(model)
            self.health = Health(model, tok, state["modules"], self.caps, self.cfg, args.gamma)
            self._put(edited)
        t = time.perf_counter()
        logs = [log for res in results for log in res.logs]
        row = {"chunk": k, "edits_applied": sum(len(c) for c in stream.chunks[:k + 1]),
               "current": reliability(model, tok, chunk, full=True),
               "retained": reliability(model, tok, stream.earlier(k), full=False) if k else None,
               **stream.damage(model, tok), "health": self.health.measure(model),
               "steps": sum(log.steps for log in logs) if logs else None,
               "final_loss": logs[-1].epoch_losses[-1] if logs and logs[-1].epoch_losses else None,
               "edit_s": round(edit_s, 1)}
        row["eval_s"] = round(time.perf_counter() - t, 1)
        state["rows"].append(row)
        state["weights"] = {m: model.get_submodule(m).weight.detach().to("cpu", copy=True)
                            for m in state["modules"]}
        save_atomic(state, self.ckpt)
        write_record(self, args)
        self._put(self.health.W0)  # park: the next run starts from the base weights
        return row


def write_record(run: TrackRun, args) -> None:
    """The editor's JSON: settings, the base model's row and one row per chunk (atomic)."""
    rows, stream = run.state["rows"], run.stream
    write_json_atomic(run.out, {
        "command": "python benchmarks/long_horizon.py " + " ".join(args.argv),
        "model": MODEL, "editor": run.name, "method": run.track.method, "label": run.editor.label,
        "batch": run.track.batch or args.chunk_size, "config": run.cfg.to_dict(),
        "modules": run.health.modules,
        "stream": {"name": args.stream, "records_sha256": stream.digest, "n_edits": args.n_edits,
                   "chunk_size": args.chunk_size, "n_chunks": len(stream.chunks)},
        "evaluation": {"retained_sample": args.retained, "proxy_texts": args.n_proxy,
                       "proxy_max_length": PROXY_MAX_LENGTH, "top_k": TOP_K, "protected_gamma": args.gamma,
                       "protected_rule": run.cfg.rule,
                       "editable_fraction": {m: s["editable_fraction"] for m, s in run.health.stats.items()}},
        "base": run.base_row, "rows": rows, "done": run.done,
        "edit_s": round(sum(r["edit_s"] for r in rows), 1),
        "eval_s": round(sum(r["eval_s"] for r in rows), 1),
        "threads": torch.get_num_threads(), "created": time.strftime("%Y-%m-%d %H:%M")})


def main(argv: list[str] | None = None) -> int:
    """Run the chosen editors over the stream, one after the other, resuming each where it stopped."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--editors", default=",".join(TRACKS), help=f"comma-separated, of {list(TRACKS)}")
    ap.add_argument("--n-edits", type=int, default=2000)
    ap.add_argument("--chunk-size", type=int, default=100)
    ap.add_argument("--gamma", type=float, default=0.999,
                    help="CrispEdit-Seq's energy threshold, also the protected-share ruler's (paper: 0.999)")
    ap.add_argument("--retained", type=int, default=200, help="earlier edits re-measured after each chunk")
    ap.add_argument("--n-proxy", type=int, default=8, help="held-out capability texts for KL and PPL")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stream", default=STREAM, help="the edit stream (a built-in set or a file)")
    ap.add_argument("--out", default=OUT, help="JSON path per editor, with {editor}")
    ap.add_argument("--checkpoint-dir", default=str(cache_root() / "long_horizon"))
    ap.add_argument("--restart", action="store_true", help="ignore existing checkpoints")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    names = [n for n in args.editors.split(",") if n]
    unknown = [n for n in names if n not in TRACKS]
    if unknown or args.n_edits < args.chunk_size or args.chunk_size < 1 or "{editor}" not in args.out:
        ap.error(f"--editors: unknown {unknown}, known {list(TRACKS)}" if unknown else
                 "--n-edits must be at least --chunk-size >= 1, and --out must contain {editor}")
    torch.manual_seed(0)
    model, tok = load_model(MODEL)
    stream = Stream(model, tok, args)
    caps = list(capability_texts("offline", n=32, seed=0))
    base_row = {"edits_applied": 0, "current": reliability(model, tok, stream.chunks[0], full=True),
                **stream.damage(model, tok)}
    runs = [TrackRun(name, model, tok, stream, caps, args, base_row) for name in names]
    total = len(runs) * len(stream.chunks)
    bar = tqdm(total=total, initial=sum(len(r.state["rows"]) for r in runs), desc="chunks")
    while not all(r.done for r in runs):  # the editors take turns, one chunk each
        for run in (r for r in runs if not r.done):
            row = run.step()
            bar.update(1)
            p = row["health"]["pooled"]
            ret = row["retained"]["tf_rel"] if row["retained"] else float("nan")
            bar.write(f"{run.name} chunk {row['chunk'] + 1}: TF Rel {row['current']['tf_rel']:.1f} retained "
                      f"{ret:.1f} KL {row['kl']:.4f} PPL {row['ppl']:.2f} |W|/|W0| {p['norm_ratio']:.4f} "
                      f"cond {p['cond']:.1f} edit {row['edit_s']:.0f} s eval {row['eval_s']:.0f} s")
    bar.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
