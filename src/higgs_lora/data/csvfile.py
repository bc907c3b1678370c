"""CSV text to Arrow tables, piece by piece: isal inflates gzip in its own thread while PyArrow parses
pieces of text that end at a line break, so memory stays bounded and every row's file line is known;
a piece PyArrow rejects is bisected to the line (and column) at fault."""
from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from higgs_lora.data.layout import Layout
from higgs_lora.data.sniff import open_binary
from higgs_lora.errors import UserError

PIECE_BYTES = 8 << 20           # text handed to PyArrow at once (it splits it into 1 MiB blocks per thread)


@contextlib.contextmanager
def text_stream(path: Path, kind: str, *, threaded: bool = True):
    """The CSV bytes of `path` (decompressed when gzip) and the raw file, whose position shows progress."""
    from isal import igzip, igzip_threaded

    with open_binary(path) as raw:
        if kind == "gzip":
            # One extra thread: gzip can only be inflated serially, and it then runs beside the parser.
            # Its queue holds 2 blocks: blocks of half a piece let it inflate a whole piece ahead.
            stream = igzip_threaded.open(raw, "rb", threads=1, block_size=PIECE_BYTES // 2) if threaded else \
                igzip.open(raw, "rb")
            with stream as f:
                yield f, raw
        else:
            yield raw, raw


def csv_tables(path: Path, layout: Layout, *, progress: bool):
    """Yield (parsed piece as an Arrow table of float64 columns, file line of its first row)."""
    from isal.isal_zlib import error as ZlibError
    from tqdm import tqdm

    # Parse with Arrow's thread pool only where cores are left beside this thread and the inflater's:
    # on 2 cores a threaded parse of gzip input measured 25-45% more CPU time for no gain in speed.
    options = _csv_options(layout.n_columns, threads=(os.cpu_count() or 1) > (2 if layout.kind == "gzip" else 1))
    line = 1 + layout.header_lines  # file line of the next row
    size = path.stat().st_size
    with text_stream(path, layout.kind) as (stream, raw), \
            tqdm(total=size, unit="B", unit_scale=True, desc=path.name, disable=not progress, file=sys.stderr) as bar:
        try:
            blank_before = False
            for piece, blank_tail in _pieces(stream, skip_first_line=bool(layout.header_lines)):
                if not piece.size:
                    blank_before |= blank_tail
                    continue
                if blank_before:  # blank lines are only harmless at the end of the file
                    raise UserError(f"{path}: line {line}: empty line")
                blank_before = blank_tail
                try:
                    table = pacsv.read_csv(pa.BufferReader(piece), **options)
                except pa.ArrowInvalid:
                    raise _parse_error(path, piece, first_line=line, layout=layout) from None
                yield table, line
                line += table.num_rows
                bar.update(raw.tell() - bar.n)
        except EOFError:
            raise UserError(f"{path}: line {_truncation_line(path)}: the gzip stream ends early "
                            "(file truncated, e.g. an interrupted download)") from None
        except (OSError, ZlibError) as e:
            what = "corrupt gzip data" if layout.kind == "gzip" else "read error"
            raise UserError(f"{path}: {what} near line {line} ({e})") from None


def _csv_options(n_columns: int, *, threads: bool):
    names = [f"c{i}" for i in range(n_columns)]
    return dict(
        read_options=pacsv.ReadOptions(column_names=names, use_threads=threads, block_size=1 << 20),
        # No quoting: a numeric table has none, and without it every line break ends a row, which
        # is what makes the row -> line arithmetic exact. Empty lines are rows (and errors) for the same reason.
        parse_options=pacsv.ParseOptions(quote_char=False, ignore_empty_lines=False),
        # No null spellings: an empty field or "NA" is an error, never a silent NaN.
        convert_options=pacsv.ConvertOptions(column_types={n: pa.float64() for n in names}, null_values=[],
                                             strings_can_be_null=False),
    )


def _pieces(stream, *, skip_first_line: bool):
    """Yield (text, blank_tail): the stream in pieces of about PIECE_BYTES that end at a line break, the
    header line left out, trailing whitespace cut off; blank_tail says whether blank lines were cut.

    `text` is a slice of one reused Arrow buffer: use it before asking for the next piece. Reused, as
    copying 8 GB of text around costs seconds; Arrow-owned, because a threaded read_csv frees its
    input on a worker thread after returning, and freeing a Python buffer there needs the GIL, which
    aborts the process when that races with interpreter exit (seen with pyarrow 26 + torch 2.13)."""
    buf = pa.allocate_buffer(PIECE_BYTES)
    view = memoryview(buf).cast("B")
    kept = 0  # an unfinished line carried over to the front of the buffer
    while True:
        if kept == len(view):  # a line longer than the buffer
            bigger = pa.allocate_buffer(2 * len(view))
            memoryview(bigger).cast("B")[:kept] = view
            buf, view = bigger, memoryview(bigger).cast("B")
        got = stream.readinto(view[kept:])
        end = kept + got
        cut = end if not got else _rfind_newline(view, end) + 1  # at the end, the last line needs no break
        if got and not cut:
            kept = end
            continue
        start = 0
        if skip_first_line:
            start, skip_first_line = _find_newline(view, cut) + 1 or cut, False
        stop = cut
        while stop > start and view[stop - 1] in b" \t\r\n":
            stop -= 1
        breaks = bytes(view[stop:cut]).count(b"\n")
        if stop > start or breaks:
            yield buf.slice(start, stop - start), breaks > (1 if stop > start else 0)
        if not got:
            return
        view[:end - cut] = bytes(view[cut:end])
        kept = end - cut


def _rfind_newline(view: memoryview, end: int) -> int:
    """Offset of the last line break before `end`, or -1; looks at the tail first (lines are short)."""
    window = 1 << 16
    while True:
        lo = max(0, end - window)
        i = bytes(view[lo:end]).rfind(b"\n")
        if i >= 0 or lo == 0:
            return lo + i if i >= 0 else -1
        window *= 16


def _find_newline(view: memoryview, end: int) -> int:
    i = bytes(view[:min(end, 1 << 20)]).find(b"\n")
    return i if i >= 0 or end <= 1 << 20 else bytes(view[:end]).find(b"\n")


def _parse_error(path: Path, piece: pa.Buffer, *, first_line: int, layout: Layout) -> UserError:
    """Find the first line of `piece` that PyArrow rejects (bisecting on lines, so PyArrow itself is the
    judge of what parses) and say what is wrong with it."""
    options = _csv_options(layout.n_columns, threads=False)
    # Line i is piece[starts[i]:starts[i + 1]]; pieces come without their final line break.
    starts = np.concatenate([[0], np.flatnonzero(np.frombuffer(piece, dtype=np.uint8) == 10) + 1, [piece.size]]).tolist()
    lo, hi = 0, len(starts) - 1  # the first bad line is among lines lo..hi-1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            pacsv.read_csv(pa.BufferReader(piece[starts[lo]:starts[mid]]), **options)
            lo = mid
        except pa.ArrowInvalid:
            hi = mid
    text = bytes(piece[starts[lo]:starts[lo + 1]]).decode("utf-8", errors="replace").rstrip("\r\n")
    try:
        pacsv.read_csv(pa.BufferReader(piece[starts[lo]:starts[lo + 1]]), **options)
        detail = "cannot be parsed"
    except pa.ArrowInvalid as e:
        detail = str(e)
    fields = text.split(",")
    where = f"{path}: line {first_line + lo}"
    if not text.strip():
        return UserError(f"{where}: empty line")
    if len(fields) != layout.n_columns:
        return UserError(f"{where}: expected {layout.n_columns} columns, found {len(fields)}")
    m = re.search(r"column #(\d+)", detail)
    if m:
        c = int(m.group(1))
        return UserError(f"{where}, {layout.column_name(c)}: not a number: {fields[c]!r}")
    return UserError(f"{where}: {detail}")


def _truncation_line(path: Path) -> int:
    """The line in which a truncated gzip file breaks off: inflate all that can be inflated (isal's
    readers drop their last partial block when they hit the end, so do it by hand) and count lines."""
    from isal import isal_zlib

    lines = 0
    with open_binary(path) as f:
        d = isal_zlib.decompressobj(wbits=31)
        while data := f.read(1 << 20):
            while data:
                lines += d.decompress(data).count(b"\n")
                data = d.unused_data if d.eof else b""
                if d.eof:  # a new gzip member follows
                    d = isal_zlib.decompressobj(wbits=31)
    return lines + 1
