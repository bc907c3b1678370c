"""Parquet files: the schema and the rows, batch by batch (data/parquet.py), as blocks of float64 columns."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from higgs_lora.data.readers.block import Block, Columns


def describe(path: Path, kind: str, tree: str | None) -> Columns:
    from higgs_lora.data.parquetfile import parquet_schema  # PyArrow: only for Parquet files
    names, kinds, types = parquet_schema(path)
    return Columns(names=names, kinds=kinds, types=types)


def blocks(path: Path, layout, *, progress: bool):
    from higgs_lora.data.parquetfile import parquet_tables, used_columns
    position = {c: i for i, c in enumerate(used_columns(layout))}
    for table, first_row in parquet_tables(path, layout, progress=progress):
        yield Block(first=first_row, n=table.num_rows,
                    chunks=lambda c, t=table: arrow_chunks(t.column(position[c])))


def arrow_chunks(column) -> list[np.ndarray]:
    """NumPy views of a float64 Arrow column without nulls, chunk by chunk. Not Arrow's to_numpy: that imports
    pandas when it is installed (~0.4 s and ~60 MB in every process that reads a file)."""
    import pyarrow as pa
    out = []
    for chunk in column.chunks:
        assert chunk.type == pa.float64() and chunk.null_count == 0
        out.append(np.frombuffer(chunk.buffers()[1], dtype=np.float64, count=len(chunk), offset=8 * chunk.offset))
    return out
