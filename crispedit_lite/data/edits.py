r"""Edit requests and the loaders for the datasets the paper edits with (CrispEdit §4.2).

An :class:`EditRequest` asks the model to complete ``prompt`` with ``target_new``; the optional
``rephrase_prompt`` tests generalisation and ``locality_prompt`` / ``locality_answer`` test that an
unrelated fact survives. :func:`load_edits` reads the record formats below from a local JSON / JSONL
file, a URL or a Hugging Face dataset (``"hf:owner/name"``). The fields the official code reads
(``zarifikram/CrispEdit``, ``utils.py:prepare_prompts_from_data_type``) are required, so a record it
would reject is rejected here too, with its index and field named.

* ``zsre``: MEND's ZsRE eval format, ``subject, src, alt, rephrase, loc, loc_ans`` (+ ``pred,
  answers, cond``). ``prompt = src``, ``target_new = alt``, ``rephrase_prompt = rephrase``,
  ``locality_prompt = loc[13:].capitalize() + "?"`` (drops the ``"nq question: "`` prefix;
  ``str.capitalize`` also lower-cases the rest, as in the official code), ``locality_answer =
  loc_ans``, ``ground_truth = answers[0]``.
* ``counterfact``: the official 3k files (``counterfact-edit_3k.json``, and
  ``wiki_big_edit_3k.json`` which has the same fields): ``prompt, target_new, subject,
  rephrase_prompt, locality_prompt, locality_ground_truth`` (+ ``case_id, ground_truth``).
* ``rome``: ROME's ``counterfact.json``, ``case_id, requested_rewrite{prompt, subject,
  target_new.str, target_true.str}, paraphrase_prompts, neighborhood_prompts``. ``prompt =
  requested_rewrite.prompt.format(subject)``; the first paraphrase and neighbourhood prompt (all are
  kept in ``extra``); ``locality_answer = ground_truth = target_true.str``, as the official code's
  ``multi_counterfact`` branch does.
* ``wikibigedit``: the official 3k file (as ``counterfact``), or the upstream WikiBigEdit fields as
  EasyEdit reads them (``easyeditor/dataset/wikibigedit.py``): ``subject, update, ans, rephrase,
  loc, loc_ans`` (+ ``ground_truth, personas, mhop, mhop_ans``).

``format="auto"`` picks the format from each record's keys. Unlisted fields go to ``extra``.
Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

import dataclasses
import json
import random
import urllib.request
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["EditRequest", "BUILTIN_DIGESTS", "BUILTIN_EDIT_SETS", "FORMATS", "drop_duplicates", "load_edits",
           "parse_records", "read_records"]

# Edit sets that ship inside the package (crispedit_lite/resources/).
BUILTIN_EDIT_SETS = {"smollm2-counterfacts": "smollm2_counterfacts.json",
                     "smollm2-mend-train": "smollm2_mend_train.json",  # MEND's training split
                     "smollm2-stream": "smollm2_stream.json"}  # the long-horizon stream (chapter 7)
#: SHA-256 of the records of a built-in set (canonical JSON: sorted keys, UTF-8, no spaces), checked at
#: every load: ``smollm2-stream`` is written by ``tools/make_edit_stream.py``, which prints the digest.
BUILTIN_DIGESTS = {"smollm2-stream":
                   "10b1ad353c8975c55e56049c2288e5507c6c56a7b6e695035907f083d8464c38"}


@dataclasses.dataclass(frozen=True)
class EditRequest:
    """One edit: make the model complete ``prompt`` with ``target_new``.

    Attributes:
        prompt: the edit prompt (a cloze or a question).
        target_new: the new answer (without or with a leading space; trainers add one if missing).
        subject: the entity whose fact is edited.
        rephrase_prompt: a paraphrase of ``prompt`` (generalisation).
        locality_prompt: an unrelated prompt whose answer must not change (specificity).
        locality_answer: the dataset's answer to ``locality_prompt``.
        ground_truth: the answer before the edit, when the dataset has it.
        case_id: the record's id in its dataset (its index when the dataset has none).
        extra: every other field of the source record.

    Listed on the book page ``api``.
    """

    prompt: str
    target_new: str
    subject: str | None = None
    rephrase_prompt: str | None = None
    locality_prompt: str | None = None
    locality_answer: str | None = None
    ground_truth: str | None = None
    case_id: int | str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("prompt", "target_new"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"EditRequest {self.case_id!r}: {name} must be a non-empty "
                                 f"string, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """Return the request as a JSON-serialisable dict."""
        return dataclasses.asdict(self)


_REQUIRED = {
    "zsre": ("subject", "src", "alt", "rephrase", "loc", "loc_ans"),
    "counterfact": ("prompt", "target_new", "subject", "rephrase_prompt", "locality_prompt",
                    "locality_ground_truth"),
    "rome": ("requested_rewrite.prompt", "requested_rewrite.subject",
             "requested_rewrite.target_new.str", "requested_rewrite.target_true.str",
             "paraphrase_prompts", "neighborhood_prompts"),
    "wikibigedit-upstream": ("subject", "update", "ans", "rephrase", "loc", "loc_ans"),
}
_NAMES = {"zsre": "ZsRE MEND", "counterfact": "CounterFact (official 3k)",
          "rome": "ROME CounterFact", "wikibigedit-upstream": "WikiBigEdit (upstream)"}
FORMATS = ("auto", "zsre", "counterfact", "rome", "wikibigedit")


def _get(record: Mapping[str, Any], path: str, index: int, fmt: str) -> Any:
    """Return ``record[a][b]...`` for ``path = "a.b"``; a missing or empty field is a ValueError."""
    value: Any = record
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            raise ValueError(f"record {index}: field {path!r} is missing ({_NAMES[fmt]} format "
                             f"expects {', '.join(_REQUIRED[fmt])})")
        value = value[key]
    if isinstance(value, list):
        if not value or not all(isinstance(v, str) for v in value):
            raise ValueError(f"record {index}: field {path!r} must be a non-empty list of strings, "
                             f"got {value!r:.80}")
    elif not isinstance(value, str) or not value.strip():
        raise ValueError(f"record {index}: field {path!r} must be a non-empty string, "
                         f"got {value!r:.80}")
    return value


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) else value


def _detect(record: Any, index: int) -> str:
    if not isinstance(record, Mapping):
        raise ValueError(f"record {index}: expected a JSON object, got {type(record).__name__}")
    if "requested_rewrite" in record:
        return "rome"
    if "src" in record and "alt" in record:
        return "zsre"
    if "update" in record and "ans" in record:
        return "wikibigedit-upstream"
    if "prompt" in record and "target_new" in record:
        return "counterfact"
    raise ValueError(f"record {index}: cannot tell the format from its keys {sorted(record)}; "
                     f"pass format= one of {FORMATS[1:]}")


def _parse(record: Mapping[str, Any], index: int, fmt: str) -> EditRequest:
    raw = {p: _get(record, p, index, fmt) for p in _REQUIRED[fmt]}
    g = {p: _first(v) for p, v in raw.items()}  # a list of prompts / answers: its first item
    used = {p.split(".")[0] for p in _REQUIRED[fmt]} | {"case_id", "ground_truth", "answers"}
    extra = {k: v for k, v in record.items() if k not in used}
    case_id = record.get("case_id", index)
    if fmt == "zsre":
        answers = record.get("answers")
        truth = _first(answers) if answers else None
        loc = g["loc"].removeprefix("nq question: ")  # the official code slices loc[13:]
        extra.update({"answers": answers} if answers is not None else {})
        return EditRequest(g["src"], g["alt"], g["subject"], g["rephrase"],
                           loc.capitalize() + "?", g["loc_ans"], truth, case_id, extra)
    if fmt == "counterfact":
        return EditRequest(g["prompt"], g["target_new"], g["subject"], g["rephrase_prompt"],
                           g["locality_prompt"], g["locality_ground_truth"],
                           record.get("ground_truth"), case_id, extra)
    if fmt == "rome":
        rw = record["requested_rewrite"]
        template, subject = g["requested_rewrite.prompt"], g["requested_rewrite.subject"]
        if "{}" not in template:
            raise ValueError(f"record {index}: field 'requested_rewrite.prompt' has no '{{}}' "
                             f"placeholder for the subject: {template!r}")
        extra.update({"paraphrase_prompts": raw["paraphrase_prompts"],
                      "neighborhood_prompts": raw["neighborhood_prompts"],
                      "requested_rewrite": dict(rw)})
        truth = g["requested_rewrite.target_true.str"]
        return EditRequest(template.format(subject), g["requested_rewrite.target_new.str"], subject,
                           g["paraphrase_prompts"], g["neighborhood_prompts"],
                           truth, truth, case_id, extra)
    return EditRequest(g["update"], g["ans"], g["subject"], g["rephrase"], g["loc"],
                       g["loc_ans"], record.get("ground_truth"), case_id, extra)


def parse_records(records: Sequence[Any], format: str = "auto") -> list[EditRequest]:
    """Turn raw records into :class:`EditRequest` objects (see the module docstring for formats).

    Raises:
        ValueError: naming the record index and field, e.g. ``record 17: field 'alt' is missing
            (ZsRE MEND format expects subject, src, alt, rephrase, loc, loc_ans)``.

    Listed on the book page ``api``.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    out = []
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise ValueError(f"record {i}: expected a JSON object, got {type(rec).__name__}")
        fmt = _detect(rec, i) if format == "auto" else format
        if fmt == "wikibigedit":
            fmt = "wikibigedit-upstream" if "update" in rec else "counterfact"
        out.append(_parse(rec, i, fmt))
    return out


