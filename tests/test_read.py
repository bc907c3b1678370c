"""The reader and its cache, against numpy.loadtxt and a plain csv-module parser."""
from __future__ import annotations

import csv
import gzip
import io
import os
import re
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from higgs_lora.data import csvfile, sniff
from higgs_lora.data.read import fingerprint_file, load_table, prepare
from higgs_lora.data.table import HIGGS_FEATURES
from higgs_lora.errors import UserError

REAL = Path(__file__).parent / "data" / "higgs_real_sample.csv"


def random_table(rows: int, n_features: int, *, seed: int = 0) -> np.ndarray:
    """Label column first, then float32-representable features, as float64 (what loadtxt gives back)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 3, (rows, n_features)).astype(np.float32).astype(np.float64)
    return np.column_stack([rng.integers(0, 2, rows), x])


def write_csv(path: Path, data: np.ndarray, *, header: str | None = None, fmt: str = "%.18e") -> Path:
    np.savetxt(path, data, fmt=fmt, delimiter=",", header=header or "", comments="")  # .gz names are gzipped
    return path


def reference(path: Path, *, label: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """loadtxt's reading of the file, as the reader should return it."""
    skip = 0 if sniff.is_number(_first_field(path)) else 1
    a = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2)
    return np.delete(a, label, axis=1).astype(np.float32), a[:, label].astype(np.uint8)


def _first_field(path: Path) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return f.readline().split(",")[0]


def assert_same(table, features, labels):
    assert table.features.dtype == np.float32 and table.features.flags.c_contiguous
    assert table.labels.dtype == np.uint8
    np.testing.assert_array_equal(table.features, features)
    np.testing.assert_array_equal(table.labels, labels)


pytestmark = pytest.mark.usefixtures("no_stray_caches")  # conftest.py: caches in tmp_path, never in ~


@pytest.fixture
def small_pieces(monkeypatch):
    """Pieces of 4 KiB, so every file of a few hundred lines crosses many piece boundaries."""
    monkeypatch.setattr(csvfile, "PIECE_BYTES", 4096)


# ------------------------------------------------------------------------------------------- reading

def test_real_sample_equals_loadtxt(tmp_path):
    table = load_table(REAL, cache_dir=tmp_path / "cache")
    assert_same(table, *reference(REAL))
    assert table.rows == 1000 and table.feature_names == HIGGS_FEATURES
    assert table.source == str(REAL) and table.fingerprint == fingerprint_file(REAL)


@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz"])
@pytest.mark.parametrize("use_cache", [False, True])
def test_csv_round_trip(tmp_path, small_pieces, name, use_cache):
    path = write_csv(tmp_path / name, random_table(500, 5))
    table = load_table(path, use_cache=use_cache, cache_dir=tmp_path / "cache")
    assert_same(table, *reference(path))
    assert table.feature_names == ["f0", "f1", "f2", "f3", "f4"]
    assert isinstance(table.features, np.memmap) == use_cache


def test_parquet_round_trip(tmp_path):
    data = random_table(300, 4, seed=1)
    csv_path = write_csv(tmp_path / "t.csv", data)
    names = ["label", "a", "b", "c", "d"]
    columns = [pa.array(data[:, 0].astype(np.int64))] + [pa.array(data[:, i]) for i in range(1, 5)]
    pq.write_table(pa.table(columns, names=names), tmp_path / "t.parquet", row_group_size=100)
    table = load_table(tmp_path / "t.parquet", cache_dir=tmp_path / "cache", label_column="label")
    assert_same(table, *reference(csv_path))
    assert table.feature_names == ["a", "b", "c", "d"]


def test_header_detected(tmp_path):
    data = random_table(50, 3)
    plain = write_csv(tmp_path / "plain.csv", data)
    named = write_csv(tmp_path / "named.csv", data, header="label,px,py,pz")
    hepmass = write_csv(tmp_path / "hepmass.csv", data, header="# label, px, py, pz", fmt="%g")
    for path, names in [(plain, ["f0", "f1", "f2"]), (named, ["px", "py", "pz"]), (hepmass, ["px", "py", "pz"])]:
        table = load_table(path, use_cache=False)
        assert_same(table, *reference(path))
        assert table.feature_names == names


