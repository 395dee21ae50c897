"""crispedit_lite.kfac.distributed: two gloo ranks on the CPU give the single-process factors and one cache
entry."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

from crispedit_lite.editing import capability_factors
from crispedit_lite.kfac.distributed import shard, use_distributed
from crispedit_lite.models import random_init_model
from tests.helpers import CAP_TEXT, tiny_tokenizer

MODULES = ["model.layers.1.mlp.down_proj", "model.layers.3.mlp.down_proj"]
TEXTS = [CAP_TEXT, "the dog runs", "a b c d e f g h", "the cat lies on the red house",
         "berlin is a big city"]  # 5 texts: ranks get 2 and 3


def _worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                         rank=rank, world_size=world)
    try:
        import crispedit_lite.editing.kfac_cache as kc

        save = kc.save_kfac

        def logged_save(factors, path):
            with open(Path(out) / "writes.log", "a") as fh:
                fh.write(f"{rank} {Path(path).name}\n")
            return save(factors, path)

        kc.save_kfac = logged_save
        model, tok = random_init_model("tiny-llama", seed=0), tiny_tokenizer()
        kw = dict(max_length=64, cache_dir=Path(out) / "cache", progress=False)
        f, info = capability_factors(model, tok, MODULES, TEXTS, **kw)  # distributed=None: auto
        _, again = capability_factors(model, tok, MODULES, TEXTS, **kw)
        torch.save({"A": {m: x.A for m, x in f.items()}, "S": {m: x.S for m, x in f.items()},
                    "n": {m: x.n_tokens for m, x in f.items()}, "info": info, "again": again},
                   Path(out) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_equal_one_process_and_write_the_entry_once(tmp_path):
    import torch.multiprocessing as mp

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    single, sinfo = capability_factors(random_init_model("tiny-llama", seed=0), tiny_tokenizer(),
                                       MODULES, TEXTS, max_length=64, cache_dir=tmp_path / "single",
                                       progress=False)
    entry = Path(sinfo["cache"]).name
    writes = (tmp_path / "writes.log").read_text().splitlines()
    assert writes == [f"0 {entry}"]  # rank 0 only, once, under the single-process key
    assert [p.name for p in (tmp_path / "cache").glob("*.safetensors")] == [entry]
    assert not list((tmp_path / "cache").glob("*.ckpt"))
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert not got["info"]["hit"] and got["info"]["world_size"] == 2 and got["again"]["hit"]
        for m in MODULES:
            torch.testing.assert_close(got["A"][m], single[m].A, rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(got["S"][m], single[m].S, rtol=1e-5, atol=1e-7)
            assert got["n"][m] == single[m].n_tokens
    from crispedit_lite.kfac import load_kfac

    written = load_kfac(tmp_path / "cache" / entry)
    for m in MODULES:  # the file a single process would write, up to fp32 rounding
        torch.testing.assert_close(written[m].A, single[m].A, rtol=1e-5, atol=1e-7)
        assert written[m].meta == single[m].meta


def test_shard_is_a_deterministic_ordered_partition():
    items = list(range(11))
    for world in (1, 2, 3, 4, 12):
        parts = [shard(items, r, world) for r in range(world)]
        assert sum(parts, []) == items
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        assert parts == [shard(items, r, world) for r in range(world)]
    with pytest.raises(ValueError, match="rank=2, world=2"):
        shard(items, 2, 2)


def test_distributed_true_without_a_process_group_is_an_error():
    assert use_distributed(None) is False and use_distributed(False) is False
    with pytest.raises(ValueError, match="distributed=True needs torch.distributed initialised"):
        use_distributed(True)
