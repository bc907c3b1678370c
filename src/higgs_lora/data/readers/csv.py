"""CSV and gzip-compressed CSV: the header (or none) from the first line; the rows parsed by csvfile.py."""
from __future__ import annotations

from pathlib import Path

from higgs_lora.data.readers.block import Block, Columns
from higgs_lora.data.sniff import is_number, open_binary
from higgs_lora.errors import UserError, quoted

FIRST_LINE_MAX = 64 << 20  # what the layout reads of line 1 (the whole line: long lines are accepted)


def describe(path: Path, kind: str, tree: str | None) -> Columns:
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
    return Columns(names=names, kinds=("float",) * len(fields))  # every field is parsed as a float64


def blocks(path: Path, layout, *, progress: bool):
    from higgs_lora.data.csvfile import csv_tables  # PyArrow: imported when a file is parsed
    from higgs_lora.data.readers.parquet import arrow_chunks
    for table, first_line in csv_tables(path, layout, progress=progress):
        yield Block(first=first_line, n=table.num_rows, chunks=lambda c, t=table: arrow_chunks(t.column(c)))


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
