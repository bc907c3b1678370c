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
    from higgs_lora.model.network import ResidualMLP
    from higgs_lora.train import Checkpoint, fit
    from higgs_lora.data.sources import TensorData
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

    from higgs_lora.model import model_file
    from higgs_lora.adapters import adapter_file
    from higgs_lora.data import Standardizer
    from higgs_lora.errors import UserError
    from higgs_lora.adapters.lora import add_adapters
    from higgs_lora.config import AdapterConfig
    from higgs_lora.model.network import ResidualMLP
    standardizer = Standardizer(mean=np.zeros(28, np.float32), std=np.ones(28, np.float32))
    model = ResidualMLP()
    with torch.no_grad():
        model.hidden.weight[3, 5] = float("nan")
    with pytest.raises(UserError, match=r"m\.safetensors: not written: hidden\.weight holds non-finite values"):
        model_file.save_model(tmp_path / "m", model, standardizer, feature_names=[f"f{i}" for i in range(28)])
    adapted = add_adapters(ResidualMLP(), AdapterConfig(rank=2, scale=1.0))
    with torch.no_grad():
        adapted.output.lora_B.fill_(float("inf"))
    with pytest.raises(UserError, match=r"a\.safetensors: not written: output\.lora_B holds non-finite values"):
        adapter_file.save_adapter(tmp_path / "a", adapted, base_fingerprint="0" * 32)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- 3. a full disk in the middle of a run

TRAIN_ARGS = ["--preset", "notebook", "--train-rows", "1500", "--test-rows", "500", "--epochs", "2", "--batch-size",
              "256", "--no-progress"]
SAFETENSORS_ENOSPC = "Error while serializing: I/O error: No space left on device (os error 28)"


def _fail_at(n: int, write, error):
    """`write`, except that its n-th call (1-based) raises `error`."""
    calls = {"n": 0}

    def failing(*args, **kw):
        calls["n"] += 1
        if calls["n"] == n:
            raise error
        return write(*args, **kw)
    return failing


def test_a_full_disk_while_checkpointing_is_one_line_naming_the_checkpoint(tmp_path, monkeypatch, capsys):
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from higgs_lora.cli import main
    from higgs_lora.train import checkpoint
    data = write_higgs_csv(tmp_path / "h.csv", 2000)
    out = tmp_path / "run"
    monkeypatch.setattr(checkpoint, "save_file", _fail_at(2, checkpoint.save_file, SafetensorError(SAFETENSORS_ENOSPC)))
    assert main(["train", "--data", str(data), "--out", str(out), *TRAIN_ARGS]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"higgs-lora: error: {out / 'checkpoints' / 'base.safetensors'}: cannot write (No space left on "
                   "device); the file there before, if any, is unchanged"]
    assert "model.output.weight" in load_file(out / "checkpoints" / "base.safetensors")   # epoch 1's, whole
    assert [p.name for p in out.rglob("*") if ".tmp" in p.name] == []
    monkeypatch.undo()
    assert main(["train", "--data", str(data), "--out", str(out), "--resume", *TRAIN_ARGS]) == 0


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), "safetensors"])
def test_a_failed_write_names_the_file_it_was_writing(tmp_path, monkeypatch, error):
    from safetensors import SafetensorError

    from higgs_lora import io
    from higgs_lora.model import model_file
    from higgs_lora.data import Standardizer
    from higgs_lora.errors import UserError
    from higgs_lora.model.network import ResidualMLP
    if error == "safetensors":
        error = SafetensorError(SAFETENSORS_ENOSPC)
        monkeypatch.setattr(model_file, "save_file", _fail_at(1, model_file.save_file, error))
    else:
        monkeypatch.setattr(io.os, "fsync", _fail_at(1, os.fsync, error))    # the fsync of the temporary
    standardizer = Standardizer(mean=np.zeros(28, np.float32), std=np.ones(28, np.float32))
    with pytest.raises(UserError) as e:
        model_file.save_model(tmp_path / "m", ResidualMLP(), standardizer, feature_names=[f"f{i}" for i in range(28)])
    assert str(e.value).startswith(f"{tmp_path / 'm.safetensors'}: cannot write (No space left on device)")
    assert isinstance(e.value, OSError) and e.value.errno == 28                # still an OSError for old callers
    assert list(tmp_path.iterdir()) == []


