"""What several test modules share that is not a fixture: paths, tiny tokenizers and models, edit data.

Test modules import from here (``from tests.helpers import ...``), never from each other; the fixtures
built on these helpers live in ``tests/conftest.py`` (and ``tests/evaluation/conftest.py``).

* paths: :data:`ROOT` (the repository), :data:`NOTEBOOK_DIR`, :func:`notebook_paths`;
* :func:`word_tokenizer`, the one offline word-level tokenizer, and the vocabularies it is built on:
  :func:`tiny_tokenizer` for the editing tests (with :data:`CAP_TEXT`, :data:`REQUESTS`,
  :func:`edit_config`), :func:`qa_tokenizer` with :func:`tiny_model` and :func:`constant_model` for the
  evaluation tests;
* the random Kronecker projectors and the tiny MLP trainer of the ``fastproject`` tests;
* results records shaped like the command line writes them, for the ``reproduction`` and ``teaching``
  tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crispedit_lite.data import EditRequest
from crispedit_lite.editing import EditConfig
from crispedit_lite.fastproject import TokenFactorCapture
from crispedit_lite.projector import KroneckerProjector

# --- paths -------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"


def notebook_paths() -> list[Path]:
    """The book's chapters: ``notebooks/*.ipynb`` in reading order (checkpoints excluded)."""
    return sorted(p for p in NOTEBOOK_DIR.glob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


# --- the word-level tokenizer ----------------------------------------------------------------------------

#: the special words that begin every vocabulary here: unknown, BOS, EOS
SPECIALS = ["<unk>", "<s>", "</s>"]


def word_tokenizer(words: Sequence[str], *, bos_token: str | None = "<s>", add_bos: bool = False,
                   pad_token: str | None = None, qa: bool = False) -> Any:
    """A word-level tokenizer built offline: token ``i`` is ``words[i]``, unknown words are ``<unk>``.

    EOS is ``</s>``; ``bos_token`` and ``pad_token`` are declared when given, and ``add_bos`` makes the
    tokenizer prepend BOS like LLaMA-3's. Words are split on whitespace; ``qa=True`` lower-cases, also
    splits off newlines and punctuation (questions such as ``"capital of france ?"``) and decodes with
    spaces between words.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    if qa:
        tk.normalizer = normalizers.Lowercase()
        tk.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split("\n", "isolated"),
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Punctuation(),
        ])
        tk.decoder = decoders.WordPiece(prefix="##")
    else:
        tk.pre_tokenizer = pre_tokenizers.Whitespace()
    if add_bos:
        tk.post_processor = processors.TemplateProcessing(
            single=f"{bos_token} $A", special_tokens=[(bos_token, list(words).index(bos_token))])
    special = {k: v for k, v in (("bos_token", bos_token), ("pad_token", pad_token)) if v is not None}
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="</s>", **special)


# --- editing: the tiny Llama's words, capability text and edits --------------------------------------------

EDIT_WORDS = ["<unk>", "<s>", "</s>", "the", "capital", "of", "france", "is", "paris", "rome", "city",
              "germany", "berlin", "a", "b", "c", "d", "e", "f", "g", "h", "and", "in", "river", "on",
              "lies", "big", "small", "red", "blue", "green", "tree", "house", "dog", "cat", "runs"]
LAYERS = (1, 2)
CAP_TEXT = ("the big red dog runs in the small house and the blue cat lies on a green tree "
            "the river lies in the city of berlin and a b c d e f g h the dog and the cat "
            "runs on the red house")  # 47 tokens: A (64 x 64) is rank-deficient, S (32 x 32) is not
REQUESTS = [
    EditRequest("the capital of france is", "rome", rephrase_prompt="the city of france is",
                locality_prompt="the capital of germany is", locality_answer="berlin"),
    EditRequest("the river of germany is", "blue"),
    EditRequest("a big dog is", "green"),
]
#: the K-FAC cache tests' edited modules and capability texts (also read by their killed subprocess)
CACHE_MODULES = ["model.layers.1.mlp.down_proj", "model.layers.2.mlp.down_proj"]
CACHE_TEXTS = [CAP_TEXT, "the dog runs", "a b c d e f g h", "the cat lies on the red house",
               "berlin is a big city", "the river lies in the city"]


def tiny_tokenizer() -> Any:
    """The editing tests' tokenizer over :data:`EDIT_WORDS` (no BOS added; EOS pads, as the library does)."""
    from crispedit_lite.models import prepare_tokenizer

    return prepare_tokenizer(word_tokenizer(EDIT_WORDS))


def edit_config(method: str, **kw: Any) -> EditConfig:
    """A fast :class:`EditConfig` for the tiny Llama (layers :data:`LAYERS`, offline capability text)."""
    base = dict(method=method, layers=LAYERS, epochs=3, batch_size=2, lr=1e-2, gamma=0.7,
                n_capability=1, capability_max_length=64, capability_source="offline",
                chunk_size=2, early_stop=1e-6)
    base.update(kw)
    return EditConfig(**base)


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every parameter, by name."""
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def changed_since(before: dict[str, torch.Tensor], model: nn.Module) -> set[str]:
    """The names of the parameters that differ (bit for bit) from :func:`weights_of`'s copy."""
    return {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}


# --- evaluation: a question-answering vocabulary, a tiny Llama over it ------------------------------------

QA_WORDS = ["<pad>", "<s>", "</s>", "<unk>", ".", "\n", "?", ":", ",", "please", "answer", "the", "question",
            "q", "a", "an", "paris", "london", "rome", "is", "capital", "of", "france", "italy", "city"]
QA_WORDS += [f"w{i}" for i in range(60)]
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} ; {% endfor %}"
                 "{% if add_generation_prompt %}assistant :{% endif %}")


