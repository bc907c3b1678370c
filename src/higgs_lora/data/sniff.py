"""What a data file is, before reading it: gzip, plain CSV or Parquet (by content, not by name), its
columns and header, which column is the label; how to open it; a cheap fingerprint of its content."""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path

from higgs_lora.data.layout import Layout
from higgs_lora.errors import UserError

GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"


def read_layout(path: Path, label_column) -> Layout:
    stat_file(path)
    kind = file_kind(path)
    if kind == "parquet":
        from higgs_lora.data.parquet import parquet_schema  # PyArrow: only for Parquet files
        names, n_columns = parquet_schema(path)
    else:
        first = _first_line(path, kind)
        fields = first.rstrip("\r\n").split(",")
        numeric = [is_number(s) for s in fields]
        if all(numeric):
            names = None
        elif not any(numeric):
            names = [s.strip().strip('"') for s in fields]
            names[0] = names[0].lstrip("#").strip()  # HEPMASS writes "# label, f0, ..."
        else:
            bad = numeric.index(False)
            raise UserError(f"{path}: line 1, column {bad + 1}: not a number: {fields[bad]!r} (line 1 has both "
                            "numbers and text, so it is neither a header nor a data row)")
        n_columns = len(fields)
    if n_columns < 2 and label_column is not None:
        raise UserError(f"{path}: line 1 has {n_columns} column; need a label column and at least one feature")
    label = None if label_column is None else _label_index(path, label_column, names, n_columns)
    return Layout(kind=kind, n_columns=n_columns, names=names, label=label)


def _first_line(path: Path, kind: str) -> str:
    from isal.isal_zlib import error as ZlibError

    try:
        with open_binary(path) as raw:
            if kind == "gzip":
                from isal import igzip
                with igzip.open(raw, "rb") as f:
                    line = f.readline(1 << 20)
            else:
                line = raw.readline(1 << 20)
    except EOFError:
        raise UserError(f"{path}: line 1: the gzip stream ends early (file truncated?)") from None
    except (OSError, ZlibError) as e:  # isal's BadGzipFile is an OSError
        raise UserError(f"{path}: not a readable gzip file ({e})") from None
    if not line.strip():
        raise UserError(f"{path}: empty file" if not line else f"{path}: line 1 is empty; expected a header or data")
    return line.decode("utf-8", errors="replace").lstrip("\ufeff")


def _label_index(path: Path, label_column, names: list[str] | None, n_columns: int) -> int:
    if isinstance(label_column, str) and names is not None and label_column in names:
        return names.index(label_column)
    if isinstance(label_column, str) and re.fullmatch(r"-?\d+", label_column.strip()):
        label_column = int(label_column)  # a command line hands indexes over as text
    if isinstance(label_column, str):
        where = f"its columns are {', '.join(names)}" if names else "it has no header line, so give an index"
        raise UserError(f"{path}: no column named {label_column!r}; {where}")
    if not -n_columns <= label_column < n_columns:
        raise UserError(f"{path}: label column {label_column} is out of range: the file has {n_columns} columns "
                        f"(0-based indexes 0..{n_columns - 1}, or negative from the end)")
    return label_column % n_columns


def file_kind(path: Path) -> str:
    # By content, not name: a .csv that is really gzip, or a Parquet file without the suffix, still reads.
    with open_binary(path) as f:
        magic = f.read(4)
    if magic[:2] == GZIP_MAGIC:
        return "gzip"
    if magic == PARQUET_MAGIC:
        return "parquet"
    return "csv"


def is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def fingerprint_file(path: str | os.PathLike) -> str:
    """Size + mtime (ns) + SHA-256 of the first and last MiB, as 32 hex digits; costs two 1 MiB reads.

    Enough in practice: any rewrite of the file (re-download, re-export, truncation, append) changes
    its size or mtime, and the two hashed ends catch a same-size replacement whose mtime was kept
    (cp -p, rsync -t), since headers and tails of different exports differ. Not caught: an edit in
    the middle that keeps the size and then forges the mtime back; delete the cache entry by hand
    after doing that. Hashing the whole 2.6 GB HIGGS file instead would read it all on every load,
    seconds where a reload from the cache takes milliseconds."""
    path = Path(path)
    st = stat_file(path)
    h = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}:".encode())
    with open_binary(path) as f:
        h.update(f.read(1 << 20))
        if st.st_size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read(1 << 20))
    return h.hexdigest()[:32]


def stat_file(path: Path) -> os.stat_result:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    if not path.is_file():
        raise UserError(f"{path}: not a regular file")
    return st


@contextlib.contextmanager
def open_binary(path: Path):
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    with f:
        yield f
