"""Which columns of a file are the label, the features and the weight's factors: from --label-column,
--features (names, glob patterns, @file) and --weight (a product of columns and numbers)."""
from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from higgs_lora.data.layout import Layout
from higgs_lora.data.readers.block import Columns
from higgs_lora.data.sniff import is_number
from higgs_lora.errors import UserError

FLAT = ("float", "int")


def layout_of(path: Path, kind: str, cols: Columns, *, label_column, features=None, weight: str | None = None) -> Layout:
    where = f"{path}:{cols.tree}" if cols.tree else str(path)
    n = len(cols.kinds)
    if n < 2 and label_column is not None and features is None:
        raise UserError(f"{path}: line 1 has {n} column; need a label column and at least one feature")
    label = None if label_column is None else _label_index(path, label_column, cols.names, n)
    w_cols, factor = parse_weight(where, weight, cols) if weight is not None else ((), 1.0)
    if features is not None:
        chosen = tuple(_chosen(where, feature_list(features), cols, exclude={label, *w_cols}))
    elif kind == "root":  # every flat floating-point branch: integers (run numbers, counters) only when named
        chosen = tuple(c for c in range(n) if cols.kinds[c] == "float" and c != label and c not in w_cols)
    else:  # CSV (every field parsed as a float), Parquet: every column but the label and the weight's ...
        rest = [c for c in range(n) if c != label and c not in w_cols]
        bad = [f"{cols.names[c]} ({cols.types[c]})" for c in rest if cols.kinds[c] not in FLAT]
        if bad:
            raise UserError(f"{where}: non-numeric columns: {', '.join(bad)}; every column must be a number "
                            "(or choose the features with --features)")
        floats = [c for c in rest if cols.kinds[c] == "float"]
        # ... but in Parquet, integer columns (event numbers, counters) only when named, as in ROOT
        chosen = None if len(floats) == len(rest) or not floats else tuple(floats)
    if chosen is not None and not chosen:
        raise UserError(f"{where}: no feature columns" + (" (no flat floating-point branch)" if kind == "root" else ""))
    layout = Layout(kind=kind, n_columns=n, names=cols.names, label=label, features=chosen, weight=w_cols,
                    weight_factor=factor, tree=cols.tree)
    for c in ({label} if label is not None else set()) | set(w_cols):
        _check_flat(where, cols, c, "label" if c == label else "weight")
    return layout


def feature_list(features) -> list[str]:
    """--features as a list of names/patterns: 'a,b,jet*' or ['a', '@names.txt'] (one name a line, # comments)."""
    items = features.split(",") if isinstance(features, str) else list(features)
    out = []
    for item in (s.strip() for s in items):
        if item.startswith("@"):
            try:
                lines = Path(item[1:]).read_text().splitlines()
            except OSError as e:
                raise UserError(f"--features {item}: cannot read ({e.strerror or e})") from None
            out += [s.split("#")[0].strip() for s in lines if s.split("#")[0].strip()]
        elif item:
            out.append(item)
    if not out:
        raise UserError("--features: no names given")
    return out


def _chosen(where: str, patterns: list[str], cols: Columns, *, exclude: set):
    names = cols.names
    if names is None:
        raise UserError(f"{where}: the file has no header line, so --features cannot name its columns")
    seen = set()
    for p in patterns:
        if any(ch in p for ch in "*?["):  # a pattern takes the floating-point columns it matches
            hits = [c for c, s in enumerate(names) if fnmatch.fnmatchcase(s, p) and c not in exclude]
            if not hits:
                raise UserError(f"{where}: --features {p!r} matches no {_what(where, cols)}")
            hits = [c for c in hits if cols.kinds[c] == "float"]
        else:
            if p not in names:
                raise UserError(f"{where}: no {_what(where, cols)} named {p!r}; {_listing(cols)}")
            c = names.index(p)
            if c in exclude:
                raise UserError(f"{where}: {p!r} is the label or a weight factor, not a feature")
            _check_flat(where, cols, c, "feature")
            hits = [c]
        for c in hits:
            if c not in seen:
                seen.add(c)
                yield c


def parse_weight(where: str, expr: str, cols: Columns) -> tuple[tuple[int, ...], float]:
    """'genWeight*sf_lep*0.5' -> (indexes of genWeight and sf_lep, 0.5)."""
    factor, columns = 1.0, []
    for token in (t.strip() for t in str(expr).split("*")):
        if not token:
            raise UserError(f"--weight {expr!r}: empty factor; write NAME*NAME*NUMBER")
        if is_number(token):
            factor *= float(token)
        elif cols.names is None or token not in cols.names:
            raise UserError(f"{where}: --weight {expr!r}: no {_what(where, cols)} named {token!r}; {_listing(cols)}")
        else:
            columns.append(cols.names.index(token))
    return tuple(columns), factor


def _check_flat(where: str, cols: Columns, c: int, role: str) -> None:
    kind = cols.kinds[c]
    if kind not in FLAT:
        why = "jagged (a variable-length or fixed-size array per entry)" if kind == "jagged" else "not numeric"
        typ = f" ({cols.types[c]})" if cols.types else ""
        raise UserError(f"{where}: {_what(where, cols)} {cols.names[c]}{typ} is {why}; a {role} must be one number a row")


def _what(where: str, cols: Columns) -> str:
    return "branch" if cols.tree else "column"


def _listing(cols: Columns) -> str:
    names = cols.names or []
    shown = ", ".join(names[:40]) + (f", ... ({len(names)} in all)" if len(names) > 40 else "")
    return f"its {'branches' if cols.tree else 'columns'} are {shown}"


def _label_index(path: Path, label_column, names: list[str] | None, n_columns: int) -> int:
    if isinstance(label_column, str) and names is not None and label_column in names:
        return names.index(label_column)
    if isinstance(label_column, str) and re.fullmatch(r"-?\d+", label_column.strip()):
        label_column = int(label_column)  # a command line hands indexes over as text
    if isinstance(label_column, str):
        where = f"its columns are {', '.join(names)}" if names else "it has no header line, so give an index"
        raise UserError(f"{path}: no column named {label_column!r}; {where}")
    if not -n_columns <= label_column < n_columns:
        raise UserError(f"{path}: label column {label_column} is out of range: the file has {n_columns} columns "
                        f"(0-based indexes 0..{n_columns - 1}, or negative from the end)")
    return label_column % n_columns
