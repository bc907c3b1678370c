"""The layout of a table file: its kind, columns, header names, and which columns are the label, the
features and the weight's factors (what every reader, read.py and the cache agree on)."""
from __future__ import annotations

from dataclasses import dataclass

from higgs_lora.data.table import default_feature_names


@dataclass(frozen=True)
class Layout:
    kind: str                   # "csv", "gzip" (CSV inside), "parquet" or "root"
    n_columns: int
    names: list[str] | None     # header names (all columns, ROOT: branches), or None without a header
    label: int | None           # 0-based index of the label column; None: no label column
    features: tuple[int, ...] | None = None  # the feature columns chosen; None: every column but label and weight
    weight: tuple[int, ...] = ()             # columns whose product (times weight_factor) is the event weight
    weight_factor: float = 1.0
    tree: str | None = None                  # ROOT: the TTree read

    @property
    def header_lines(self) -> int:
        return 1 if self.names is not None and self.kind in ("csv", "gzip") else 0

    @property
    def feature_columns(self) -> list[int]:
        if self.features is not None:
            return list(self.features)
        return [c for c in range(self.n_columns) if c != self.label and c not in self.weight]

    @property
    def unit(self) -> str:
        """What a position in the file is called: a CSV line, a Parquet row (1-based), a ROOT entry (0-based)."""
        return {"parquet": "row", "root": "entry"}.get(self.kind, "line")

    def feature_names(self) -> list[str]:
        n = len(self.feature_columns)
        if self.names is None or all(s.strip().isdigit() for s in self.names):  # pandas' default 0..n names
            return default_feature_names(n)
        return [self.names[c] for c in self.feature_columns]

    def where(self, path) -> str:
        """How messages name the file: 'FILE', or 'FILE:TREE' for ROOT."""
        return f"{path}:{self.tree}" if self.tree else str(path)

    def column_name(self, c: int) -> str:
        """'column 5' or 'column 5 (lepton_eta)', 1-based like an editor shows it; 'branch lepton_eta' for ROOT."""
        if self.kind == "root":
            return f"branch {self.names[c]}"
        return f"column {c + 1}" + (f" ({self.names[c]})" if self.names else "")