def test_label_column_by_name_and_index(tmp_path):
    data = random_table(60, 3)[:, [1, 2, 0, 3]]  # label in the third column
    path = write_csv(tmp_path / "t.csv", data, header="a,b,target,c")
    expected = reference(path, label=2)
    for label_column in ("target", 2, -2, "2"):
        table = load_table(path, use_cache=False, label_column=label_column)
        assert_same(table, *expected)
        assert table.feature_names == ["a", "b", "c"]
    with pytest.raises(UserError, match="no column named 'nope'.*a, b, target, c"):
        load_table(path, use_cache=False, label_column="nope")
    with pytest.raises(UserError, match="out of range"):
        load_table(path, use_cache=False, label_column=4)


def test_trailing_blank_lines_and_crlf(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"1,2.5,3\r\n0,4,-5e-3\r\n\r\n\n  \n")
    table = load_table(path, use_cache=False)
    np.testing.assert_array_equal(table.features, np.array([[2.5, 3], [4, -5e-3]], dtype=np.float32))
    np.testing.assert_array_equal(table.labels, [1, 0])


def test_lines_longer_than_a_piece(tmp_path, monkeypatch):
    monkeypatch.setattr(csvfile, "PIECE_BYTES", 64)
    path = write_csv(tmp_path / "t.csv", random_table(40, 12))  # each line ~250 bytes
    assert_same(load_table(path, use_cache=False), *reference(path))


def test_progress_bar(tmp_path, capsys):
    path = write_csv(tmp_path / "t.csv.gz", random_table(100, 3))
    assert_same(load_table(path, use_cache=False, progress=True), *reference(path))
    assert "t.csv.gz" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- validation

def _good_lines(rows: int, cols: int = 4) -> list[str]:
    data = random_table(rows, cols - 1, seed=2)
    return [",".join("%.18e" % v for v in row) for row in data]


def _with_line(lines: list[str], lineno: int, text: str) -> list[str]:
    out = list(lines)
    out[lineno - 1] = text
    return out


def _cases():
    good = _good_lines(400)
    bad_at = 317  # deep enough to sit in a later 4 KiB piece
    return {
        "columns": (_with_line(good, bad_at, "1,2,3"), bad_at, "expected 4 columns, found 3"),
        "extra column": (_with_line(good, bad_at, "1,2,3,4,5"), bad_at, "expected 4 columns, found 5"),
        "text": (_with_line(good, bad_at, "1,2,abc,4"), bad_at, "column 3: not a number: 'abc'"),
        "empty field": (_with_line(good, bad_at, "1,,3,4"), bad_at, "column 2: not a number: ''"),
        "nan": (_with_line(good, bad_at, "1,2,nan,4"), bad_at, "column 3: nan is not a finite number"),
        "inf": (_with_line(good, bad_at, "0,-inf,3,4"), bad_at, "column 2: -inf is not a finite number"),
        "overflow": (_with_line(good, bad_at, "0,1,3e39,4"), bad_at, "column 3: 3e+39 is too large for float32"),
        "label": (_with_line(good, bad_at, "2,1,3,4"), bad_at, "column 1: label is 2"),
        "label nan": (_with_line(good, bad_at, "nan,1,3,4"), bad_at, "label is nan"),
        "blank line": (_with_line(good, bad_at, ""), bad_at, "empty line"),
        "header text in line 1": (_with_line(good, 1, "1,x,3,4"), 1, "column 2: not a number: 'x'"),
    }


