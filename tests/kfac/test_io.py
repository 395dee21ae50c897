"""crispedit_lite.kfac.io, the K-FAC cache on disk: round trip, checksum, metadata checks, atomic writes."""

import json
import os

import pytest
import torch

import crispedit_lite.kfac.io as kio
from crispedit_lite.kfac import KFACFactors, load_kfac, save_kfac


def factors(seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in ("model.layers.1.mlp.down_proj", "model.layers.2.mlp.down_proj"):
        di, do = 6, 4
        a, s = torch.randn(di, di, generator=g), torch.randn(do, do, generator=g)
        meta = {"model_id": "tiny", "module": name, "labels": "true", "approx": "expand", "seed": 0}
        out[name] = KFACFactors(A=a @ a.T, S=s @ s.T, n_tokens=123, meta=meta)
    return out


def test_round_trip(tmp_path):
    f = factors()
    path = save_kfac(f, tmp_path / "cache" / "kfac.safetensors")
    back = load_kfac(path, expect={"model_id": "tiny", "labels": "true"})
    assert list(back) == list(f)
    for k in f:
        torch.testing.assert_close(back[k].A, f[k].A)
        torch.testing.assert_close(back[k].S, f[k].S)
        assert back[k].n_tokens == 123 and back[k].meta == f[k].meta
    assert [p.name for p in path.parent.iterdir()] == ["kfac.safetensors"]  # no temp files left


def test_subset_of_modules_and_missing_modules(tmp_path):
    path = save_kfac(factors(), tmp_path / "k.safetensors")
    one = load_kfac(path, expect={"modules": ["model.layers.2.mlp.down_proj"]})
    assert list(one) == ["model.layers.2.mlp.down_proj"]
    with pytest.raises(ValueError, match=r"lacks modules \['model.layers.9.mlp.down_proj'\]"):
        load_kfac(path, expect={"modules": ["model.layers.9.mlp.down_proj"]})


def test_metadata_mismatch_names_module_and_field(tmp_path):
    path = save_kfac(factors(), tmp_path / "k.safetensors")
    with pytest.raises(ValueError, match=r"module 'model.layers.1.mlp.down_proj'.*labels='true'.*'sampled'"):
        load_kfac(path, expect={"labels": "sampled"})


def test_corruption_is_detected(tmp_path):
    path = save_kfac(factors(), tmp_path / "k.safetensors")
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # flip bits inside the last tensor's data
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        load_kfac(path)


def test_not_a_cache(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_kfac(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_text("hello")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_kfac(junk)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"x": torch.ones(2)}, str(other))
    with pytest.raises(ValueError, match="no crispedit_lite header"):
        load_kfac(other)


def test_failed_write_leaves_existing_cache_intact(tmp_path, monkeypatch):
    path = save_kfac(factors(0), tmp_path / "k.safetensors")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(kio, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_kfac(factors(1), path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["k.safetensors"]


def test_header_is_plain_json(tmp_path):
    from safetensors import safe_open

    path = save_kfac(factors(), tmp_path / "k.safetensors")
    with safe_open(str(path), framework="pt") as fh:
        header = json.loads(fh.metadata()["crispedit_lite"])
    assert header["format_version"] == kio.FORMAT_VERSION and len(header["sha256"]) == 64
    with pytest.raises(ValueError, match="nothing to save"):
        save_kfac({}, tmp_path / "e.safetensors")


def test_header_states_the_normalisation_for_covariance_readers(tmp_path):
    from safetensors import safe_open

    path = save_kfac(factors(), tmp_path / "k.safetensors")
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["normalisation"] == kio.NORMALISATION["expand"]
    assert "divided by the token count" in meta["normalisation"]
    assert meta["n_tokens"] == "123" and meta["approx"] == "expand" and meta["dtype"] == "float32"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_files_get_0666_less_the_umask(tmp_path, umask, mode):
    import stat

    old = os.umask(umask)
    try:
        path = save_kfac(factors(), tmp_path / "k.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_malformed_headers_are_value_errors(tmp_path):
    from safetensors.torch import save_file

    t = {"m::A": torch.eye(2), "m::S": torch.eye(2)}
    for raw, match in [("{not json", "not valid JSON"), ("[1, 2]", "is a list"),
                       (json.dumps({"format_version": 1}), "lacks 'modules' or 'sha256'")]:
        p = tmp_path / "bad.safetensors"
        save_file(t, str(p), metadata={"crispedit_lite": raw})
        with pytest.raises(ValueError, match=match):
            load_kfac(p)
    header = {"format_version": kio.FORMAT_VERSION, "modules": {"m": {"n_tokens": 0, "meta": {}}}}
    header["sha256"] = kio._checksum(t, header)
    save_file(t, str(p), metadata={"crispedit_lite": json.dumps(header)})
    with pytest.raises(ValueError, match=r"bad.safetensors: module 'm': .*n_tokens must be positive"):
        load_kfac(p)


def test_move_aside_renames_and_warns(tmp_path):
    p = tmp_path / "k.safetensors"
    p.write_text("junk")
    with pytest.warns(UserWarning, match=r"k.safetensors is unusable \(because\); moved it to "
                                         r"k.safetensors.corrupt-"):
        aside = kio.move_aside(p, "because")
    assert not p.exists() and aside.read_text() == "junk"


def test_file_lock_excludes_a_second_holder_and_leaves_no_file(tmp_path):
    import fcntl

    with kio.file_lock(tmp_path / "x.lock"):
        fd = os.open(tmp_path / "x.lock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        holder = json.loads((tmp_path / "x.lock").read_text())
        assert holder["pid"] == os.getpid() and holder["host"] and holder["since"]
    assert list(tmp_path.iterdir()) == []  # the lock file goes with the lock


def test_a_waiter_says_who_holds_the_lock_and_gives_up_after_the_stated_time(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CRISPEDIT_LOCK_TIMEOUT", "0.6")
    with kio.file_lock(tmp_path / "x.lock"):
        with pytest.raises(TimeoutError, match=rf"x.lock is still held by process {os.getpid()} on .* after "
                                               r"0.6 s; if that process is gone, delete the lock file"):
            with kio.file_lock(tmp_path / "x.lock"):
                pass
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"waiting for {tmp_path / 'x.lock'}, held by process "
                                               f"{os.getpid()} on ")
    assert err[0].endswith("giving up after 0.6 s (CRISPEDIT_LOCK_TIMEOUT)")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("CRISPEDIT_LOCK_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="CRISPEDIT_LOCK_TIMEOUT must be a number of seconds"):
        kio.lock_timeout()


def test_a_waiter_gets_the_lock_when_the_holder_lets_go(tmp_path):
    import threading

    order = []

    def second():
        with kio.file_lock(tmp_path / "x.lock", timeout=30, poll=0.01):
            order.append("second")

    with kio.file_lock(tmp_path / "x.lock"):
        worker = threading.Thread(target=second)
        worker.start()
        worker.join(0.3)
        order.append("first")
    worker.join(30)
    assert order == ["first", "second"] and list(tmp_path.iterdir()) == []


def _rewrite_header(path, old: bytes, new: bytes) -> None:
    """Change bytes of the safetensors header in place (same length), as a flipped byte on disk would."""
    raw = path.read_bytes()
    assert len(old) == len(new) and raw.count(old) >= 1
    path.write_bytes(raw.replace(old, new, 1))


def test_the_checksum_covers_the_metadata(tmp_path):
    path = save_kfac(factors(), tmp_path / "k.safetensors")
    _rewrite_header(path, b'\\"n_tokens\\": 123', b'\\"n_tokens\\": 923')  # the JSON header, one module
    with pytest.raises(ValueError, match=r"checksum mismatch \(tensors or metadata changed\)"):
        load_kfac(path)
    path = save_kfac(factors(), tmp_path / "k2.safetensors")
    _rewrite_header(path, b'"n_tokens":"123"', b'"n_tokens":"923"')  # the plain-string summary
    with pytest.raises(ValueError, match=r"plain metadata n_tokens='923' disagrees with the checksummed"):
        load_kfac(path)


def test_an_entry_of_the_older_format_is_refused_with_its_reason(tmp_path):
    from safetensors.torch import save_file

    t = {"m::A": torch.eye(2), "m::S": torch.eye(2)}
    header = {"format_version": 1, "sha256": kio._checksum(t), "modules": {"m": {"n_tokens": 5, "meta": {}}}}
    save_file(t, str(tmp_path / "old.safetensors"), metadata={"crispedit_lite": json.dumps(header)})
    with pytest.raises(ValueError, match="format_version 1, written by an older version whose checksum did "
                                         "not cover the metadata"):
        load_kfac(tmp_path / "old.safetensors")


def test_an_unreadable_entry_names_the_permission_not_corruption(tmp_path, monkeypatch):
    path = save_kfac(factors(), tmp_path / "k.safetensors")
    monkeypatch.setattr(kio.os, "access", lambda p, mode: False)  # as for chmod 000 under another user
    with pytest.raises(ValueError, match=r"cannot be read: permission denied \(file mode 0o6\d4\); it is not "
                                         "corrupt"):
        load_kfac(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 000")
def test_a_mode_000_entry_names_the_permission(tmp_path):
    path = save_kfac(factors(), tmp_path / "k.safetensors")
    path.chmod(0)
    with pytest.raises(ValueError, match=r"permission denied \(file mode 0o0\)"):
        load_kfac(path)
