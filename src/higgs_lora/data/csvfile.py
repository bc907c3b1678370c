"""CSV text to Arrow tables, piece by piece: one thread inflates gzip (ISA-L) and cuts the text into
pieces that end at a line break (gzip_stream.read_ahead) while a pool of threads, one per usable core,
parses them with PyArrow, so both cores work, memory stays bounded and every row's file line is known;
a piece PyArrow rejects is bisected to the line (and column) at fault."""
from __future__ import annotations

import collections
import contextlib
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from higgs_lora.data import gzip_stream
from higgs_lora.data.layout import Layout
from higgs_lora.data.sniff import open_binary
from higgs_lora.errors import UserError, quoted
from higgs_lora.hardware.machine import usable_cores

PIECE_BYTES = 8 << 20           # text handed to one read_csv call


@contextlib.contextmanager
def text_stream(path: Path, kind: str):
    """The CSV bytes of `path` (decompressed when gzip) and the raw file, whose position shows progress."""
    with open_binary(path) as raw:
        if kind == "gzip":
            with gzip_stream.open_gzip(raw) as f:
                yield f, raw
        else:
            yield raw, raw


def csv_tables(path: Path, layout: Layout, *, progress: bool):
    """Yield (parsed piece as an Arrow table of float64 columns, file line of its first row)."""
    from isal.isal_zlib import error as ZlibError
    from tqdm import tqdm

    # Single-threaded read_csv calls in a pool, one per usable core, beside the inflating thread: Arrow's
    # own intra-parse threads measured 25-45% more CPU time for no gain in speed on 2 cores.
    options = _csv_options(layout.n_columns, threads=False)
    workers = max(1, min(8, usable_cores().n))
    line = 1 + layout.header_lines  # file line of the next row
    size = path.stat().st_size
    with text_stream(path, layout.kind) as (stream, raw), \
            ThreadPoolExecutor(workers, thread_name_prefix="csv-parse") as pool, \
            tqdm(total=size, unit="B", unit_scale=True, desc=path.name, disable=not progress, file=sys.stderr) as bar:
        try:
            blank_before = False
            pieces = gzip_stream.read_ahead(_pieces(stream, skip_first_line=bool(layout.header_lines)))
            for (piece, blank_tail), table in _ordered_map(pool, lambda p: _parse(p[0], options), pieces,
                                                           ahead=workers + 1):
                if not piece.size:
                    blank_before |= blank_tail
                    continue
                if blank_before:  # blank lines are only harmless at the end of the file
                    raise UserError(f"{path}: line {line}: empty line")
                blank_before = blank_tail
                if table is None:
                    raise _parse_error(path, piece, first_line=line, layout=layout)
                yield table, line
                line += table.num_rows
                bar.update(raw.tell() - bar.n)
        except EOFError:
            raise UserError(f"{path}: line {_truncation_line(path)}: the gzip stream ends early "
                            "(file truncated, e.g. an interrupted download)") from None
        except (OSError, ZlibError) as e:
            what = "corrupt gzip data" if layout.kind == "gzip" else "read error"
            raise UserError(f"{path}: {what} near line {line} ({e})") from None


def _parse(piece: pa.Buffer, options: dict) -> pa.Table | None:
    """The parsed piece, or None when PyArrow rejects it (_parse_error then finds the line, in order)."""
    if not piece.size:
        return None
    try:
        return _read_csv(piece, options)
    except pa.ArrowInvalid:
        return None


def _read_csv(piece: pa.Buffer, options: dict) -> pa.Table:
    """read_csv of a piece. PyArrow parses in blocks of 1 MiB (larger blocks measured 1.5-2x slower on
    8 MiB pieces) and rejects a line that straddles two blocks ("straddling object straddles two block
    boundaries"): only then is the piece parsed again as one block, so such lines are accepted."""
    try:
        return pacsv.read_csv(pa.BufferReader(piece), **options)
    except pa.ArrowInvalid as e:
        if "straddl" not in str(e):
            raise
    ro = options["read_options"]
    whole = pacsv.ReadOptions(column_names=ro.column_names, use_threads=ro.use_threads,
                              block_size=max(ro.block_size, piece.size + 1))
    return pacsv.read_csv(pa.BufferReader(piece), **dict(options, read_options=whole))


def _ordered_map(pool, fn, items, *, ahead: int):
    """Yield (item, fn(item)) in the order of `items`, with up to `ahead` calls running in `pool`. An
    error raised while taking the next item (a truncated gzip stream) is raised after the items taken
    before it have been yielded, where a sequential loop would have raised it."""
    pending: collections.deque = collections.deque()
    items = iter(items)
    while True:
        try:
            item = next(items)
        except StopIteration:
            break
        except BaseException:
            while pending:
                item, future = pending.popleft()
                yield item, future.result()
            raise
        pending.append((item, pool.submit(fn, item)))
        if len(pending) > ahead:
            item, future = pending.popleft()
            yield item, future.result()
    while pending:
        item, future = pending.popleft()
        yield item, future.result()


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

    Each piece is a slice of a buffer of its own, as several are parsed at once (the stream reads
    straight into it: no copy more than with one reused buffer). Arrow-owned, because read_csv frees
    its input on a worker thread, and freeing a Python buffer there needs the GIL, which aborts the
    process when that races with interpreter exit (seen with pyarrow 26 + torch 2.13)."""
    kept = b""  # an unfinished line carried over to the front of the next buffer
    while True:
        buf = pa.allocate_buffer(max(PIECE_BYTES, 2 * len(kept)))  # doubles for a line longer than a piece
        view = memoryview(buf).cast("B")
        view[:len(kept)] = kept
        got = stream.readinto(view[len(kept):])
        end = len(kept) + got
        cut = end if not got else _rfind_newline(view, end) + 1  # at the end, the last line needs no break
        if got and not cut:
            kept = bytes(view[:end])
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
        kept = bytes(view[cut:end])


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
            _read_csv(piece[starts[lo]:starts[mid]], options)
            lo = mid
        except pa.ArrowInvalid:
            hi = mid
    text = bytes(piece[starts[lo]:starts[lo + 1]]).decode("utf-8", errors="replace").rstrip("\r\n")
    try:
        _read_csv(piece[starts[lo]:starts[lo + 1]], options)
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
        return UserError(f"{where}, {layout.column_name(c)}: not a number: {quoted(fields[c])}")
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