@pytest.mark.parametrize("gz", [False, True], ids=["csv", "gz"])
@pytest.mark.parametrize("header", [False, True], ids=["noheader", "header"])
@pytest.mark.parametrize("case", list(_cases()))
def test_bad_rows_name_file_and_line(tmp_path, small_pieces, case, header, gz):
    lines, lineno, message = _cases()[case]
    if header and lineno == 1:
        pytest.skip("a header changes what line 1 means")
    if header:
        names = ["label", "a", "b", "c"]
        lines, lineno = [",".join(names)] + lines, lineno + 1
        message = re.sub(r"column (\d)", lambda m: f"column {m[1]} ({names[int(m[1]) - 1]})", message)
    path = tmp_path / ("bad.csv.gz" if gz else "bad.csv")
    text = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(text) if gz else text)
    with pytest.raises(UserError) as err:
        load_table(path)  # default cache location: beside the file
    msg = str(err.value)
    assert msg.startswith(f"{path}: line {lineno}") and re.search(f"line {lineno}[,:]", msg) and message in msg, msg
    assert "\n" not in msg
    assert not (tmp_path / ".higgs-lora-cache").exists()
    assert not (tmp_path / "home-cache").exists()


def test_blank_line_at_every_piece_boundary(tmp_path, monkeypatch):
    """Blank lines are cut off the end of each piece (harmless at the end of the file); one followed by
    more data must still be caught, wherever the piece boundary falls."""
    lines = [f"{i % 2},{i}.5,{i}" for i in range(1, 21)]
    lines[9] = ""
    path = tmp_path / "blank.csv"
    path.write_text("\n".join(lines) + "\n")
    for piece in range(8, 140, 3):
        monkeypatch.setattr(csvfile, "PIECE_BYTES", piece)
        with pytest.raises(UserError, match=f"{path}: line 10: empty line"):
            load_table(path, use_cache=False)


def test_truncated_gzip(tmp_path, small_pieces):
    blob = gzip.compress(("\n".join(_good_lines(2000)) + "\n").encode())
    cut = blob[: len(blob) * 2 // 3]
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(cut)
    recoverable = zlib.decompressobj(wbits=31).decompress(cut)  # what any inflater can get out of it
    with pytest.raises(UserError) as err:
        load_table(path, cache_dir=tmp_path / "cache")
    lineno = recoverable.count(b"\n") + 1
    assert f"{path}: line {lineno}: the gzip stream ends early" in str(err.value)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"label,a,b\n", "no data rows (only a header line)"),
    (b"\n1,2,3\n", "line 1 is empty"),
    (gzip.compress(b""), "empty file"),
    (b"\x1f\x8bnot really gzip", "not a readable gzip file"),
    (b"1\n0\n", "need a label column and at least one feature"),
])
def test_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(UserError, match=re.escape(message)) as err:
        load_table(path)
    assert str(path) in str(err.value)
    assert not (tmp_path / ".higgs-lora-cache").exists()


def test_missing_or_unreadable(tmp_path):
    with pytest.raises(UserError, match=f"{tmp_path / 'nope.csv'}: file not found"):
        load_table(tmp_path / "nope.csv")
    with pytest.raises(UserError) as err:
        load_table(tmp_path)
    assert str(err.value) == f"{tmp_path}: not a regular file"
    if os.geteuid() != 0:  # root reads anything
        path = write_csv(tmp_path / "locked.csv", random_table(3, 2))
        path.chmod(0)
        with pytest.raises(UserError, match=f"^{re.escape(str(path))}: cannot read"):
            load_table(path)


def test_parquet_non_numeric_and_null(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"label": [0, 1], "x": [1.0, 2.0], "name": ["a", "b"]}), path)
    with pytest.raises(UserError, match=r"t.parquet: non-numeric columns: name \((large_)?string\)"):
        load_table(path)
    pq.write_table(pa.table({"label": [0, 1, 1], "x": [1.0, None, 2.0]}), path)
    with pytest.raises(UserError, match=r"t.parquet: row 2, column 2 \(x\): missing value"):
        load_table(path)
    assert not (tmp_path / ".higgs-lora-cache").exists()


# --------------------------------------------------------------------------------------------- cache

