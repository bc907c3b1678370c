"""What a reader says about a file (its columns) and what it yields (blocks of column values)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Columns:
    """The columns of a file (ROOT: the branches of one tree), before any is read."""
    names: list[str] | None     # None: a CSV file without a header line
    kinds: tuple[str, ...]      # per column: "float", "int" (integers, booleans), "jagged" or "other"
    tree: str | None = None     # ROOT: the tree these are the branches of
    types: tuple[str, ...] | None = None  # per column the file's own type name, for messages


@dataclass
class Block:
    """Consecutive rows of a file, column by column, as the reader found them (any numeric dtype); read.py
    checks them and casts them into the table."""
    first: int                                  # position of the first row (Layout.unit: line, row or entry)
    n: int
    chunks: Callable[[int], list[np.ndarray]]   # the values of column c, in one or more 1-D pieces
    total: int | None = None                    # rows in the whole file, when the format says (ROOT)