def _loads(text: str, where: str) -> list[Any]:
    text = text.strip()
    try:
        data = json.loads(text)
    except RecursionError:
        raise ValueError(f"{where}: JSON nested too deeply to be edit records (expected a list of "
                         "flat records)") from None
    except json.JSONDecodeError:
        data = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    data.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{where}: line {n} is not JSON (nor JSONL): {err}") from None
                except RecursionError:
                    raise ValueError(f"{where}: line {n} is JSON nested too deeply to be an edit "
                                     "record") from None
    if isinstance(data, Mapping):
        for key in ("records", "data"):
            if isinstance(data.get(key), list):
                return data[key]
        raise ValueError(f"{where}: a top-level object needs a 'records' or 'data' list")
    if not isinstance(data, list):
        raise ValueError(f"{where}: expected a list of records, got {type(data).__name__}")
    return data


def records_digest(records: Sequence[Any]) -> str:
    """SHA-256 of records as canonical JSON (sorted keys, UTF-8, no spaces), as :data:`BUILTIN_DIGESTS` pins.

    Described in the package data's ``README.md``.
    """
    import hashlib

    text = json.dumps(list(records), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_records(source: str | Path, split: str = "train") -> list[Any]:
    """Read raw records from a built-in set, a local JSON / JSONL file, a URL or ``hf:owner/name``.

    Listed on the book page ``api``.
    """
    src = str(source)
    if src in BUILTIN_EDIT_SETS:
        ref = resources.files("crispedit_lite") / "resources" / BUILTIN_EDIT_SETS[src]
        records = _loads(ref.read_text(encoding="utf-8"), src)
        if src in BUILTIN_DIGESTS and records_digest(records) != BUILTIN_DIGESTS[src]:
            raise ValueError(f"built-in edit set {src!r}: the records' SHA-256 {records_digest(records)} is "
                             f"not the pinned {BUILTIN_DIGESTS[src]} (the file was changed)")
        return records
    if src.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(src, timeout=60) as resp:  # noqa: S310 (user-given URL)
                return _loads(resp.read().decode("utf-8"), src)
        except OSError as err:
            raise OSError(f"could not download edit records from {src}: {err}. Download the "
                          f"file yourself and pass its local path.") from err
    if src.startswith("hf:"):
        import datasets

        try:
            return list(datasets.load_dataset(src[3:], split=split))
        except Exception as err:  # datasets raises many types (ConnectionError, FileNotFoundError)
            raise OSError(f"could not load the Hugging Face dataset {src[3:]!r} (split "
                          f"{split!r}): {err}. Offline, pass a local JSON file.") from err
    path = Path(src).expanduser()
    if not path.is_file():
        raise ValueError(f"edit source {src!r} is not a file, a URL, 'hf:owner/name' or a "
                         f"built-in set {sorted(BUILTIN_EDIT_SETS)}")
    return _loads(path.read_text(encoding="utf-8"), str(path))


def drop_duplicates(requests: Sequence[EditRequest]) -> tuple[list[EditRequest], list[tuple[int, int]]]:
    """The requests without repeats of the same edit (same ``prompt`` and ``target_new``).

    Returns ``(kept, dropped)`` where ``dropped`` lists ``(index, index of the first copy)``; the
    first copy of each edit is kept, in order.

    Listed on the book page ``api``.
    """
    first: dict[tuple[str, str], int] = {}
    kept, dropped = [], []
    for i, r in enumerate(requests):
        key = (r.prompt.strip(), r.target_new.strip())
        if key in first:
            dropped.append((i, first[key]))
        else:
            first[key] = i
            kept.append(r)
    return kept, dropped


def load_edits(
    source: str | Path,
    format: str = "auto",
    limit: int | None = None,
    seed: int | None = None,
    split: str = "train",
) -> list[EditRequest]:
    """Load edit requests; optionally a seeded random subset.

    Args:
        source: a built-in set (:data:`BUILTIN_EDIT_SETS`, e.g. ``"smollm2-counterfacts"``), a
            JSON / JSONL file (a list, or an object with a ``records`` / ``data`` list), an
            ``http(s)://`` URL, or ``"hf:owner/name"`` for ``datasets.load_dataset``.
        format: ``"auto"``, ``"zsre"``, ``"counterfact"``, ``"rome"`` or ``"wikibigedit"``.
        limit: keep at most this many requests.
        seed: shuffle with ``random.Random(seed)`` before ``limit`` (file order when ``None``).
        split: the split of a Hugging Face dataset.

    Returns:
        The requests; every record is validated, so an error names its index in the source.

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    requests = parse_records(read_records(source, split=split), format=format)
    if seed is not None:
        random.Random(seed).shuffle(requests)
    if limit is not None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        requests = requests[:limit]
    return requests
