"""crispedit_lite.editing.loops.covariance: MEMIT's every-token input covariance, against a per-text
reference, and its difference from the K-FAC factor A of the same texts (each text's last token)."""

from __future__ import annotations

import pytest
import torch

from crispedit_lite.editing.kfac_cache import capability_factors
from crispedit_lite.editing.loops.covariance import input_second_moment
from tests.helpers import CACHE_MODULES as MODULES
from tests.helpers import CACHE_TEXTS as TEXTS


def _inputs(model, tok, module, text):
    """The module's inputs at every position of one unpadded text, (T, d_in)."""
    got = {}
    h = model.get_submodule(module).register_forward_pre_hook(lambda m, a: got.update(x=a[0][0]))
    with torch.no_grad():
        model(input_ids=torch.tensor([tok(text)["input_ids"]]))
    h.remove()
    return got["x"].double()


@pytest.mark.parametrize("batch_size", [1, 3])
def test_every_token_moment_equals_the_per_text_reference(model, tok, batch_size):
    C, info = input_second_moment(model, tok, MODULES, TEXTS, max_length=64, batch_size=batch_size)
    n = sum(len(tok(t)["input_ids"]) for t in TEXTS)
    assert info["n_tokens"] == n and C[MODULES[0]].dtype == torch.float32
    for m in MODULES:
        rows = torch.cat([_inputs(model, tok, m, t) for t in TEXTS])
        torch.testing.assert_close(C[m].double(), rows.T @ rows / n, rtol=1e-6, atol=1e-9)


def test_kfac_factor_a_is_the_same_estimator_without_each_texts_last_token(model, tok, tmp_path):
    C, info = input_second_moment(model, tok, MODULES, TEXTS, max_length=64)
    factors, kinfo = capability_factors(model, tok, MODULES, TEXTS, max_length=64, labels="true", seed=0,
                                        cache_dir=tmp_path, progress=False)
    assert kinfo["n_tokens"] == info["n_tokens"] - len(TEXTS)
    for m in MODULES:
        last = torch.stack([_inputs(model, tok, m, t)[-1] for t in TEXTS])
        total = C[m].double() * info["n_tokens"]
        torch.testing.assert_close(factors[m].A.double() * kinfo["n_tokens"], total - last.T @ last,
                                   rtol=1e-5, atol=1e-7)
        assert not torch.allclose(factors[m].A.double(), C[m].double(), rtol=1e-3)
