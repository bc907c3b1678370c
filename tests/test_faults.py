"""A full disk in the middle of writing: one clear error, nothing half-written left that a later run trusts.

The disk fills at a chosen write: the patched writer puts half of its bytes on disk (as a real short
write would) and raises ENOSPC, the way the kernel reports it."""
import errno
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from higgs_lora.model import model_file
from higgs_lora.cli import main
from higgs_lora.data.read import load_table
from higgs_lora.data.shards import write_shards
from higgs_lora.errors import UserError
from higgs_lora.model.network import ResidualMLP
from higgs_lora.data import Standardizer

from conftest import write_higgs_csv

ARGS = ["--preset", "notebook", "--train-rows", "1500", "--test-rows", "500", "--epochs", "3", "--batch-size", "256",
        "--no-progress"]


def disk_full_at(n: int, write):
    """A stand-in for `write` (safetensors' save_file(tensors, path), numpy's save(path, array)) whose n-th
    call (1-based) fills the disk part-way."""
    calls = {"n": 0}

    def failing(*args, **kw):
        calls["n"] += 1
        if calls["n"] != n:
            return write(*args, **kw)
        path = next(a for a in args if isinstance(a, (str, os.PathLike)))
        with open(path, "wb") as f:
            f.write(b"\0" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return failing


def leftovers(folder):
    return [p.name for p in folder.rglob("*") if ".tmp" in p.name]


@pytest.fixture
def data(tmp_path):
    return write_higgs_csv(tmp_path / "h.csv", 3000, seed=2)


def test_disk_full_while_checkpointing_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch, capsys):
    from higgs_lora.train import checkpoint
    out = tmp_path / "run"
    monkeypatch.setattr(checkpoint, "save_file", disk_full_at(2, checkpoint.save_file))  # epoch 2's checkpoint
    assert main(["train", "--data", str(data), "--out", str(out), *ARGS]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("higgs-lora: error: ") and "No space left on device" in err[0]
    assert not (out / "base.safetensors").exists() and leftovers(out) == []
    checkpoint = load_file(out / "checkpoints" / "base.safetensors")  # epoch 1's, whole
    assert "model.output.weight" in checkpoint
    monkeypatch.undo()
    # Space freed: --resume continues from epoch 2 and ends where an uninterrupted run ends.
    assert main(["train", "--data", str(data), "--out", str(out), "--resume", *ARGS]) == 0
    assert "resuming from" in capsys.readouterr().out
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "ref"), *ARGS]) == 0
    a, b = load_file(out / "base.safetensors"), load_file(tmp_path / "ref" / "base.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_disk_full_while_saving_a_model_leaves_the_old_one(tmp_path, monkeypatch):
    standardizer = Standardizer(mean=np.zeros(28, np.float32), std=np.ones(28, np.float32))
    path = model_file.save_model(tmp_path / "m", ResidualMLP(), standardizer, feature_names=[f"f{i}" for i in range(28)])
    before = path.read_bytes(), path.with_suffix(".json").read_bytes()
    monkeypatch.setattr(model_file, "save_file", disk_full_at(1, model_file.save_file))
    with pytest.raises(OSError, match="No space left"):
        model_file.save_model(tmp_path / "m", ResidualMLP(), standardizer, feature_names=[f"f{i}" for i in range(28)])
    assert (path.read_bytes(), path.with_suffix(".json").read_bytes()) == before
    assert leftovers(tmp_path) == []
    model_file.load_model(path)  # still loads, checksum and all


def test_disk_full_while_caching_leaves_no_cache_entry(data, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    monkeypatch.delenv("HIGGS_LORA_CACHE", raising=False)
    monkeypatch.setattr(np, "save", disk_full_at(1, np.save))  # features.npy
    with pytest.raises(UserError, match="cannot write the cache .*No space left on device"):
        load_table(data, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
    # Default locations: the next one is tried (it fills up too here), then the table is served uncached.
    monkeypatch.setattr(np, "save", disk_full_at(1, disk_full_at(2, np.save)))
    table = load_table(data)
    assert table.rows == 3000 and not isinstance(table.features, np.memmap)
    for root in (tmp_path / ".higgs-lora-cache", tmp_path / "home-cache" / "higgs-lora"):
        assert not root.exists() or list(root.iterdir()) == []
    monkeypatch.undo()
    assert isinstance(load_table(data, cache_dir=tmp_path / "cache").features, np.memmap)  # and it heals


def test_disk_full_while_sharding_leaves_no_directory(data, tmp_path, monkeypatch):
    monkeypatch.setattr(np, "save", disk_full_at(3, np.save))  # the second shard's features
    with pytest.raises(OSError, match="No space left"):
        write_shards(data, tmp_path / "shards", rows_per_shard=1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.csv"]
