r"""Memory and FLOPs of projecting one layer's gradient: explicit (dense) vs matrix-free projector.

For a linear layer with weight :math:`\mathbf W\in\mathbb R^{d_{\rm out}\times d_{\rm in}}`
there are :math:`n = d_{\rm out}d_{\rm in}` parameters. The explicit projector onto the editable
subspace of :math:`\mathbf A\otimes\mathbf S` is an :math:`n\times n` matrix; the matrix-free form
of CrispEdit (eq. 6, Prop. 3; Ikram et al. 2026) stores only the two eigenbases and the mask:

.. math::

    \text{dense: } n^2 b \text{ bytes}, \qquad
    \text{matrix-free: } (d_{\rm in}^2 + d_{\rm out}^2)\, b + n\, b_{\rm mask} \text{ bytes},

and applies it with four GEMMs,
:math:`4(d_{\rm out}^2 d_{\rm in} + d_{\rm out} d_{\rm in}^2)` FLOPs, instead of a :math:`2n^2`-FLOP
matrix-vector product. :func:`load_device_anchor` reads the timings measured beforehand on an H200
(shipped as package data, so the book builds from the repository alone).

Derived in notebook ``05_matrix_free_projector``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

__all__ = [
    "LayerShape",
    "dense_projector_bytes",
    "matrix_free_bytes",
    "dense_projection_flops",
    "matrix_free_flops",
    "cost_table",
    "format_bytes",
    "load_device_anchor",
    "edit_cell_seconds",
    "EVAL_S_PER_EDIT_8B",
    "LM_EVAL_S_8B",
]


@dataclass(frozen=True)
class LayerShape:
    """Shape of one linear layer, ``weight`` of shape ``(d_out, d_in)``.

    Attributes:
        model: the model the layer belongs to. module: its name pattern in the model.
        d_in: input dimension. d_out: output dimension.

    Listed on the book page ``api``.
    """

    model: str
    module: str
    d_in: int
    d_out: int

    @property
    def n_params(self) -> int:
        """Number of weights :math:`n = d_{out} d_{in}`."""
        return self.d_in * self.d_out


def _check_dims(d_out: int, d_in: int) -> None:
    for name, d in (("d_out", d_out), ("d_in", d_in)):
        if int(d) != d or d <= 0:
            raise ValueError(f"{name} must be a positive integer, got {d!r}")


def dense_projector_bytes(d_out: int, d_in: int, bytes_per_element: int = 4) -> int:
    r"""Bytes of the explicit projector: :math:`(d_{out} d_{in})^2\, b`.

    Derived in notebook ``05_matrix_free_projector``.
    """
    _check_dims(d_out, d_in)
    n = int(d_out) * int(d_in)
    return n * n * int(bytes_per_element)


def matrix_free_bytes(
    d_out: int, d_in: int, bytes_per_element: int = 4, mask_bytes: int = 1
) -> dict[str, int]:
    r"""Bytes of the matrix-free projector, by part.

    .. math::

        \mathbf U_{\rm in}: d_{\rm in}^2 b, \quad \mathbf U_{\rm out}: d_{\rm out}^2 b, \quad
        \mathbf M: d_{\rm out} d_{\rm in}\, b_{\rm mask}

    (a ``torch.bool`` mask takes one byte per entry).
    Returns ``{"U_in", "U_out", "mask", "total"}``.
    Derived in notebook ``05_matrix_free_projector``.
    """
    _check_dims(d_out, d_in)
    parts = {
        "U_in": int(d_in) ** 2 * int(bytes_per_element),
        "U_out": int(d_out) ** 2 * int(bytes_per_element),
        "mask": int(d_out) * int(d_in) * int(mask_bytes),
    }
    parts["total"] = sum(parts.values())
    return parts


def dense_projection_flops(d_out: int, d_in: int) -> int:
    r"""FLOPs of one explicit projection :math:`\mathbf P\,\mathrm{vec}(\mathbf G)`: :math:`2n^2`.

    Listed on the book page ``api``.
    """
    _check_dims(d_out, d_in)
    n = int(d_out) * int(d_in)
    return 2 * n * n


def matrix_free_flops(d_out: int, d_in: int) -> int:
    r"""FLOPs of one matrix-free projection: :math:`4(d_{\rm out}^2d_{\rm in} + d_{\rm out}d_{\rm in}^2)`.

    The four GEMMs of the reference form, counted once in
    :func:`crispedit_lite.fastproject.flops.reference_flops` (the mask product is not counted).
    Derived in notebook ``05_matrix_free_projector``.
    """
    from crispedit_lite.fastproject.flops import reference_flops

    _check_dims(d_out, d_in)
    return reference_flops(d_out, d_in)


def cost_table(shapes: dict[str, LayerShape], bytes_per_element: int = 4) -> list[dict[str, Any]]:
    """One row per layer shape: parameters, dense vs matrix-free bytes and FLOPs.

    The paper's models' shapes are :data:`crispedit_lite.models.presets.DOWN_PROJ_SHAPES`.
    Derived in notebook ``05_matrix_free_projector``.
    """
    rows = []
    for key, s in shapes.items():
        mf = matrix_free_bytes(s.d_out, s.d_in, bytes_per_element)
        rows.append({
            "model": key, "d_in": s.d_in, "d_out": s.d_out, "params": s.n_params,
            "dense_bytes": dense_projector_bytes(s.d_out, s.d_in, bytes_per_element),
            "U_in_bytes": mf["U_in"], "U_out_bytes": mf["U_out"], "mask_bytes": mf["mask"],
            "matrix_free_bytes": mf["total"],
            "dense_flops": dense_projection_flops(s.d_out, s.d_in),
            "matrix_free_flops": matrix_free_flops(s.d_out, s.d_in),
        })
    return rows


_BINARY = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
_DECIMAL = ["B", "kB", "MB", "GB", "TB", "PB", "EB"]


def format_bytes(n: float, binary: bool = True, digits: int = 1) -> str:
    """Human-readable size: ``binary`` uses powers of 1024 (MiB), otherwise of 1000 (MB).

    Derived in notebook ``05_matrix_free_projector``.
    """
    if n < 0:
        raise ValueError(f"byte count must be non-negative, got {n}")
    base, units = (1024.0, _BINARY) if binary else (1000.0, _DECIMAL)
    x, i = float(n), 0
    while x >= base and i < len(units) - 1:
        x /= base
        i += 1
    return f"{int(x)} {units[0]}" if i == 0 else f"{x:.{digits}f} {units[i]}"


def load_device_anchor() -> dict[str, Any]:
    """Load the H200 timings measured beforehand (``crispedit_lite/resources/device_anchor.json``).

    Returns ``{"source": str, "date": str, "measurements": {name: number}}``. The figures were
    measured once on one NVIDIA H200 with randomly initialised LLaMA-3-8B-shaped tensors; the book
    only displays them (it never needs a GPU). Derived in notebook ``05_matrix_free_projector``.
    """
    text = resources.files("crispedit_lite").joinpath("resources/device_anchor.json").read_text("utf-8")
    data = json.loads(text)
    for key in ("source", "date", "measurements"):
        if key not in data:
            raise ValueError(f"device_anchor.json lacks the field {key!r}; has {sorted(data)}")
    bad = [k for k, v in data["measurements"].items() if not isinstance(v, (int, float))]
    if bad:
        raise ValueError(f"device_anchor.json: measurements {bad} are not numbers")
    return data


#: Evaluation time that the device anchor does not measure (an assumption, not a measurement): WILD
#: generation in three contexts plus teacher forcing, per edit, and one lm-eval run, both at 8B.
EVAL_S_PER_EDIT_8B = 0.6
LM_EVAL_S_8B = 2700.0


def edit_cell_seconds(*, n_edits: int, epochs: int, batch_size: int, n_capability: int,
                      layers: list[tuple[int, int]], params_b: float, fp32: bool = False,
                      kfac: bool = True, lm_eval: bool = True, capability_tokens: int = 512,
                      anchor: dict[str, float] | None = None) -> dict[str, float]:
    r"""Estimated GPU seconds of one edit run on an H200, by phase, scaled from the device anchor.

    With :math:`t` the anchor's forward+backward step (batch 32, 32 tokens, bf16, 8.03 B
    parameters) and :math:`r = P / 8.03\,\mathrm B` the model's size ratio:

    * ``kfac`` = :math:`n\,L_{\rm cap}/1024 \cdot t\,r\,f` (one forward+backward per capability token);
    * ``eigh`` = per edited layer :math:`e_{4096}(d_{\rm out}/4096)^3 + e_{14336}(d_{\rm in}/14336)^3`;
    * ``edit`` = epochs :math:`\lceil N/B\rceil \cdot t\,r\,(B/32)\,f`;
    * ``eval`` = :math:`r\,(0.6\,N + 2700)` (:data:`EVAL_S_PER_EDIT_8B`, :data:`LM_EVAL_S_8B`:
      assumptions, not measured), without the lm-eval term when ``lm_eval`` is false;

    :math:`f` is 1 in bf16 and the anchor's bf16 / fp32 matmul throughput ratio in fp32 (no TF32).
    ``kfac`` and ``eigh`` are 0 when ``kfac`` is false.

    Described on the book page ``reproducing``.
    """
    m = anchor or load_device_anchor()["measurements"]
    r = params_b / float(m["n_params_B"])
    fp32_tflops = m["project_flops"] / (m["project_down_proj_ms_tf32_False"] / 1e3) / 1e12
    f = m["bf16_matmul_tflops"] / fp32_tflops if fp32 else 1.0
    t = m["edit_step_fwd_bwd_b32_s32_ms"] / 1e3
    eigh = sum(m["eigh_fp32_4096_ms"] / 1e3 * (d_out / 4096) ** 3
               + m["eigh_fp32_14336_ms"] / 1e3 * (d_in / 14336) ** 3 for d_out, d_in in layers)
    return {
        "kfac": n_capability * capability_tokens / 1024 * t * r * f if kfac else 0.0,
        "eigh": eigh if kfac else 0.0,
        "edit": epochs * -(-n_edits // batch_size) * t * r * (batch_size / 32) * f,
        "eval": r * (EVAL_S_PER_EDIT_8B * n_edits + (LM_EVAL_S_8B if lm_eval else 0.0)),
    }