def qa_tokenizer() -> Any:
    """The evaluation tests' tokenizer over :data:`QA_WORDS`: adds BOS, pads with ``<pad>`` on the right."""
    tok = word_tokenizer(QA_WORDS, add_bos=True, pad_token="<pad>", qa=True)
    tok.padding_side = "right"
    return tok


def tiny_model(seed: int = 0) -> nn.Module:
    """A randomly initialised two-layer Llama over :data:`QA_WORDS` (hidden size 32), in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(QA_WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


def constant_model(word: str, seed: int = 0) -> nn.Module:
    """A tiny Llama whose head always prefers ``word`` (zero weights, one-hot bias)."""
    model = tiny_model(seed)
    head = nn.Linear(32, len(QA_WORDS), bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[QA_WORDS.index(word)] = 10.0
    model.lm_head = head
    return model


def teacher_forced_by_hand(model: nn.Module, tok: Any, prompt: str, target: str) -> tuple[float, float]:
    """Token accuracy and mean NLL of ``target`` after ``prompt``, one unpadded sequence at a time."""
    import torch.nn.functional as F

    ids = tok(prompt + " " + target).input_ids
    n_prompt = len(tok(prompt).input_ids)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    hits = [int(logits[t - 1].argmax()) == ids[t] for t in range(n_prompt, len(ids))]
    nll = F.cross_entropy(logits[n_prompt - 1 : len(ids) - 1], torch.tensor(ids[n_prompt:]))
    return sum(hits) / len(hits), float(nll)


# --- fastproject: random Kronecker projectors, a tiny MLP and its trainer ----------------------------------

F64 = torch.float64


def _factor(d: int, n: int, gen: torch.Generator, decay: float = 1.0, massive: bool = False) -> torch.Tensor:
    """A PSD factor with a decaying (optionally one massive direction) spectrum."""
    x = torch.randn(n, d, generator=gen, dtype=F64) * torch.arange(1, d + 1, dtype=F64) ** (-decay)
    x = x @ torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=F64))[0]
    if massive:
        x[:, 0] += 30.0
    return x.T @ x / n


def _tied_factor(d: int, gen: torch.Generator, levels: Sequence[float] = (4.0, 4.0, 1.0)) -> torch.Tensor:
    """A PSD factor with exactly tied eigenvalues (ties in the sort and at the cut)."""
    q = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=F64))[0]
    ev = torch.tensor([levels[i % len(levels)] for i in range(d)], dtype=F64)
    return (q * ev) @ q.T


def random_projector(d_out: int, d_in: int, gamma: float, seed: int = 0, rule: str = "paper",
                     tied: bool = False, massive: bool = False) -> KroneckerProjector:
    """The reference :class:`KroneckerProjector` (float64) of seeded random K-FAC factors."""
    gen = torch.Generator().manual_seed(seed)
    if tied:
        A, S = _tied_factor(d_in, gen), _tied_factor(d_out, gen, (2.0, 1.0))
    else:
        A = _factor(d_in, 3 * d_in, gen, massive=massive)
        S = _factor(d_out, 3 * d_out, gen, decay=0.5)
    return KroneckerProjector.from_factors(A, S, gamma, rule=rule, dtype=F64, rtol=1e-6)


def rel_err(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | None = None) -> float:
    """Relative error; against ``scale``'s norm when the reference may vanish (gamma = 1)."""
    den = (b if scale is None else scale).norm().clamp_min(1e-300)
    return float((a - b).detach().norm() / den.detach())


class TinyMLP(nn.Module):
    """``down(tanh(up(x)))`` in float64 with seeded weights: 6 -> 10 -> 6 by default."""

    def __init__(self, d: int = 6, h: int = 10, gen: torch.Generator | None = None) -> None:
        super().__init__()
        self.up = nn.Linear(d, h, dtype=F64)
        self.down = nn.Linear(h, d, bias=False, dtype=F64)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=F64) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.tanh(self.up(x)))