def test_cache_hit_does_not_parse(tmp_path, monkeypatch):
    path = write_csv(tmp_path / "t.csv.gz", random_table(200, 3))
    first = prepare(path)
    assert not first["from_cache"]
    assert Path(first["cache_path"]).parent == tmp_path / ".higgs-lora-cache"
    assert sorted(os.listdir(first["cache_path"])) == ["features.npy", "labels.npy", "meta.json"]
    data = random_table(200, 3)
    assert first["rows"] == 200 and first["columns"] == 3 and first["signal"] == int(data[:, 0].sum())

    def no_parsing(*args, **kwargs):
        raise AssertionError("parsed although the cache is valid")
    monkeypatch.setattr(csvfile, "csv_tables", no_parsing)
    second = prepare(path)
    assert second["from_cache"] and second["cache_path"] == first["cache_path"]
    table = load_table(path)
    assert_same(table, *reference(path))
    assert isinstance(table.features, np.memmap) and not table.features.flags.writeable


def test_cache_location_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HIGGS_LORA_CACHE", str(tmp_path / "env-cache"))
    path = write_csv(tmp_path / "t.csv", random_table(20, 3))
    assert Path(prepare(path)["cache_path"]).parent == tmp_path / "env-cache"


def test_changed_file_gets_new_entry(tmp_path):
    path = tmp_path / "t.csv"
    write_csv(path, random_table(100, 3, seed=1))
    old = prepare(path, cache_dir=tmp_path / "cache")["cache_path"]
    write_csv(path, random_table(100, 3, seed=2))
    table = load_table(path, cache_dir=tmp_path / "cache")
    assert_same(table, *reference(path))
    entries = os.listdir(tmp_path / "cache")
    assert len(entries) == 1 and entries[0] != Path(old).name  # the superseded entry is gone


def test_same_size_same_mtime_edit_changes_fingerprint(tmp_path):
    path = write_csv(tmp_path / "t.csv", random_table(100, 3))
    st = path.stat()
    before = fingerprint_file(path)
    text = path.read_bytes()
    path.write_bytes(b"0" + text[1:] if text[:1] == b"1" else b"1" + text[1:])
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and fingerprint_file(path) != before


@pytest.mark.parametrize("damage", ["truncate features", "grow features", "bad meta", "no labels", "wrong labels",
                                    "no meta"])
def test_damaged_cache_is_rebuilt(tmp_path, damage):
    path = write_csv(tmp_path / "t.csv", random_table(100, 3))
    entry = Path(prepare(path, cache_dir=tmp_path / "cache")["cache_path"])
    features, labels = entry / "features.npy", entry / "labels.npy"
    if damage == "truncate features":
        features.write_bytes(features.read_bytes()[:-40])
    elif damage == "grow features":
        features.write_bytes(features.read_bytes() + b"\0" * 12)
    elif damage == "bad meta":
        (entry / "meta.json").write_text("{not json")
    elif damage == "no labels":
        labels.unlink()
    elif damage == "wrong labels":
        np.save(labels, np.ones(100, dtype=np.uint8))
    elif damage == "no meta":
        (entry / "meta.json").unlink()
    again = prepare(path, cache_dir=tmp_path / "cache")
    assert not again["from_cache"] and again["cache_path"] == str(entry)
    assert_same(load_table(path, cache_dir=tmp_path / "cache"), *reference(path))
    assert os.listdir(tmp_path / "cache") == [entry.name]  # no temporary or trash entries left over


def test_failed_cache_write_leaves_nothing(tmp_path, monkeypatch):
    path = write_csv(tmp_path / "t.csv", random_table(50, 3))
    real_save = np.save

    def save_then_fail(file, arr, *args, **kwargs):
        real_save(file, arr, *args, **kwargs)
        if Path(file).name == "labels.npy":
            raise OSError(28, "No space left on device")
    monkeypatch.setattr(np, "save", save_then_fail)
    with pytest.raises(UserError, match="cannot write the cache.*No space left"):
        load_table(path, cache_dir=tmp_path / "cache")
    assert os.listdir(tmp_path / "cache") == []


