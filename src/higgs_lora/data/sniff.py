"""What a data file is, before reading it: gzip, plain CSV, Parquet or ROOT (by content, not by name);
how to open it; a cheap fingerprint of its content and the version of the file that the cache checks.
Its columns are the business of its reader (data/readers/)."""
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