def train_tiny_mlp(opt_factory, model_factory, steps: int = 4, capture: bool = False,
                   micro: int = 1) -> nn.Module:
    """``steps`` seeded regression steps on ``down.weight`` alone (``micro`` backward passes each).

    ``opt_factory(model, capture)`` builds the optimiser; ``capture`` is a
    :class:`TokenFactorCapture` of ``down`` when asked for, else ``None``.
    """
    gen = torch.Generator().manual_seed(7)
    model = model_factory()
    for p in model.parameters():
        p.requires_grad_(False)
    model.down.weight.requires_grad_(True)
    cap = TokenFactorCapture({"down": model.down}) if capture else None
    opt = opt_factory(model, cap)
    for _ in range(steps):
        opt.zero_grad()
        for _ in range(micro):
            x = torch.randn(3, 5, 6, generator=gen, dtype=F64)
            y = torch.randn(3, 5, 6, generator=gen, dtype=F64)
            ((model(x) - y) ** 2).mean().backward()
        opt.step()
    return model


# --- reproduction: results records ------------------------------------------------------------------------

LLAMA = "meta-llama/Meta-Llama-3-8B-Instruct"
#: a reproduce/ cell's parameters for the embedded SmolLM2 on a CPU (the cpu preset with overrides)
CPU_PARAMETERS = dict(MODEL="smollm2-135m-instruct", DATASET="counterfact", DATA_PATH="smollm2-counterfacts",
                      N_EDITS=6, METHOD="crispedit", GAMMA=0.9, N_CAPABILITY=32, LAYERS=[20, 21],
                      SEQUENTIAL=False, CHUNK_SIZE=100, JUDGE=False, RUN_LM_EVAL=False,
                      RESULTS_DIR="results/cpu/x", SEED=0, DEVICE="cpu", DTYPE="float32", EPOCHS=8,
                      BATCH_SIZE=8)


def paper_run_record(run_id, model, n_edits, gamma, n_capability, source, created, dataset="zsre",
                     qa_rel=79.0) -> dict[str, Any]:
    """A results record shaped like crispedit_lite.cli writes it (evaluation.runner metrics)."""
    wild = {"scores": {"qa": {"rel": qa_rel, "gen": 60.0}, "none": {"rel": 50.0, "gen": 40.0}},
            "settings": {"scorer": "llm_judge:gpt-4o-mini"}}
    return {
        "schema_version": 1, "run_id": run_id, "created": created,
        "command": f"python -m crispedit_lite edit --model {model}",
        "settings": {"model": model, "dataset": dataset, "n_edits": n_edits, "method": "crispedit",
                     "seed": 0, "config": {"method": "crispedit", "gamma": gamma, "layers": None,
                                           "n_capability": n_capability, "capability_source": source,
                                           "chunk_size": 100}},
        "metrics": {"before": {"wild": {"scores": {"qa": {"rel": 2.5}}}},
                    "after": {"wild": wild, "teacher_forced": {"scores": {"rel": 98.0}},
                              "lm_eval": {"mmlu": {"score": 69.0, "metric": "acc,none"}}}},
        "timings": {"total_s": 500.0, "kfac_s": 300.0, "eval_after_s": 90.0},
        "environment": {"python": "3.11", "torch": "2", "device": "cuda", "packages": {}},
    }


def cell_run_record(run_id, *, model="smollm2-135m-instruct", data="smollm2-counterfacts",
                    dataset="counterfact", method="crispedit", gamma=0.9, n_edits=6,
                    created="2026-01-01T00:00:00+00:00") -> dict[str, Any]:
    """A results record of a reproduce/ cell run from :data:`CPU_PARAMETERS` with these changes."""
    from crispedit_lite.reproduction.cells import config_from_parameters

    cfg = config_from_parameters(dict(CPU_PARAMETERS, MODEL=model, DATASET=dataset, METHOD=method,
                                      GAMMA=gamma))[0]
    after = {"wild": {"scores": {"qa": {"rel": 50.0, "gen": 25.0}, "none": {"rel": 40.0, "gen": 20.0}},
                      "settings": {"scorer": "exact_match"}},
             "teacher_forced": {"scores": {"rel": 100.0, "gen": 80.0, "spec": 70.0}}}
    before = {"teacher_forced": {"scores": {"rel": 0.0, "gen": 10.0, "spec": 90.0}}}
    return {"schema_version": 1, "run_id": run_id, "created": created, "command": "c",
            "settings": {"model": model, "dataset": dataset, "data": data, "n_edits": n_edits,
                         "method": method, "seed": 0, "judge": False, "config": cfg.to_dict()},
            "metrics": {"before": before, "after": after}, "timings": {"total_s": 5.0, "kfac_s": 1.0},
            "environment": {"python": "3", "torch": "2", "device": "cpu", "packages": {}},
            "edit": {"projectors": {"model.layers.20.mlp.down_proj": {"editable_fraction": 0.9}}}}