def test_a_file_size_limit_through_the_cli_is_one_line_naming_the_file(tmp_path):
    """A real failing write, not a patched one: RLIMIT_FSIZE makes the kernel refuse (EFBIG) the checkpoint."""
    import resource
    import subprocess
    import sys
    data = write_higgs_csv(tmp_path / "h.csv", 2000)
    limit = 600_000    # the cache's files fit (~230 kB); a checkpoint (~950 kB) does not

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "higgs_lora", "train", "--data", str(data), "--out", str(out),
                        *TRAIN_ARGS], capture_output=True, text=True, preexec_fn=limited,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 1
    assert p.stderr.strip().splitlines()[-1] == (f"higgs-lora: error: {out / 'checkpoints' / 'base.safetensors'}: "
                                                 "cannot write (File too large); the file there before, if any, "
                                                 "is unchanged")
    assert "Traceback" not in p.stderr


# ---------------------------------------------------------------- 4. a refused run does not block its retry

def test_a_run_refused_for_lack_of_space_leaves_nothing_and_the_retry_succeeds(tmp_path, monkeypatch):
    from collections import namedtuple

    from higgs_lora.errors import RunDirectoryError
    from higgs_lora.pipeline import rundir
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(rundir.shutil, "disk_usage", lambda p: usage(1 << 30, (1 << 30) - (10 << 20), 10 << 20))
    out = tmp_path / "new" / "run"
    with pytest.raises(RunDirectoryError, match=r"only 10 MiB free"):
        rundir.prepare_run_dir(out, force=False, resume=False)
    assert list(tmp_path.iterdir()) == []                        # nothing made: not even new/
    (tmp_path / "kept").mkdir()                                   # an existing, empty directory stays as it was
    with pytest.raises(RunDirectoryError, match=r"only 10 MiB free"):
        rundir.prepare_run_dir(tmp_path / "kept", force=False, resume=False)
    assert list((tmp_path / "kept").iterdir()) == []
    monkeypatch.undo()                                            # space freed: the same call works
    for where in (out, tmp_path / "kept"):
        assert rundir.prepare_run_dir(where, force=False, resume=False) == where
        rundir.release_dir(where)


# ---------------------------------------------------------------- 5. training on one class only

def _one_class_csv(path: Path, rows: int, label: int) -> Path:
    from conftest import synthetic_xy
    x, _ = synthetic_xy(rows)
    np.savetxt(path, np.column_stack([np.full(rows, label, np.float64), x]), delimiter=",", fmt="%.9g")
    return path


@pytest.mark.parametrize("command", ["train", "run"])
def test_training_on_rows_of_one_class_is_refused_before_anything_is_made(tmp_path, capsys, command):
    from higgs_lora.cli import main
    data = _one_class_csv(tmp_path / "zeros.csv", 2000, 0)
    out = tmp_path / "out"
    assert main([command, "--data", str(data), "--out", str(out), *TRAIN_ARGS]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"higgs-lora: error: {data}: the train part (1,500 rows) holds only background rows (label 0); "
                   "training needs both classes (check the label column and the file)"]
    assert not out.exists()


