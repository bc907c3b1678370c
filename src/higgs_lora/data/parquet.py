"""Parquet files: the schema (every column numeric) and the rows as Arrow tables of float64 columns,
batch by batch, with the row of any missing value."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

from higgs_lora.data.layout import Layout
from higgs_lora.errors import UserError

PARQUET_BATCH_ROWS = 1 << 16


def parquet_schema(path: Path) -> tuple[list[str], int]:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: not a readable Parquet file ({e})") from None
    numeric = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_decimal)
    bad = [f"{f.name} ({f.type})" for f in schema if not any(t(f.type) for t in numeric)]
    if bad:
        raise UserError(f"{path}: non-numeric columns: {', '.join(bad)}; every column must be a number")
    return list(schema.names), len(schema.names)


def parquet_tables(path: Path, layout: Layout, *, progress: bool):
    """Yield (a batch as an Arrow table of float64 columns, 1-based row of its first row)."""
    import pyarrow.parquet as pq
    from tqdm import tqdm

    row = 1
    try:
        pf = pq.ParquetFile(path)
        with tqdm(total=pf.metadata.num_rows, unit="row", unit_scale=True, desc=path.name, disable=not progress,
                  file=sys.stderr) as bar:
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS):
                for c, col in enumerate(batch.columns):
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
