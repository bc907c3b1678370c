"""What a data file is, before reading it: gzip, plain CSV, Parquet or ROOT (by content, not by name);
how to open it; a cheap fingerprint of its content. Its columns are the business of its reader
(data/readers/)."""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from higgs_lora.errors import UserError

GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
ROOT_MAGIC = b"root"


def file_kind(path: Path) -> str:
    # By content, not name: a .csv that is really gzip, or a Parquet file without the suffix, still reads.
    with open_binary(path) as f:
        magic = f.read(4)
    if magic[:2] == GZIP_MAGIC:
        return "gzip"
    if magic == PARQUET_MAGIC:
        return "parquet"
    if magic == ROOT_MAGIC:
        return "root"
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
