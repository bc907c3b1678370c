"""What a data file is, before reading it: gzip, plain CSV or Parquet (by content, not by name), its
columns and header, which column is the label; how to open it; a cheap fingerprint of its content and
the version of the file that the cache checks."""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path

from higgs_lora.data.layout import Layout
from higgs_lora.errors import UserError, quoted

GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
FIRST_LINE_MAX = 64 << 20  # what the layout reads of line 1 (the whole line: long lines are accepted)


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
            raise UserError(f"{path}: line 1, column {bad + 1}: not a number: {quoted(fields[bad])} (line 1 has both "
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
                    line = f.readline(FIRST_LINE_MAX + 1)
            else:
                line = raw.readline(FIRST_LINE_MAX + 1)
    except EOFError:
        raise UserError(f"{path}: line 1: the gzip stream ends early (file truncated?)") from None
    except (OSError, ZlibError) as e:  # isal's BadGzipFile is an OSError
        raise UserError(f"{path}: not a readable gzip file ({e})") from None
    if not line.strip():
        raise UserError(f"{path}: empty file" if not line else f"{path}: line 1 is empty; expected a header or data")
    if len(line) > FIRST_LINE_MAX:
        raise UserError(f"{path}: line 1 is longer than {FIRST_LINE_MAX:,} bytes; a table's header or row is never "
                        "that long: is this the right file?")
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


SAMPLE_END = 1 << 20      # both ends are hashed whole: headers, tails, appends, truncations
SAMPLE_BLOCKS = 64        # plus this many blocks spread evenly over the part in between
SAMPLE_BLOCK = 4096


def fingerprint_file(path: str | os.PathLike) -> str:
    """What the file holds, cheaply: size + mtime (ns) + SHA-256 of a content sample, as 32 hex digits.
    The data's identity (a run's --resume, a model's split check compare it), so it survives a copy,
    a rename or a chmod. The sample is the first and last MiB (the whole file up to 2 MiB) and
    SAMPLE_BLOCKS blocks of 4 KiB spread evenly over the rest: ~2.3 MiB read whatever the size.
    A same-size edit between the sampled blocks with the mtime set back is not seen here; the cache
    also checks file_version, which sees it."""
    path = Path(path)
    st = stat_file(path)
    h = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}:".encode())
    with open_binary(path) as f:
        if st.st_size <= 2 * SAMPLE_END:
            h.update(f.read())
        else:
            h.update(f.read(SAMPLE_END))
            middle = st.st_size - 2 * SAMPLE_END
            for i in range(SAMPLE_BLOCKS):
                f.seek(SAMPLE_END + i * middle // SAMPLE_BLOCKS)
                h.update(f.read(SAMPLE_BLOCK))
            f.seek(-SAMPLE_END, os.SEEK_END)
            h.update(f.read(SAMPLE_END))
    return h.hexdigest()[:32]


def file_version(path: str | os.PathLike, fingerprint: str | None = None) -> str:
    """This very file, unchanged: the content fingerprint plus device, inode and change time (st_ctime_ns).
    The kernel sets the change time on every write, and no user can set it back (touch -r, cp -p and
    rsync -t restore the mtime only), so any in-place edit anywhere in the file changes the version.
    What the read cache checks. A copy, rename or chmod changes it too: that costs one re-read.
    `fingerprint`: the file's fingerprint_file, when the caller has it already."""
    path = Path(path)
    st = stat_file(path)
    return f"{fingerprint or fingerprint_file(path)}:{st.st_dev}:{st.st_ino}:{st.st_ctime_ns}"


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
