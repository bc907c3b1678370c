"""`predict` gives the in-memory forward's probabilities to the bit, whether the rows come from the cache,
from the parser (in pieces of any size) or from memory, and its output files are equal byte for byte."""
import numpy as np
import pytest
import torch

import higgs_lora as hl
from conftest import write_higgs_csv
from higgs_lora.data import csvfile
from higgs_lora.data.read import load_table, stream_rows
from higgs_lora.data.standardize import Standardizer
from higgs_lora.errors import UserError
from higgs_lora.model.network import ResidualMLP

ROWS = 9000  # over four inference batches of 2048, the last one partial


pytestmark = pytest.mark.usefixtures("no_stray_caches")  # conftest.py: caches in tmp_path, never in ~


@pytest.fixture
def odd_pieces(monkeypatch):
    """Parser pieces of 20,000 bytes: chunks of rows whose counts are no multiple of anything."""
    monkeypatch.setattr(csvfile, "PIECE_BYTES", 20_000)


@pytest.fixture
def model(tmp_path):
    """An untrained network (its weights do not matter here) with the statistics of the file's rows."""
    csv = write_higgs_csv(tmp_path / "rows.csv", ROWS, seed=3)
    table = load_table(csv, use_cache=False)
    torch.manual_seed(0)
    m = hl.Model(network=ResidualMLP(), standardizer=Standardizer.fit(np.asarray(table.features)),
                 feature_names=table.feature_names)
    return m, csv, np.asarray(table.features)


def test_stream_rows_are_the_table_in_whole_blocks(tmp_path, odd_pieces):
    csv = write_higgs_csv(tmp_path / "rows.csv", 3000, seed=1)
    table = load_table(csv, cache_dir=tmp_path / "cache")
    for use_cache in (False, True):
        where, chunks = stream_rows(csv, chunk_rows=100, block=64, cache_dir=tmp_path / "cache", use_cache=use_cache)
        chunks = list(chunks)
        assert (where is not None) == use_cache
        assert all(len(c) % 64 == 0 for c in chunks[:-1]) and len(chunks) > 10
        np.testing.assert_array_equal(np.concatenate([c.features for c in chunks]), table.features)
        np.testing.assert_array_equal(np.concatenate([c.labels for c in chunks]), table.labels)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_cached_uncached_and_in_memory_predictions_are_equal_to_the_bit(model, tmp_path, odd_pieces, suffix):
    m, csv, features = model
    uncached = tmp_path / f"uncached{suffix}"
    hl.predict_file(m, data=csv, out=uncached, chunk_rows=1000)  # no cache yet: parsed in odd pieces
    assert not (tmp_path / ".higgs-lora-cache").exists()  # predict writes none
    load_table(csv)  # now the cache entry beside the file
    cached = tmp_path / f"cached{suffix}"
    hl.predict_file(m, data=csv, out=cached, chunk_rows=1000)
    assert uncached.read_bytes() == cached.read_bytes()
    if suffix == ".parquet":
        import pyarrow.parquet as pq
        p = pq.read_table(cached)["probability"].to_numpy()
        # torch.equal, not a tolerance: the very float32 values of one forward over the table in memory
        assert torch.equal(torch.from_numpy(p), torch.from_numpy(hl.predict(m, features)))


def test_features_only_file_predicts_as_in_memory(model, tmp_path, odd_pieces):
    m, csv, features = model
    bare = tmp_path / "bare.csv"
    bare.write_text("".join(line.split(",", 1)[1] for line in csv.read_text().splitlines(keepends=True)))
    out = tmp_path / "bare.parquet"
    hl.predict_file(m, data=bare, out=out, label_column=None, chunk_rows=777)
    import pyarrow.parquet as pq
    t = pq.read_table(out)
    assert t.column_names == ["probability"]
    assert torch.equal(torch.from_numpy(t["probability"].to_numpy()), torch.from_numpy(hl.predict(m, features)))


def test_bad_line_read_beside_the_inference_is_named_and_leaves_no_output(model, tmp_path, odd_pieces):
    """The parser runs in a thread of its own: its error still names the file, line and column, after the
    rows before it were inferred, and the output file is not left half-written."""
    m, csv, _ = model
    lines = csv.read_text().splitlines(keepends=True)
    fields = lines[7000].split(",")
    fields[5] = "oops"  # the sixth field: "column 6", 1-based as the messages count
    lines[7000] = ",".join(fields)
    bad = tmp_path / "bad.csv"
    bad.write_text("".join(lines))
    out = tmp_path / "p.parquet"
    with pytest.raises(UserError, match=r"bad\.csv: line 7001, column 6: not a number: 'oops'"):
        hl.predict_file(m, data=bad, out=out, chunk_rows=1000)
    assert not out.exists() and not list(tmp_path.glob(".p.parquet*"))


def test_a_rows_probability_depends_only_on_its_batch_whatever_the_threads(model):
    """hl.predict over 100,000 rows at once (two threads split an element-wise op of more than 32,768
    elements, here at row 50,000, which is no multiple of the vector loop's stride) equals it over pieces
    of whole batches: the sigmoid is taken batch by batch, never over all the logits at once, whose
    vectorized loop rounds some elements by an ulp according to where the thread ranges fall (one sigmoid
    over these logits, as before, differs from the piecewise one in 2 values on the AVX-512 Xeon)."""
    m, _, _ = model
    rng = np.random.default_rng(5)
    x = rng.normal(1.0, 2.0, size=(100_000, 28)).astype(np.float32)
    threads = torch.get_num_threads()
    try:
        for n in (2, 1):
            torch.set_num_threads(n)
            whole = hl.predict(m, x)
            pieces = np.concatenate([hl.predict(m, x[i:i + 3 * 2048]) for i in range(0, len(x), 3 * 2048)])
            assert torch.equal(torch.from_numpy(whole), torch.from_numpy(pieces)), n
    finally:
        torch.set_num_threads(threads)
