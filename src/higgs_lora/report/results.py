"""What the Python API hands back: small typed results that print well in a terminal and in a notebook
(`_repr_html_`), and turn into plain data (`to_dict()`) or a pandas DataFrame (`to_frame()`, pandas
optional: only that method needs it)."""
from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass, field

from higgs_lora.report.metrics import format_value

METRICS = (("accuracy", "Accuracy"), ("precision", "Precision"), ("recall", "Recall"), ("f1", "F1"),
           ("balanced_accuracy", "Balanced accuracy"), ("specificity", "Specificity"),
           ("sensitivity", "Sensitivity"), ("roc_auc", "ROC AUC"), ("log_loss", "Log-loss"))
HISTORY_COLUMNS = ("phase", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds", "samples_per_s")


def _pandas():
    try:
        import pandas
    except ImportError:
        raise ImportError("to_frame() needs pandas: pip install pandas") from None
    return pandas


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if value == value else "nan"
    return str(value)


def html_table(headers: list[str], rows: list[list[str]], caption: str = "") -> str:
    """An HTML table of text cells, escaped (the notebook display of every result here)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _text_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
             for r in [headers, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@dataclass(frozen=True)
class Metrics:
    """Binary-classification metrics of one model on one part of the data, at threshold 0.5
    (computed by `higgs_lora.report.metrics.binary_metrics`, the same numbers as metrics.json). A metric that is
    undefined (one class in the part, or a zero denominator) is None, shown as "n/a (one class)"/"n/a"."""
    accuracy: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    balanced_accuracy: float | None
    specificity: float | None
    sensitivity: float | None
    roc_auc: float | None
    log_loss: float | None
    confusion: tuple[tuple[int, int], tuple[int, int]]  # ((tn, fp), (fn, tp))
    part: str = "test"
    rows: int = 0
    one_class: bool = False

    @classmethod
    def from_dict(cls, metrics: dict, *, part: str = "test", rows: int | None = None) -> "Metrics":
        confusion = tuple(tuple(int(c) for c in row) for row in metrics["confusion"])
        values = {k: None if metrics[k] is None else float(metrics[k]) for k, _ in METRICS}
        return cls(**values, confusion=confusion, part=part, rows=sum(map(sum, confusion)) if rows is None else rows,
                   one_class=bool(metrics.get("one_class", False)))

    def to_dict(self) -> dict:
        """The metrics as metrics.json holds them (confusion as [[tn, fp], [fn, tp]]), plus part and rows."""
        d = dataclasses.asdict(self)
        d["confusion"] = [list(r) for r in self.confusion]
        return d

    def text(self, key: str) -> str:
        """One metric as tables print it (4 decimals, or "n/a (one class)")."""
        return format_value(getattr(self, key), one_class=self.one_class)

    def to_frame(self):
        """One row per metric: columns `metric`, `value` (None where undefined)."""
        return _pandas().DataFrame({"metric": [k for k, _ in METRICS], "value": [getattr(self, k) for k, _ in METRICS]})

    def __repr__(self) -> str:
        values = "  ".join(f"{k} {format_value(getattr(self, k), one_class=self.one_class)}" for k, _ in METRICS)
        return f"Metrics({self.part}, {self.rows:,} rows: {values})"

    def _repr_html_(self) -> str:
        return html_table(["Metric", "Value"], [[label, self.text(k)] for k, label in METRICS],
                           caption=f"{self.part}, {self.rows:,} rows")


@dataclass(frozen=True)
class History:
    """One row per epoch and phase ("base", then "finetune"): loss, accuracy, validation loss/accuracy,
    learning rate, seconds, samples/s, as in history.jsonl."""
    rows: tuple[dict, ...] = ()
    seconds: float = 0.0

    def __add__(self, other: "History") -> "History":
        return History(rows=(*self.rows, *other.rows), seconds=self.seconds + other.seconds)

    def __len__(self) -> int:
        return len(self.rows)

    def phase(self, name: str) -> "History":
        return History(rows=tuple(r for r in self.rows if r["phase"] == name))

    def to_dict(self) -> dict:
        """Column name -> list of values (what `pandas.DataFrame` takes)."""
        return {c: [r.get(c) for r in self.rows] for c in HISTORY_COLUMNS}

    def to_frame(self):
        return _pandas().DataFrame(self.to_dict())

    def plot(self):
        """The training curves (loss and accuracy per epoch, train and validation) as a matplotlib Figure."""
        from higgs_lora.report.plots import training_figure
        return training_figure(list(self.rows))

    def _table_rows(self) -> list[list[str]]:
        return [[r["phase"], str(r["epoch"]), _fmt(r.get("loss")), _fmt(r.get("accuracy")), _fmt(r.get("val_loss")),
                 _fmt(r.get("val_accuracy")), f"{r.get('lr', float('nan')):.3g}", _fmt(r.get("seconds"), 1)]
                for r in self.rows]

    _HEADERS = ["phase", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"]

    def __repr__(self) -> str:
        if not self.rows:
            return "History(no epochs)"
        return "History\n" + _text_table(self._HEADERS, self._table_rows())

    def _repr_html_(self) -> str:
        return html_table(self._HEADERS, self._table_rows(), caption="training history")


@dataclass(frozen=True)
class Comparison:
    """Metrics of several models side by side (e.g. base and adapted), with the difference of the last
    and the first: the notebook's comparison table."""
    models: dict[str, Metrics] = field(default_factory=dict)

    def __post_init__(self):
        if not self.models:
            raise ValueError("compare() needs at least one model's metrics, e.g. compare(base=..., adapted=...)")

    @property
    def difference(self) -> dict[str, float] | None:
        """last − first, per metric (None with a single model; a metric's None where either is undefined)."""
        if len(self.models) < 2:
            return None
        first, last = list(self.models.values())[0], list(self.models.values())[-1]
        return {k: None if getattr(last, k) is None or getattr(first, k) is None else getattr(last, k) - getattr(first, k)
                for k, _ in METRICS}

    def _headers(self) -> list[str]:
        names = list(self.models)
        return ["Metric", *names] + ([f"{names[-1]} − {names[0]}"] if len(names) > 1 else [])

    def _table_rows(self) -> list[list[str]]:
        diff = self.difference
        return [[label, *(m.text(k) for m in self.models.values())]
                + ([f"{diff[k]:+.4f}" if diff[k] is not None else "n/a"] if diff else []) for k, label in METRICS]

    def to_dict(self) -> dict:
        """{model name: metrics dict, ..., "difference": {metric: last − first}}."""
        d = {name: m.to_dict() for name, m in self.models.items()}
        if self.difference is not None:
            d["difference"] = self.difference
        return d

    def to_frame(self):
        """One row per metric, one column per model (and `difference`)."""
        pd = _pandas()
        columns = {name: [getattr(m, k) for k, _ in METRICS] for name, m in self.models.items()}
        if self.difference is not None:
            columns["difference"] = [self.difference[k] for k, _ in METRICS]
        return pd.DataFrame(columns, index=pd.Index([k for k, _ in METRICS], name="metric"))

    def __repr__(self) -> str:
        return _text_table(self._headers(), self._table_rows())

    def _repr_html_(self) -> str:
        return html_table(self._headers(), self._table_rows(), caption="comparison (test set)")
