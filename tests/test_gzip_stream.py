"""The threaded inflater against Python's gzip module, and the reader on top of it against a sequential read
(same arrays, same error messages)."""
from __future__ import annotations

import gzip
import io
import threading

import numpy as np
import pytest

from higgs_lora.data import csvfile
from higgs_lora.data.gzip_stream import open_gzip, read_ahead
from higgs_lora.data.read import load_table
from higgs_lora.errors import UserError
from higgs_lora.hardware.machine import Cores


def test_open_gzip_reads_multi_member_files_like_the_gzip_module():
    rng = np.random.default_rng(1)
    parts = [rng.integers(0, 10, size).astype(np.uint8).tobytes() + b"\n" for size in (0, 1, 5000, 70000)]
    blob = b"".join(gzip.compress(p) for p in parts)  # several members, as bgzip and pigz write
    with open_gzip(io.BytesIO(blob)) as f:
        assert f.read() == gzip.decompress(blob)


def test_read_ahead_yields_in_order_then_raises_where_a_loop_would():
    def items():
        yield from range(10)
        raise EOFError("cut")
    got = []
    with pytest.raises(EOFError, match="cut"):
        for x in read_ahead(items(), depth=2):
            got.append(x)
    assert got == list(range(10))


@pytest.mark.parametrize("depth", [1, 3])
def test_read_ahead_runs_the_iterator_in_another_thread(depth):
    threads = []

    def items():
        for i in range(5):
            threads.append(threading.current_thread())
            yield i
    assert list(read_ahead(items(), depth=depth)) == list(range(5))
    assert threading.current_thread() not in threads and len(set(threads)) == 1


def test_read_ahead_stopped_early_ends_its_thread():
    def endless():
        i = 0
        while True:
            yield i
            i += 1
    before = threading.active_count()
    for x in read_ahead(endless(), depth=2):
        if x == 3:
            break
    assert threading.active_count() == before


# ---------------------------------------------------------------- the reader on top

def write_gz(path, lines, *, members: int = 1):
    text = ("\n".join(lines) + "\n").encode()
    step = len(text) // members + 1
    path.write_bytes(b"".join(gzip.compress(text[i:i + step]) for i in range(0, len(text), step)))
    return path


def read_sequentially(path):
    """The reader with gzip inflated in the calling thread and one parse thread (what the pipelined
    reader must equal)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(csvfile.gzip_stream, "read_ahead", lambda items: items)
        mp.setattr(csvfile, "usable_cores", lambda: Cores(1, "one, for the test"))
        return load_table(path, use_cache=False)


@pytest.mark.parametrize("piece", [4096, 1 << 16])
def test_reader_arrays_identical_to_sequential(tmp_path, monkeypatch, piece):
    rng = np.random.default_rng(3)
    x = rng.normal(0, 2, (5000, 6)).astype(np.float32)
    lines = [f"{i % 2}," + ",".join(f"{v:.18e}" for v in row) for i, row in enumerate(x)]
    path = write_gz(tmp_path / "t.csv.gz", lines, members=3)
    monkeypatch.setattr(csvfile, "PIECE_BYTES", piece)
    threaded, sequential = load_table(path, use_cache=False), read_sequentially(path)
    np.testing.assert_array_equal(threaded.features, x)
    np.testing.assert_array_equal(threaded.features, sequential.features)
    np.testing.assert_array_equal(threaded.labels, sequential.labels)


def errors_both_ways(path) -> list[str]:
    """The messages of the pipelined reader and of the sequential reference on the same bad file."""
    errors = []
    for load in (lambda: load_table(path, use_cache=False), lambda: read_sequentially(path)):
        with pytest.raises(UserError) as err:
            load()
        errors.append(str(err.value))
    return errors


@pytest.mark.parametrize("bad_line, bad, message", [
    (1234, "1,2,oops", "column 3: not a number: 'oops'"),
    (3001, "0,1", "expected 3 columns, found 2"),
    (4999, "2,1,1", "label is 2"),
])
def test_reader_errors_identical_to_sequential(tmp_path, monkeypatch, bad_line, bad, message):
    lines = [f"{i % 2},{i}.25,{-i}" for i in range(1, 5001)]
    lines[bad_line - 1] = bad
    path = write_gz(tmp_path / "bad.csv.gz", lines, members=2)
    monkeypatch.setattr(csvfile, "PIECE_BYTES", 4096)
    errors = errors_both_ways(path)
    assert errors[0] == errors[1]
    assert f"{path}: line {bad_line}" in errors[0] and message in errors[0]


@pytest.mark.parametrize("damage", ["middle", "crc", "cut"])
def test_reader_gzip_faults_same_message_as_sequential(tmp_path, monkeypatch, damage):
    lines = [f"{i % 2},{i}.25,{-i}" for i in range(1, 40001)]
    path = write_gz(tmp_path / "c.csv.gz", lines, members=2)
    blob = bytearray(path.read_bytes())
    if damage == "middle":
        blob[len(blob) // 2:len(blob) // 2 + 40] = b"\x00" * 40
    elif damage == "crc":
        blob[-6] ^= 0xFF
    else:
        blob = blob[:len(blob) * 3 // 4]
    path.write_bytes(bytes(blob))
    monkeypatch.setattr(csvfile, "PIECE_BYTES", 4096)
    errors = errors_both_ways(path)
    assert errors[0] == errors[1] and errors[0].startswith(f"{path}: ")