def test_finetuning_on_extra_rows_of_one_class_is_refused(tmp_path, capsys):
    from higgs_lora.cli import main
    good = write_higgs_csv(tmp_path / "good.csv", 2000)
    assert main(["train", "--data", str(good), "--out", str(tmp_path / "base"), *TRAIN_ARGS[:6], "--epochs", "1",
                 "--no-progress"]) == 0
    capsys.readouterr()
    ones = _one_class_csv(tmp_path / "ones.csv", 2000, 1)
    out = tmp_path / "ft"
    assert main(["finetune", str(tmp_path / "base" / "base.safetensors"), "--data", str(ones), "--out", str(out),
                 "--train-rows", "1000", "--test-rows", "500", "--ft-epochs", "1", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"higgs-lora: error: {ones}: the extra part (500 rows) holds only signal rows (label 1); "
                   "training needs both classes (check the label column and the file)"]
    assert not out.exists()


# ---------------------------------------------------------------- 6. output names are the user's

def _standardizer():
    from higgs_lora.data import Standardizer
    return Standardizer(mean=np.zeros(28, np.float32), std=np.ones(28, np.float32))


def _save(path, model=None):
    from higgs_lora.model import model_file
    from higgs_lora.model.network import ResidualMLP
    return model_file.save_model(path, model or ResidualMLP(), _standardizer(), feature_names=[f"f{i}" for i in range(28)])


def test_a_suffix_in_a_given_name_is_kept_and_the_extension_appended(tmp_path):
    from higgs_lora.model import model_file
    from higgs_lora.pipeline.rundir import new_model_path
    assert _save(tmp_path / "merged.v2") == tmp_path / "merged.v2.safetensors"
    assert (tmp_path / "merged.v2.json").exists() and not (tmp_path / "merged.safetensors").exists()
    assert new_model_path(tmp_path / "merged.v3", force=False) == tmp_path / "merged.v3.safetensors"  # v2 is no obstacle
    for name in ("merged.v2", "merged.v2.safetensors", "merged.v2.json"):
        assert model_file.load_model(tmp_path / name).path == tmp_path / "merged.v2.safetensors"


def test_a_path_naming_a_file_that_is_not_ours_is_refused_not_swapped_for_a_neighbour(tmp_path):
    from higgs_lora.model import model_file
    from higgs_lora.errors import UserError
    _save(tmp_path / "base")
    (tmp_path / "base.pt").write_bytes(b"a PyTorch pickle, never to be loaded")
    with pytest.raises(UserError, match=r"base\.pt: not a higgs-lora file \(a model or adapter is NAME\.safetensors "
                                         r"with NAME\.json beside it\)"):
        model_file.load_model(tmp_path / "base.pt")
    with pytest.raises(UserError, match=r"base\.v1\.json: file not found; .*base\.json is there"):
        model_file.load_model(tmp_path / "base.v1")     # what older versions wrote for --out base.v1: named, not loaded
    model_file.load_model(tmp_path / "base")             # old and plain names load as before


def test_export_refuses_to_overwrite_without_force(tmp_path):
    pytest.importorskip("onnx")
    from higgs_lora.errors import UserError
    from higgs_lora.pipeline.steps import export
    model = _save(tmp_path / "m")
    export(model_path=model, out=tmp_path / "onnx")
    before = (tmp_path / "onnx" / "model.onnx").stat().st_mtime_ns
    with pytest.raises(UserError, match=r"model\.onnx: file exists \(use --force to overwrite\)"):
        export(model_path=model, out=tmp_path / "onnx")
    assert (tmp_path / "onnx" / "model.onnx").stat().st_mtime_ns == before
    export(model_path=model, out=tmp_path / "onnx", force=True)


# ---------------------------------------------------------------- 7. a line longer than the parser's block

@pytest.mark.parametrize("rows, line", [(20, 1), (20, 3), (2000, 1000)])
def test_a_line_longer_than_a_mib_is_read(tmp_path, rows, line):
    """PyArrow parses in 1 MiB blocks and rejected such a line where it straddled two of them (line 1000),
    while the layout read only 1 MiB of line 1."""
    path = write_higgs_csv(tmp_path / "h.csv", rows)
    lines = path.read_bytes().split(b"\n")
    fields = lines[line - 1].split(b",")
    sign, digits = (b"-", fields[5][1:]) if fields[5].startswith(b"-") else (b"", fields[5])
    fields[5] = sign + b"0" * (3 << 19) + digits     # 1.5 MiB of leading zeros: still the same number
    lines[line - 1] = b",".join(fields)
    path.write_bytes(b"\n".join(lines))
    table = load_table(path, use_cache=False)
    assert table.rows == rows and table.features[line - 1, 4] == np.float32(float(sign + digits))


def test_a_first_line_beyond_the_layout_limit_is_one_line(tmp_path, monkeypatch):
    from higgs_lora.data.readers import csv as sniff  # the CSV reader reads line 1
    from higgs_lora.errors import UserError
    monkeypatch.setattr(sniff, "FIRST_LINE_MAX", 100)
    path = write_higgs_csv(tmp_path / "h.csv", 20)
    with pytest.raises(UserError, match=r"h\.csv: line 1 is longer than 100 bytes; .*is this the right file\?"):
        load_table(path, use_cache=False)


@pytest.mark.parametrize("line", [1, 3])
def test_a_huge_bad_field_is_quoted_short(tmp_path, line):
    from higgs_lora.errors import UserError
    path = write_higgs_csv(tmp_path / "h.csv", 20)
    lines = path.read_bytes().split(b"\n")
    fields = lines[line - 1].split(b",")
    fields[5] = b"x" * (3 << 19)
    lines[line - 1] = b",".join(fields)
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(UserError, match=rf"line {line}, .*not a number: 'x+'\.\.\.'x+' \(1,572,864 characters\)") as e:
        load_table(path, use_cache=False)
    assert len(str(e.value)) < 300


# ---------------------------------------------------------------- 8. an adapter whose JSON disagrees with its tensors

@pytest.mark.parametrize("edit, expected", [
    (dict(rank=4), "{js} says rank 4, the tensors hold rank 2"),
    (dict(targets=["input", "hidden", "output"]), "{js} says targets input, hidden, output, the tensors hold "
                                                  "input, output"),
    (dict(dora=True), "{js} says dora, the tensors have no lora_magnitude"),
])
def test_an_adapter_json_that_disagrees_with_its_tensors_is_one_line_naming_both(tmp_path, edit, expected):
    import json

    from higgs_lora.model import model_file
    from higgs_lora.adapters import adapter_file
    from higgs_lora.errors import UserError
    from higgs_lora.adapters.lora import add_adapters
    from higgs_lora.config import AdapterConfig
    from higgs_lora.model.network import ResidualMLP
    base = ResidualMLP()
    fingerprint = model_file.tensors_fingerprint(model_file.model_state(base, _standardizer()))
    adapted = add_adapters(ResidualMLP(), AdapterConfig(rank=2, scale=1.0, targets=["input", "output"]))
    adapter_file.save_adapter(tmp_path / "a", adapted, base_fingerprint=fingerprint)
    js = tmp_path / "a.json"
    js.write_text(json.dumps(dict(json.loads(js.read_text()), **edit)))
    with pytest.raises(UserError) as e:
        adapter_file.load_adapter(tmp_path / "a", ResidualMLP(), base_fingerprint=fingerprint)
    assert str(e.value) == f"{tmp_path / 'a.safetensors'}: does not match its JSON: {expected.format(js=js)}"


# ---------------------------------------------------------------- 9. float32 tolerances from the computation

@pytest.mark.parametrize("init", ["glorot", "pissa"])
def test_the_float32_tolerance_admits_reordering_and_rejects_a_real_mistake(init):
    """conftest.float32_tolerance (the tests' bound for two float32 computations of one network) is
    above what a reordering gives (float64 against float32 here) and below what a 1% scale error gives."""
    import copy
    import dataclasses

    import torch

    from higgs_lora.adapters.lora import add_adapters, adapters
    from higgs_lora.config import AdapterConfig
    from higgs_lora.model.network import ResidualMLP
    from conftest import float32_tolerance
    torch.manual_seed(0)
    model = add_adapters(ResidualMLP(width=32, head_width=16), AdapterConfig(rank=3, scale=0.5, init=init))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn(p.shape))
    x = torch.randn(4000, 28)
    tol = float32_tolerance(model, x, probabilities=True)
    wrong = copy.deepcopy(model)
    for layer in adapters(wrong).values():
        layer.config = dataclasses.replace(layer.config, scale=layer.config.scale * 1.01)
    with torch.no_grad():
        p32, p64 = torch.sigmoid(model(x)), torch.sigmoid(copy.deepcopy(model).double()(x.double()))
        assert (p32.double() - p64).abs().max().item() <= tol / 2          # one float32 computation's share
        assert (torch.sigmoid(wrong(x)) - p32).abs().max().item() > 10 * tol


