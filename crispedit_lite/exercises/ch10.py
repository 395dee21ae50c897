r"""Graders for the exercises of notebook ``10_reproduce_qwen2_5_1_5b``.

Each grader raises ``AssertionError`` with a hint when the answer is wrong and prints ``"correct"``
when it is right. Derived in notebook ``10_reproduce_qwen2_5_1_5b``.
"""

from __future__ import annotations

import hashlib

from crispedit_lite.editing import EditConfig

__all__ = ["check_qwen_factor_bytes", "check_qwen_seq_config"]

_SHA = "3081bcf339189a85b61cf9238137357b2fa8346d2d26e57befa113f9b13354ee"  # the expected integer


def check_qwen_factor_bytes(n_bytes: int) -> None:
    r"""Exercise 10.1: fp32 bytes of the K-FAC factors of Qwen-2.5-1.5B's three edited ``down_proj``.

    Per layer :math:`A` is :math:`d_{in}\times d_{in}` and :math:`S` is :math:`d_{out}\times d_{out}`
    (:math:`d_{in}=8960`, :math:`d_{out}=1536`), 4 bytes each; layers 4, 5 and 6. The expected
    integer is stored as a SHA-256 digest.
    Derived in notebook ``10_reproduce_qwen2_5_1_5b``.
    """
    d_in, d_out = 8960, 1536
    per_layer = 4 * (d_in**2 + d_out**2)
    got = int(n_bytes)
    assert got != per_layer, "that is one layer; CrispEdit edits three on Qwen-2.5-1.5B (4, 5, 6)"
    assert got != 3 * (d_in**2 + d_out**2), "count 4 bytes per fp32 entry"
    assert got != 3 * 4 * (d_in * d_out), "the factors are square: d_in^2 and d_out^2, not d_in*d_out"
    assert hashlib.sha256(str(got).encode()).hexdigest() == _SHA, (
        "3 layers x 4 bytes x (d_in^2 + d_out^2), d_in = 8960, d_out = 1536")
    print("correct")


def check_qwen_seq_config(config: EditConfig) -> None:
    r"""Exercise 10.2: the config of Table 5's ZsRE CrispEdit (Seq) cell.

    CrispEdit-Seq on Qwen-2.5-1.5B-Instruct: layers 4-6, :math:`n=30` capability texts,
    :math:`\gamma=0.995`, chunks of 100 edits, the paper preset (Wikipedia text).
    Derived in notebook ``10_reproduce_qwen2_5_1_5b``.
    """
    assert isinstance(config, EditConfig), f"pass an EditConfig, got {type(config).__name__}"
    assert config.method == "crispedit_seq", (
        f"the sequential row is method 'crispedit_seq' (METHOD with SEQUENTIAL=True), got {config.method!r}")
    assert config.layers == (4, 5, 6), f"Qwen-2.5-1.5B edits layers 4-6, got {config.layers}"
    assert (config.n_capability, config.gamma) == (30, 0.995), (
        f"Table 5's CrispEdit (Seq) uses n = 30 and gamma = 0.995, got {config.n_capability}, {config.gamma}")
    assert config.chunk_size == 100, f"chunks of 100 edits, got {config.chunk_size}"
    assert config.capability_source == "wikipedia", "the paper preset: MODEL must be the paper's Qwen"
    print("correct")
