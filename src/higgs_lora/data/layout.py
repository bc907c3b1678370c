"""The layout of a table file: its kind, columns, header names and label column, and the names and
positions that follow from them (what every reader and the cache agree on)."""
from __future__ import annotations

from dataclasses import dataclass

from higgs_lora.data.table import default_feature_names


@dataclass(frozen=True)
class Layout:
    kind: str                   # "csv", "gzip" (CSV inside) or "parquet"
    n_columns: int
    names: list[str] | None     # header names (all columns), or None without a header
    label: int | None           # 0-based index of the label column; None: every column is a feature

    @property
    def header_lines(self) -> int:
        return 1 if self.names is not None and self.kind != "parquet" else 0

    @property
    def feature_columns(self) -> list[int]:
        return [c for c in range(self.n_columns) if c != self.label]

    def feature_names(self) -> list[str]:
        n = len(self.feature_columns)
        if self.names is None or all(s.strip().isdigit() for s in self.names):  # pandas' default 0..n names
            return default_feature_names(n)
        return [self.names[c] for c in self.feature_columns]

    def column_name(self, c: int) -> str:
        """'column 5' or 'column 5 (lepton_eta)', 1-based like an editor shows it."""
        return f"column {c + 1}" + (f" ({self.names[c]})" if self.names else "")