# ---------------------------------------------------------------- every message one line, a traceback only on request

def test_a_bug_is_one_line_and_debug_shows_the_traceback(tmp_path, monkeypatch, capsys):
    from higgs_lora import cli, pipeline

    def broken(**kw):
        raise ZeroDivisionError("division by zero")
    monkeypatch.setattr(pipeline, "merge", broken)
    argv = ["merge", "m", "--adapter", "a", "--out", str(tmp_path / "x")]
    assert cli.main(argv) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "higgs-lora: internal error: ZeroDivisionError: division by zero (run again with --debug for the "
        "traceback, and please report it)"]
    with pytest.raises(ZeroDivisionError):
        cli.main(["--debug", *argv])
    monkeypatch.setenv("HIGGS_LORA_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        cli.main(argv)


# ---------------------------------------------------------------- further hostile cases

def test_a_symlink_loop_as_data_is_one_line(tmp_path):
    from higgs_lora.errors import UserError
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)
    with pytest.raises(UserError, match=r"loop\.csv: cannot read \(Too many levels of symbolic links\)"):
        load_table(loop)


def test_a_zero_byte_model_file_is_one_line_naming_it(tmp_path):
    from higgs_lora.model import model_file
    from higgs_lora.errors import UserError
    path = _save(tmp_path / "m")
    path.write_bytes(b"")
    with pytest.raises(UserError, match=r"m\.safetensors: contents do not match the checksum in .*m\.json"):
        model_file.load_model(path)


