"""Shard directories: data read window by window, each rank its own rows, never the whole table."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from higgs_lora.data import Standardizer
from higgs_lora.data.read import load_table
from higgs_lora.config import Recipe
from higgs_lora.data.shards import ShardSet, open_shards, write_shards
from higgs_lora.errors import UserError
from higgs_lora.model.network import ResidualMLP
from higgs_lora.hardware.runtime import predict_logits
from higgs_lora.train import Checkpoint, Interrupted, fit
from higgs_lora.data.sources import TensorData
from higgs_lora.data.stream import ShardStream, fit_standardizer, predict_part

from conftest import CtrlCAfter, cli, synthetic_xy, write_higgs_csv


def write_parquet_shards(folder, sizes, *, seed=0, n_features=28):
    """Parquet files of the given row counts; row i of the whole set has feature 0 = i (an id)."""
    folder.mkdir(parents=True, exist_ok=True)
    x, y = synthetic_xy(sum(sizes), n_features=n_features, seed=seed)
    x[:, 0] = np.arange(len(y))
    start = 0
    for i, n in enumerate(sizes):
        cols = {"label": y[start:start + n].astype(np.float64)}
        cols |= {f"f{j}": x[start:start + n, j].astype(np.float64) for j in range(n_features)}
        pq.write_table(pa.table(cols), folder / f"part-{i:03d}.parquet", row_group_size=1000)
        start += n
    return x, y


def identity(n_features=28):
    return Standardizer(mean=np.zeros(n_features, np.float32), std=np.ones(n_features, np.float32))


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pq") / "shards"
    x, y = write_parquet_shards(folder, [3000, 1700, 4100, 1200])
    return folder, x, y


def test_parquet_directory_reads_as_one_table(parquet_dir, tmp_path):
    folder, x, y = parquet_dir
    shards = open_shards(folder, cache_dir=tmp_path / "cache")
    assert shards.rows == len(y) and shards.n_features == 28 and len(shards.shards) == 4
    assert shards.feature_names == [f"f{j}" for j in range(28)]
    np.testing.assert_array_equal(shards.labels, y)
    for a, b in [(0, len(y)), (2990, 3010), (4650, 4750), (9900, 10000), (5, 6)]:  # across shard boundaries
        block = shards.read(a, b)
        features, labels = block.features, block.labels
        np.testing.assert_array_equal(features, x[a:b])
        np.testing.assert_array_equal(labels, y[a:b])
    again = open_shards(folder, cache_dir=tmp_path / "cache")  # from the cache this time
    assert again.fingerprint == shards.fingerprint


def test_shards_are_ordered_by_number_in_their_names(tmp_path):
    x, y = write_parquet_shards(tmp_path / "s", [50] * 12)  # part-000 .. part-011: rename to unpadded numbers
    for i in range(12):
        (tmp_path / "s" / f"part-{i:03d}.parquet").rename(tmp_path / "s" / f"part-{i}.parquet")
    shards = open_shards(tmp_path / "s", cache_dir=tmp_path / "cache")
    assert [s.name for s in shards.shards][:3] == ["part-0.parquet", "part-1.parquet", "part-2.parquet"]
    np.testing.assert_array_equal(shards.read(0, 600).features, x)  # part-10 after part-9, not after part-1


def test_shard_command_round_trip(tmp_path):
    data = write_higgs_csv(tmp_path / "h.csv", 2500, seed=5)
    cli("shard", data, "--out", tmp_path / "s", "--rows-per-shard", "1000")
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["part-00000", "part-00001", "part-00002"]
    meta = json.loads((tmp_path / "s" / "part-00002" / "meta.json").read_text())
    assert meta["rows"] == 500 and meta["n_features"] == 28
    table, shards = load_table(data, use_cache=False), open_shards(tmp_path / "s")
    np.testing.assert_array_equal(shards.read(0, 2500).features, table.features)
    np.testing.assert_array_equal(shards.labels, table.labels)
    assert shards.feature_names == table.feature_names
    p = cli("shard", data, "--out", tmp_path / "s", check=False)  # never into an existing directory
    assert p.returncode == 1 and "exists" in p.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3\n0,1,x\n")
    p = cli("shard", bad, "--out", tmp_path / "t", check=False)
    assert p.returncode == 1 and "line 2, column 3" in p.stderr
    assert not (tmp_path / "t").exists() and not [q for q in tmp_path.iterdir() if q.name.startswith(".t.tmp")]


def test_bad_shards_are_named(tmp_path):
    write_parquet_shards(tmp_path / "a", [100, 100])
    write_parquet_shards(tmp_path / "b", [100], n_features=5)
    (tmp_path / "b" / "part-000.parquet").rename(tmp_path / "a" / "part-005.parquet")
    with pytest.raises(UserError, match="part-005.parquet: 5 features, but part-000.parquet has 28"):
        open_shards(tmp_path / "a", cache_dir=tmp_path / "cache")
    with pytest.raises(UserError, match="no shards"):
        open_shards(tmp_path / "b")
    (tmp_path / "b" / "events.root").write_bytes(b"root")
    with pytest.raises(UserError, match="ROOT files: convert them to Parquet.*found events.root"):
        open_shards(tmp_path / "b")
    (tmp_path / "a" / "_SUCCESS").write_text("")  # what Spark leaves beside its Parquet files
    (tmp_path / "a" / "part-005.parquet").unlink()
    assert open_shards(tmp_path / "a", cache_dir=tmp_path / "cache").ignored == ["_SUCCESS"]

    x, y = synthetic_xy(300)
    write_shards_from_arrays(tmp_path / "c", x, y)
    features = tmp_path / "c" / "part-00000" / "features.npy"
    features.write_bytes(features.read_bytes()[:-8])
    with pytest.raises(UserError, match="features.npy: file size does not match"):
        open_shards(tmp_path / "c")

    x[250, 3] = np.nan
    write_shards_from_arrays(tmp_path / "d", x, y)
    shards = open_shards(tmp_path / "d")
    with pytest.raises(UserError, match=r"part-00000/features.npy: row 251, column 4: nan is not a finite number"):
        shards.read(200, 300)


def write_shards_from_arrays(folder, x, y):
    path = folder.parent / f"{folder.name}.parquet"
    cols = {"label": y.astype(np.float64)} | {f"f{j}": x[:, j].astype(np.float64) for j in range(x.shape[1])}
    pq.write_table(pa.table(cols), path)
    if np.isfinite(x).all():
        return write_shards(path, folder, rows_per_shard=10_000)
    # The reader refuses NaN, so write the arrays by hand: a shard made by some other tool.
    (folder / "part-00000").mkdir(parents=True)
    np.save(folder / "part-00000" / "features.npy", x)
    np.save(folder / "part-00000" / "labels.npy", y)


def _epoch_ids(stream, *, epoch=0, first_step=0):
    return [xb[:, 0].long().tolist() for xb, *_ in stream.batches(seed=1, phase="base", epoch=epoch,
                                                                  first_step=first_step)]


def test_stream_each_rank_reads_its_own_rows_once_per_epoch(parquet_dir, tmp_path, monkeypatch):
    folder, x, y = parquet_dir
    shards = open_shards(folder, cache_dir=tmp_path / "cache")
    part = slice(500, 9500)
    reads = []
    original = ShardSet.read
    monkeypatch.setattr(ShardSet, "read", lambda self, a, b, **kw: reads.append((a, b)) or original(self, a, b, **kw))
    streams = [ShardStream(shards, part, identity(), torch.device("cpu"), batch_size=256, window_rows=1000,
                           block_rows=300, rank=r, world=2) for r in range(2)]
    epochs = [_epoch_ids(s) for s in streams]
    assert len(epochs[0]) == len(epochs[1]) == 36  # ceil(9000 / 256) steps on every rank
    ranges = [(500, 5000), (5000, 9500)]
    for (lo, hi), batches in zip(ranges, epochs):
        ids = sorted(i for b in batches for i in b)
        assert ids == list(range(lo, hi))  # every row of its range, once, and nothing else
        assert max(len(b) for b in batches) - min(len(b) for b in batches) <= 1
    assert max(b - a for a, b in reads) <= 300  # read in blocks, never the whole table
    assert sum(b - a for a, b in reads) == 9000
    # Blocks from all over the range are mixed: a batch draws on several blocks.
    assert np.mean([len({i // 300 for i in b}) for b in epochs[0]]) > 2
    # The order is new each epoch, and a resumed epoch continues exactly where it stopped.
    assert _epoch_ids(streams[0], epoch=1) != epochs[0]
    assert _epoch_ids(streams[0], first_step=13) == epochs[0][13:]
    assert "part-000.parquet..part-002.parquet" in streams[0].describe()
    # Reading ahead in a thread or when needed changes when rows are read, never which rows a step gets.
    for read_ahead in (True, False):
        again = ShardStream(shards, part, identity(), torch.device("cpu"), batch_size=256, window_rows=1000,
                            block_rows=300, rank=0, world=2, read_ahead=read_ahead)
        assert _epoch_ids(again) == epochs[0] and _epoch_ids(again, first_step=13) == epochs[0][13:]


def test_stream_standardizer_and_predictions_match_in_memory(parquet_dir, tmp_path):
    folder, x, y = parquet_dir
    shards = open_shards(folder, cache_dir=tmp_path / "cache")
    streamed = fit_standardizer(shards, slice(0, 7000), device=torch.device("cpu"))
    exact = Standardizer.fit(x[:7000])
    np.testing.assert_allclose(streamed.mean, exact.mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(streamed.std, exact.std, rtol=1e-6)
    torch.manual_seed(0)
    model = ResidualMLP(width=16, head_width=8)
    logits, labels = predict_part(model, shards, slice(7000, 10000), exact, torch.device("cpu"))
    expected = predict_logits(model, torch.from_numpy(exact.transform(x[7000:])))
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(labels.numpy(), y[7000:])


def _fit_stream(shards, standardizer, checkpoint, *, resume=False, stop_after=None):
    torch.manual_seed(7)
    model = ResidualMLP(width=32, head_width=16)
    stream = ShardStream(shards, slice(0, 9000), standardizer, torch.device("cpu"), batch_size=256,
                         window_rows=2000, block_rows=500)
    val = ShardStream(shards, slice(9000, 10000), standardizer, torch.device("cpu"), batch_size=256)
    try:
        result = fit(model, CtrlCAfter(stream, stop_after), Recipe(epochs=3, lr=1e-3, seed=3), val=val,
                     checkpoint=Checkpoint(checkpoint, resume=resume), progress=False, verbose=False)
    except Interrupted:
        return model, None
    return model, result


@pytest.mark.parametrize("stop_after", [7, 36, 50])  # mid-epoch (in the first window), end of epoch 1, later
def test_stream_training_learns_and_resumes_bit_for_bit(parquet_dir, tmp_path, stop_after):
    folder, x, y = parquet_dir
    shards = open_shards(folder, cache_dir=tmp_path / "cache")
    standardizer = Standardizer.fit(x[:9000])
    reference, ref = _fit_stream(shards, standardizer, tmp_path / "ref.safetensors")
    assert ref.history[-1]["accuracy"] > 0.6 and ref.history[-1]["val_accuracy"] > 0.6
    _fit_stream(shards, standardizer, tmp_path / "run.safetensors", stop_after=stop_after)
    resumed, result = _fit_stream(shards, standardizer, tmp_path / "run.safetensors", resume=True)
    assert all(torch.equal(p, q) for p, q in zip(reference.state_dict().values(), resumed.state_dict().values()))
    assert [r["loss"] for r in result.history] == pytest.approx([r["loss"] for r in ref.history], rel=1e-9)
    # Same data in memory: the same model quality (the order differs, the rows do not).
    torch.manual_seed(7)
    model = ResidualMLP(width=32, head_width=16)
    xs = torch.from_numpy(standardizer.transform(x))
    ys = torch.from_numpy(y.astype(np.float32))
    mem = fit(model, TensorData(xs[:9000], ys[:9000], batch_size=256), Recipe(epochs=3, lr=1e-3, seed=3),
              val=TensorData(xs[9000:], ys[9000:], batch_size=256), progress=False, verbose=False)
    assert abs(mem.history[-1]["val_accuracy"] - ref.history[-1]["val_accuracy"]) < 0.03


def test_run_on_shard_directory_matches_run_on_file(tmp_path):
    data = write_higgs_csv(tmp_path / "h.csv", 6000, seed=8)
    cli("shard", data, "--out", tmp_path / "shards", "--rows-per-shard", "1300")
    args = ["--preset", "notebook", "--train-rows", "3000", "--test-rows", "1000", "--epochs", "3", "--ft-epochs", "1",
            "--batch-size", "256", "--no-progress", "--no-report"]
    cli("run", "--data", data, "--out", tmp_path / "file", *args)
    p = cli("run", "--data", tmp_path / "shards", "--out", tmp_path / "dir", *args)
    assert "5 shards" in p.stdout and "rank 0: rows 0..2,999 (3,000) from 3 shards part-00000..part-00002" in p.stdout
    one, two = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("file", "dir"))
    assert two["data"]["rows"] == 6000 and two["data"]["source"] == str(tmp_path / "shards")
    for part in ("base", "adapted"):
        assert abs(one[part]["roc_auc"] - two[part]["roc_auc"]) < 0.02, (part, one[part], two[part])
    assert two["merge_max_abs_diff"] <= 1e-5
    # The single-step commands take the directory too, and find the split the model was trained with.
    p = cli("evaluate", tmp_path / "dir" / "base.safetensors", "--data", tmp_path / "shards")
    assert f"roc_auc {two['base']['roc_auc']:.4f}" in p.stdout
    p = cli("strategies", "--data", tmp_path / "shards", "--out", tmp_path / "st", check=False)
    assert p.returncode == 1 and "directory of shards" in p.stderr
