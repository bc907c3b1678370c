"""Parquet files: the schema (names and kinds of the columns) and the rows as Arrow tables of float64
columns, batch by batch, only the columns a layout uses, with the row of any missing value."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

from higgs_lora.data.layout import Layout
from higgs_lora.errors import UserError

PARQUET_BATCH_ROWS = 1 << 16


def parquet_schema(path: Path) -> tuple[list[str], tuple[str, ...], tuple[str, ...]]:
    """Column names, kinds ("float", "int" for integers/booleans/decimals, "other") and type names."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: not a readable Parquet file ({e})") from None
    t = pa.types
    kinds = tuple("float" if t.is_floating(f.type) else
                  "int" if t.is_integer(f.type) or t.is_boolean(f.type) or t.is_decimal(f.type) else "other"
                  for f in schema)
    return list(schema.names), kinds, tuple(str(f.type) for f in schema)


def used_columns(layout: Layout) -> list[int]:
    """The columns a layout reads: label, features, weight factors, in file order."""
    used = set(layout.feature_columns) | set(layout.weight) | ({layout.label} if layout.label is not None else set())
    return sorted(used)


def parquet_tables(path: Path, layout: Layout, *, progress: bool):
    """Yield (a batch as an Arrow table of float64 columns, 1-based row of its first row); column c of the
    file is the table's column used_columns(layout).index(c)."""
    import pyarrow.parquet as pq
    from tqdm import tqdm

    used = used_columns(layout)
    row = 1
    try:
        pf = pq.ParquetFile(path)
        with tqdm(total=pf.metadata.num_rows, unit="row", unit_scale=True, desc=path.name, disable=not progress,
                  file=sys.stderr) as bar:
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[layout.names[c] for c in used]):
                for c, col in zip(used, batch.columns):
                    if col.null_count:
                        r = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
                        raise UserError(f"{path}: row {row + r}, {layout.column_name(c)}: missing value")
                table = pa.Table.from_batches([batch]).cast(
                    pa.schema([(n, pa.float64()) for n in batch.schema.names]))
                yield table, row
                row += batch.num_rows
                bar.update(batch.num_rows)
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: not a readable Parquet file ({e})") from None