@pytest.mark.parametrize("kind", ["model", "adapter"])
def test_a_file_of_a_future_format_version_is_refused_naming_it(tmp_path, kind):
    import json

    from higgs_lora.model import model_file
    from higgs_lora.adapters import adapter_file
    from higgs_lora.errors import UserError
    from higgs_lora.adapters.lora import add_adapters
    from higgs_lora.config import AdapterConfig
    from higgs_lora.model.network import ResidualMLP
    base = ResidualMLP()
    fingerprint = model_file.tensors_fingerprint(model_file.model_state(base, _standardizer()))
    if kind == "model":
        _save(tmp_path / "f")
    else:
        adapted = add_adapters(ResidualMLP(), AdapterConfig(rank=2, scale=1.0))
        adapter_file.save_adapter(tmp_path / "f", adapted, base_fingerprint=fingerprint)
    js = tmp_path / "f.json"
    js.write_text(json.dumps(dict(json.loads(js.read_text()), format_version=2)))
    with pytest.raises(UserError, match=rf"f\.json: written by a newer higgs-lora \({kind} format version 2; this "
                                        r"one reads up to 1\): upgrade higgs-lora to use it"):
        if kind == "model":
            model_file.load_model(tmp_path / "f")
        else:
            adapter_file.load_adapter(tmp_path / "f", base, base_fingerprint=fingerprint)


def test_ctrl_c_while_writing_the_cache_leaves_no_entry_and_the_next_read_caches(tmp_path, monkeypatch):
    path = write_higgs_csv(tmp_path / "h.csv", 500)

    def interrupted(*a, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(np, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_table(path, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
    monkeypatch.undo()
    assert isinstance(load_table(path, cache_dir=tmp_path / "cache").features, np.memmap)


def test_an_output_file_that_is_a_directory_is_refused_as_such(tmp_path):
    from higgs_lora.errors import UserError
    from higgs_lora.pipeline.rundir import new_file, new_model_path
    (tmp_path / "preds.csv").mkdir()
    (tmp_path / "m.safetensors").mkdir()
    for make, name in ((new_file, "preds.csv"), (new_model_path, "m")):
        for force in (False, True):
            with pytest.raises(UserError, match=r"is a directory, not a file"):
                make(tmp_path / name, force=force)
