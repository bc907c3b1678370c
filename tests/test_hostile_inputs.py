"""Hostile and unlucky inputs (issue 22): each section is one class of fault, tested at its root.

What is promised, and which test holds each promise, is listed in docs/reliability.md."""
import os
from pathlib import Path

import numpy as np
import pytest

from higgs_lora.data.read import load_table
from higgs_lora.data.sniff import file_version, fingerprint_file

from conftest import write_higgs_csv


# ---------------------------------------------------------------- 1. a file edited in place, times kept

def _edit_in_place_keeping_times(path: Path, offset: int) -> None:
    """What `touch -r` after an edit, `cp -p` over the file or a time-preserving sync tool do: same size,
    same modification time, other bytes."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(1)
        f.seek(offset)
        f.write(b"7" if old != b"7" else b"8")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


@pytest.mark.parametrize("size, offset", [(3 << 19, 5 << 18),       # 1.5 MiB, edited at 1.25 MiB
                                          (50 << 20, 25 << 20)])    # 50 MiB (sparse), edited in the middle
def test_an_edit_that_keeps_size_and_mtime_changes_the_file_version(tmp_path, size, offset):
    path = tmp_path / "data.bin"
    with open(path, "wb") as f:
        f.truncate(size)
    before = file_version(path)
    _edit_in_place_keeping_times(path, offset)
    assert file_version(path) != before


def test_the_content_fingerprint_covers_a_file_up_to_2_mib_whole(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(3 << 19))
    before = fingerprint_file(path)
    _edit_in_place_keeping_times(path, 5 << 18)
    assert fingerprint_file(path) != before


def test_an_edit_that_keeps_size_and_mtime_is_read_again_not_served_from_the_cache(tmp_path):
    path = write_higgs_csv(tmp_path / "h.csv", 5000)          # ~3.6 MB of text
    first = load_table(path, cache_dir=tmp_path / "cache")
    assert isinstance(first.features, np.memmap)
    text = path.read_bytes()
    line = text.index(b"\n", len(text) // 2) + 1               # a row in the middle: its label 0 <-> 1
    row = text[:line].count(b"\n")
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(line)
        f.write(b"1" if text[line:line + 1] == b"0" else b"0")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = load_table(path, cache_dir=tmp_path / "cache")
    assert again.labels[row] != first.labels[row]


def test_a_chmod_changes_the_file_version_but_not_the_content_fingerprint(tmp_path):
    path = write_higgs_csv(tmp_path / "h.csv", 200)
    version, fingerprint = file_version(path), fingerprint_file(path)
    os.chmod(path, 0o600)                                      # changes the ctime only: costs one re-read
    assert file_version(path) != version and fingerprint_file(path) == fingerprint


# ---------------------------------------------------------------- 2. a cache that lies; training that diverges

def test_a_cache_entry_overwritten_with_garbage_is_detected_and_rebuilt(tmp_path, caplog):
    path = write_higgs_csv(tmp_path / "h.csv", 2000)
    first = load_table(path, cache_dir=tmp_path / "cache")
    expected = np.array(first.features)
    entry = next((tmp_path / "cache").iterdir())
    features = entry / "features.npy"
    with open(features, "r+b") as f:                           # same size, garbage in the middle
        f.seek(features.stat().st_size // 2)
        f.write(b"\xff" * 4096)
    with caplog.at_level("WARNING"):
        again = load_table(path, cache_dir=tmp_path / "cache")
    assert f"cache entry {entry} is damaged" in caplog.text and f"re-reading {path}" in caplog.text
    np.testing.assert_array_equal(again.features, expected)
    caplog.clear()
    third = load_table(path, cache_dir=tmp_path / "cache")     # rebuilt: served from the cache, quietly
    assert isinstance(third.features, np.memmap) and "damaged" not in caplog.text
    np.testing.assert_array_equal(third.features, expected)


def test_training_whose_loss_becomes_nan_stops_naming_phase_epoch_and_step(tmp_path):
    import torch

    from higgs_lora.config import Recipe
    from higgs_lora.errors import UserError
    from higgs_lora.model import ResidualMLP
    from higgs_lora.train import Checkpoint, TensorData, fit
    from conftest import synthetic_xy
    x, y = synthetic_xy(1024)
    x = x.copy()
    x[700] = np.nan                                              # row 700: in batch 2 or 3 of 4 per epoch
    model = ResidualMLP()
    data = TensorData(torch.from_numpy(x), torch.from_numpy(y.astype(np.float32)), batch_size=256)
    ckpt = tmp_path / "ckpt.safetensors"
    with pytest.raises(UserError, match=r"base: the training loss became non-finite \(nan\) at epoch 1, step [0-3];"):
        fit(model, data, Recipe(epochs=2, lr=1e-3, seed=0), checkpoint=Checkpoint(ckpt), progress=False)
    assert not ckpt.exists()                                     # no checkpoint of NaN weights


def test_a_model_with_non_finite_weights_is_never_saved(tmp_path):
    import torch

    from higgs_lora import weights
    from higgs_lora.data import Standardizer
    from higgs_lora.errors import UserError
    from higgs_lora.lora import add_adapters
    from higgs_lora.model import ResidualMLP
    standardizer = Standardizer(mean=np.zeros(28, np.float32), std=np.ones(28, np.float32))
    model = ResidualMLP()
    with torch.no_grad():
        model.hidden.weight[3, 5] = float("nan")
    with pytest.raises(UserError, match=r"m\.safetensors: not written: hidden\.weight holds non-finite values"):
        weights.save_model(tmp_path / "m", model, standardizer, feature_names=[f"f{i}" for i in range(28)])
    adapted = add_adapters(ResidualMLP(), rank=2, scale=1.0)
    with torch.no_grad():
        adapted.output.lora_B.fill_(float("inf"))
    with pytest.raises(UserError, match=r"a\.safetensors: not written: output\.lora_B holds non-finite values"):
        weights.save_adapter(tmp_path / "a", adapted, base_fingerprint="0" * 32)
    assert list(tmp_path.iterdir()) == []
