r"""Graders for the exercises of notebook ``10_reproduce_qwen2_5_1_5b`` (and the capstone of Part III).

Expected numbers are stored as SHA-256 digests, and the cost model of 10.2 is judged by how it must
scale (affine in the epochs, one more step per epoch for one more batch, one-time costs per layer),
so reading this module does not give the answers. Derived in notebook ``10_reproduce_qwen2_5_1_5b``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from crispedit_lite.exercises.core import exercise

__all__ = ["check_qwen_factor_bytes", "check_train_seconds", "TABLE1_CELL"]

_SHA = "3081bcf339189a85b61cf9238137357b2fa8346d2d26e57befa113f9b13354ee"  # the expected integer


def _sha(n: int) -> str:
    return hashlib.sha256(str(int(n)).encode()).hexdigest()


@exercise("ex-10-1")
def check_qwen_factor_bytes(n_bytes: int) -> None:
    r"""Exercise 10.1: fp32 bytes of the K-FAC factors of Qwen-2.5-1.5B's three edited ``down_proj`` layers.

    The expected integer is stored as a SHA-256 digest; the hints name the usual slips. Derived in
    notebook ``10_reproduce_qwen2_5_1_5b``.
    """
    d_in, d_out = 8960, 1536
    got = int(n_bytes)
    assert got != 4 * (d_in**2 + d_out**2), (
        "that is one layer; CrispEdit edits three on Qwen-2.5-1.5B (4, 5, 6)"
    )
    assert got != 3 * (d_in**2 + d_out**2), "that counts entries; each fp32 entry takes 4 bytes"
    assert got != 3 * 4 * (d_in * d_out), "the factors are square (inputs by inputs, outputs by outputs)"
    assert _sha(got) == _SHA, "not the size of the two factors of three layers in fp32"


#: Table 1's LLaMA-3-8B CounterFact cell (the paper's Table 2 settings): 3,000 edits, 25 epochs, batch 32.
TABLE1_CELL = {"n_edits": 3000, "epochs": 25, "batch_size": 32, "n_layers": 5}
_TABLE1_SHA = "02e6295d8f522840f09b5194b3f023799ad6ed3306d9296005787e792224df20"


def _probe_train_seconds(fn) -> dict[str, Any]:
    from crispedit_lite import costs

    m = costs.load_device_anchor()["measurements"]

    def f(**kw):
        return float(fn(m, **{**TABLE1_CELL, **kw}))

    return {
        "cell": f(),
        "epochs0": f(epochs=0),
        "epochs26": f(epochs=26),
        "epochs50": f(epochs=50),
        "edits_next_batch": f(n_edits=32 * 94 + 1),
        "layers10_epochs0": f(epochs=0, n_layers=10),
        "layers10": f(n_layers=10),
    }


@exercise("ex-10-2", probe=_probe_train_seconds)
def check_train_seconds(obs: dict[str, Any]) -> None:
    r"""Exercise 10.2 (capstone of Part III): the editing time of a paper cell, predicted from measurements.

    ``predict_edit_seconds(measurements, n_edits, epochs, batch_size, n_layers)`` uses the H200
    measurements that ship with the package. Judged by how it must scale (affine in the epochs,
    the eigendecompositions paid once per layer, one more optimiser step per epoch when the edits
    need one more batch, the projection cost growing with the layers) and, for Table 1's cell, by a
    SHA-256 digest of the value rounded to whole seconds. Derived in notebook
    ``10_reproduce_qwen2_5_1_5b``.
    """
    import math

    cell, e0, e26, e50 = obs["cell"], obs["epochs0"], obs["epochs26"], obs["epochs50"]
    epochs = TABLE1_CELL["epochs"]
    assert e0 > 0, "with zero epochs the one-time eigendecompositions remain"
    train = cell - e0  # all the epochs of Table 1's cell
    assert train > 0, "training time must grow with the epochs"
    assert math.isclose(e50 - e0, 2 * train, rel_tol=1e-9), "time must be affine in the epochs"
    assert math.isclose(e26 - cell, train / epochs, rel_tol=1e-9), "every epoch must cost the same"
    steps_per_epoch = math.ceil(TABLE1_CELL["n_edits"] / TABLE1_CELL["batch_size"])
    one_more_batch = obs["edits_next_batch"] - cell  # one more step in each epoch
    assert math.isclose(one_more_batch, train / steps_per_epoch, rel_tol=1e-6), (
        "3,009 edits need one more batch of 32 per epoch than 3,000 (94 x 32 = 3,008): count the optimiser "
        "steps as "
        "epochs x ceil(n_edits / batch_size)"
    )
    assert math.isclose(obs["layers10_epochs0"], 2 * e0, rel_tol=1e-9), (
        "the one-time eigendecompositions are paid once per edited layer"
    )
    assert obs["layers10"] - obs["layers10_epochs0"] > train, (
        "more edited layers mean more projections per step"
    )
    assert hashlib.sha256(str(round(cell)).encode()).hexdigest() == _TABLE1_SHA, (
        "the value for Table 1's cell is off: per step, the forward and backward pass at batch 32 plus one "
        "projection per edited layer (measured with TF32); once per layer, the two eigendecompositions"
    )
