"""The notebook's split: first rows train, last rows test, the middle is 'extra' for adaptation."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from higgs_lora.errors import UserError


@dataclass(frozen=True)
class Split:
    rows: int
    train_rows: int
    test_rows: int
    val_rows: int = 0  # carved from the END of the train rows, so train stays the first rows

    @property
    def extra_rows(self) -> int:
        return self.rows - self.train_rows - self.test_rows

    # Row ranges into the table; slicing a NumPy array with these gives views, never copies.
    @property
    def train(self) -> slice:
        return slice(0, self.train_rows - self.val_rows)

    @property
    def val(self) -> slice:
        return slice(self.train_rows - self.val_rows, self.train_rows)

    @property
    def extra(self) -> slice:
        return slice(self.train_rows, self.rows - self.test_rows)

    @property
    def test(self) -> slice:
        return slice(self.rows - self.test_rows, self.rows)

    def extra_parts(self, val_fraction: float) -> tuple[slice, slice]:
        """(adapter training rows, adapter validation rows): the last `val_fraction` of the extra rows
        validate the fine-tuning, as the base's validation rows are the end of its train rows. The
        validation part is empty where the fraction leaves no row (or no training row)."""
        extra = self.extra
        n = extra.stop - extra.start
        k = int(round(n * val_fraction))
        if k < 1 or k >= n:
            return extra, slice(extra.stop, extra.stop)
        return slice(extra.start, extra.stop - k), slice(extra.stop - k, extra.stop)

    def to_dict(self) -> dict:
        return dict(rows=self.rows, train_rows=self.train_rows - self.val_rows, val_rows=self.val_rows,
                    extra_rows=self.extra_rows, test_rows=self.test_rows)


def split_rows(rows: int, *, train_rows: int | None = None, test_rows: int | None = None,
               val_fraction: float = 0.0, source: str = "data") -> Split:
    """Default sizes are the notebook's fractions of HIGGS (2/11 train, 0.5/11 test):
    exactly 2,000,000 / 8,500,000 / 500,000 on the 11,000,000-row file."""
    if train_rows is None:
        train_rows = (rows * 2 + 5) // 11
    if test_rows is None:
        test_rows = (rows + 11) // 22
    if train_rows < 1 or test_rows < 1:
        raise UserError(f"{source}: train and test need at least one row each (train {train_rows}, test {test_rows})")
    if train_rows + test_rows > rows:
        raise UserError(f"{source}: {train_rows:,} train + {test_rows:,} test rows is more than the {rows:,} rows it holds")
    val_rows = int(round(train_rows * val_fraction))
    if val_fraction > 0 and (val_rows < 1 or val_rows >= train_rows):
        raise UserError(f"{source}: --val-fraction {val_fraction} leaves {val_rows} validation rows of {train_rows}")
    return Split(rows=rows, train_rows=train_rows, test_rows=test_rows, val_rows=val_rows)


def class_balance(labels: np.ndarray) -> dict:
    n = int(labels.shape[0])
    signal = int(np.count_nonzero(labels))
    return dict(rows=n, signal=signal, background=n - signal, signal_fraction=signal / n if n else float("nan"))


def format_balance(name: str, labels: np.ndarray) -> str:
    b = class_balance(labels)
    return (f"{name:<6} {b['rows']:>11,} rows   signal {b['signal']:>10,} ({100 * b['signal_fraction']:.2f}%)   "
            f"background {b['background']:>10,} ({100 * (1 - b['signal_fraction']):.2f}%)")
