"""The reader registry: one module per file format (csv: CSV and gzip-compressed CSV, parquet, root),
picked by the file's content (sniff.file_kind), never its name. A reader says what columns a file has
(`describe`) and yields them in blocks (`blocks`); data/read.py alone checks the values, gathers the
rows and caches them, so a new format is one module here and one line in READERS."""
from __future__ import annotations

from pathlib import Path

from higgs_lora.data.layout import Layout
from higgs_lora.data.readers import csv, parquet, root
from higgs_lora.data.readers.block import Block, Columns
from higgs_lora.data.readers.select import layout_of
from higgs_lora.data.sniff import file_kind, stat_file
from higgs_lora.errors import UserError

READERS = {"csv": csv, "gzip": csv, "parquet": parquet, "root": root}

__all__ = ["READERS", "Block", "Columns", "read_layout", "blocks", "split_tree"]


def read_layout(path: Path, label_column, *, features=None, weight: str | None = None,
                tree: str | None = None) -> Layout:
    """The layout of `path`: its kind by content, its columns, which are label, features and weight."""
    stat_file(path)
    kind = file_kind(path)
    if tree is not None and kind != "root":
        raise UserError(f"{path}:{tree}: a tree name, but {path} is not a ROOT file")
    cols = READERS[kind].describe(path, kind, tree)
    return layout_of(path, kind, cols, label_column=label_column, features=features, weight=weight)


def blocks(path: Path, layout: Layout, *, progress: bool = False):
    """The rows of `path` in blocks (Block), as its reader yields them."""
    return READERS[layout.kind].blocks(path, layout, progress=progress)


def split_tree(path, tree: str | None = None) -> tuple[Path, str | None]:
    """'FILE.root:TREE' -> (FILE.root, TREE); a path that exists as given is never split."""
    p = str(path)
    if tree is None and ":" in p and not Path(p).exists():
        head, _, name = p.rpartition(":")
        if head and name and "/" not in name:
            return Path(head), name
    return Path(p), tree
