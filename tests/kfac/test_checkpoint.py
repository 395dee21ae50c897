"""crispedit_lite.kfac.checkpoint, running K-FAC sums: resumption is bit-identical, checkpoints round-trip and
check their settings."""

import pytest
import torch
from torch import nn

from crispedit_lite.kfac import (
    KFACSums,
    accumulate_kfac,
    collect_kfac,
    load_checkpoint,
    save_checkpoint,
)


def _setup(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    g = torch.Generator().manual_seed(seed)
    batches = [(torch.randn(5, 4, generator=g), torch.randint(0, 3, (5,), generator=g))
               for _ in range(7)]
    return model, batches


@pytest.mark.parametrize("labels", ["true", "sampled"])
def test_resume_from_every_checkpoint_is_bit_identical(tmp_path, labels):
    model, batches = _setup()
    whole = collect_kfac(model, ["0", "2"], batches, labels=labels, seed=3, progress=False)
    saved = []
    accumulate_kfac(model, ["0", "2"], batches, labels=labels, seed=3, progress=False,
                    on_batch=lambda s: saved.append(save_checkpoint(s, tmp_path / f"{s.batches}.ckpt")))
    assert len(saved) == len(batches)
    for k in (1, 3, 6):
        resume = load_checkpoint(tmp_path / f"{k}.ckpt")
        assert resume.batches == k and resume.rng is not None
        got = accumulate_kfac(model, ["0", "2"], batches, labels=labels, seed=3, progress=False,
                              resume=resume).to_factors()
        for m in whole:
            assert torch.equal(got[m].A, whole[m].A) and torch.equal(got[m].S, whole[m].S)
            assert got[m].n_tokens == whole[m].n_tokens == 35 and got[m].meta == whole[m].meta


def test_sums_are_counts_times_factors():
    model, batches = _setup(1)
    sums = accumulate_kfac(model, ["2"], batches, progress=False)
    f = sums.to_factors()["2"]
    torch.testing.assert_close(sums.A["2"] / sums.count, f.A)
    assert sums.count == 35 and sums.batches == 7
    with pytest.raises(ValueError, match="saw no valid tokens"):
        KFACSums(A={"2": torch.zeros(6, 6)}, S={"2": torch.zeros(3, 3)}).to_factors()


def test_checkpoint_checks_settings_and_shapes(tmp_path):
    model, batches = _setup()
    sums = accumulate_kfac(model, ["0"], batches[:2], progress=False)
    path = save_checkpoint(sums, tmp_path / "c.ckpt", {"batch_size": 1})
    back = load_checkpoint(path, {"batch_size": 1})
    assert torch.equal(back.A["0"], sums.A["0"]) and back.count == sums.count == 10
    with pytest.raises(ValueError, match="c.ckpt: checkpoint was written with batch_size=1, now 4"):
        load_checkpoint(path, {"batch_size": 4})
    with pytest.raises(ValueError, match=r"resume: module '2' has sums of shapes \(4, 4\), \(6, 6\)"):
        accumulate_kfac(model, ["2"], batches, progress=False,
                        resume=KFACSums(A={"2": sums.A["0"]}, S={"2": sums.S["0"]}, count=1))
    (tmp_path / "junk.ckpt").write_text("x")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_checkpoint(tmp_path / "junk.ckpt")