def test_unwritable_default_location_falls_back(tmp_path, monkeypatch):
    path = write_csv(tmp_path / "t.csv", random_table(30, 3))
    (tmp_path / ".higgs-lora-cache").write_text("a file where the cache directory would go")
    info = prepare(path)
    assert Path(info["cache_path"]).parent == tmp_path / "home-cache" / "higgs-lora"
    assert prepare(path)["from_cache"]


# ------------------------------------------------------------------------------------------ property

def parse_reference(text: str, *, header: bool) -> tuple[np.ndarray, np.ndarray]:
    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    rows = rows[1:] if header else rows
    values = np.array([[float(v) for v in r] for r in rows], dtype=np.float64)
    return values[:, 1:].astype(np.float32), values[:, 0].astype(np.uint8)


finite32 = st.floats(min_value=-3e38, max_value=3e38, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.integers(1, 40), cols=st.integers(2, 7), data=st.data(),
       fmt=st.sampled_from(["%.18e", "%g", "%.3f", "%r", "%d"]), header=st.booleans(), gz=st.booleans(),
       piece=st.integers(16, 600), crlf=st.booleans())
def test_random_tables_read_like_a_plain_parser(tmp_path, monkeypatch, rows, cols, data, fmt, header, gz, piece, crlf):
    monkeypatch.setattr(csvfile, "PIECE_BYTES", piece)
    values = data.draw(st.lists(st.lists(finite32, min_size=cols - 1, max_size=cols - 1), min_size=rows, max_size=rows))
    labels = data.draw(st.lists(st.integers(0, 1), min_size=rows, max_size=rows))

    def show(v):
        if fmt == "%d":
            return str(int(v))
        return repr(float(v)) if fmt == "%r" else fmt % v
    lines = [",".join([str(y)] + [show(v) for v in row]) for y, row in zip(labels, values)]
    if header:
        lines.insert(0, ",".join(["y"] + [f"x{i}" for i in range(cols - 1)]))
    text = ("\r\n" if crlf else "\n").join(lines) + data.draw(st.sampled_from(["", "\n", "\n\n"]))
    path = tmp_path / f"p{rows}-{cols}-{piece}.csv{'.gz' if gz else ''}"
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    table = load_table(path, use_cache=False)
    assert_same(table, *parse_reference(text, header=header))
    assert table.feature_names == ([f"x{i}" for i in range(cols - 1)] if header else [f"f{i}" for i in range(cols - 1)])


def test_iter_chunks_streams_the_same_rows_as_load_table(tmp_path):
    from higgs_lora.data.read import iter_chunks, load_table
    rng = np.random.default_rng(5)
    x = rng.normal(size=(5000, 4))
    y = (rng.random(5000) > 0.5).astype(float)
    path = tmp_path / "t.csv"
    np.savetxt(path, np.column_stack([y, x]), delimiter=",", fmt="%.18e")
    chunks = list(iter_chunks(path, chunk_rows=1000))
    table = load_table(path, use_cache=False)
    assert np.array_equal(np.concatenate([c.features for c in chunks]), table.features)
    assert np.array_equal(np.concatenate([c.labels for c in chunks]), table.labels)
    # a features-only file: every column is a feature, no labels
    np.savetxt(tmp_path / "f.csv", x, delimiter=",", fmt="%.18e")
    feats = list(iter_chunks(tmp_path / "f.csv", label_column=None, chunk_rows=10_000))
    assert len(feats) == 1 and feats[0].labels is None and np.array_equal(feats[0].features, x.astype(np.float32))


def test_iter_chunks_reports_bad_line(tmp_path):
    from higgs_lora.data.read import iter_chunks
    path = tmp_path / "bad.csv"
    path.write_text("1,0.5,0.25\n0,0.1,nan\n")
    with pytest.raises(UserError) as err:
        list(iter_chunks(path))
    assert str(err.value) == f"{path}: line 2, column 3: nan is not a finite number"
