"""Physics samples: one per process (signal, each background), each a file, glob or directory of ROOT,
Parquet or CSV files, assembled into one Table whose rows are split per sample.

SPEC = PATH|GLOB|DIR[:TREE][*FACTOR], e.g. "ttbar/*.root:events*0.83": the files, the TTree to read in
each ROOT file, a scale multiplied into every weight of the sample (cross-section x luminosity / N).
The label is the flag's (--signal 1, --background 0), never a column; `--data` with a glob or a
directory of data files is one sample whose labels come from the label column.

The split is drawn per sample: each sample's rows are permuted (seeded by the split seed and the
sample's name, so reproducible and independent of the other samples) and cut into train / extra / test
by the notebook's fractions (2/11, the rest, 0.5/11) or, with train_rows/test_rows given, by those as
fractions of all rows (each sample gets its share, apportioned so the totals are exactly the numbers
given). The table is then [every sample's train rows | extra rows | test rows], each block shuffled
across samples, so the existing slice-based Split applies and the validation rows carved from the end
of train are a mix of every sample.
"""
from __future__ import annotations

import glob
import hashlib
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from higgs_lora.data.rows import Rows, SampleInfo
from higgs_lora.data.sniff import is_number
from higgs_lora.data.table import Table
from higgs_lora.errors import UserError

SUFFIXES = (".root", ".parquet", ".pq", ".csv", ".csv.gz", ".gz")
SIGNAL, BACKGROUND, FROM_COLUMN = 1, 0, -1


@dataclass(frozen=True)
class SampleSpec:
    text: str                  # as given, for messages
    flag: str                  # "--signal", "--background" or "--data"
    label: int                 # 1, 0, or -1: from the label column
    files: tuple[Path, ...]
    tree: str | None
    scale: float
    name: str


@dataclass(frozen=True)
class SampleSplit:
    """The row counts of the parts of an assembled table (before validation rows are carved from train)."""
    train_rows: int
    test_rows: int
    seed: int          # the split seed they were drawn with


def parse_spec(text: str, *, flag: str = "--signal", label: int = SIGNAL) -> SampleSpec:
    """PATH|GLOB|DIR[:TREE][*FACTOR] -> the files it names (sorted), the tree and the scale."""
    rest, scale = str(text), 1.0
    m = re.fullmatch(r"(.+)\*([^*/:]+)", rest)
    if m and is_number(m.group(2)) and not Path(rest).exists():
        rest, scale = m.group(1), float(m.group(2))
        if not np.isfinite(scale) or scale <= 0:
            raise UserError(f"{flag} {text}: the scale {m.group(2)} must be a positive number")
    tree = None
    head, sep, tail = rest.rpartition(":")
    if sep and head and tail and "/" not in tail and not Path(rest).exists():
        rest, tree = head, tail
    files = _files(rest)
    if not files:
        raise UserError(f"{flag} {text}: matches no file" + (" (an empty directory)" if Path(rest).is_dir() else ""))
    return SampleSpec(text=str(text), flag=flag, label=label, files=tuple(files), tree=tree, scale=scale,
                      name=_name(rest))


def _files(where: str) -> list[Path]:
    p = Path(where)
    if p.is_dir():  # its data files, not hidden ones (a .higgs-lora-cache beside them) nor subdirectories
        return sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                      and f.name.lower().endswith(SUFFIXES))
    if any(ch in where for ch in "*?["):
        return sorted(Path(f) for f in glob.glob(where) if Path(f).is_file())
    return [p] if p.exists() else []


def _name(where: str) -> str:
    """'ttbar' for ttbar/, ttbar/*.root, ttbar.root; wildcards and suffixes dropped."""
    p = Path(where)
    base = p.name
    for s in SUFFIXES:
        if base.lower().endswith(s):
            base = base[:-len(s)]
            break
    base = re.sub(r"[*?\[\]]", "", base).strip("_-. ")
    return base or p.parent.name or str(where)


def load_samples(specs: list[SampleSpec], *, label_column=0, features=None, weight: str | None = None,
                 train_rows: int | None = None, test_rows: int | None = None, seed: int = 1234,
                 cache_dir=None, progress: bool = False) -> tuple[Table, SampleSplit]:
    """One Table of every sample's rows (labels, weights x scale, sample ids, Table.samples) in the order
    described above, and the row counts of its train and test parts."""
    from higgs_lora.data.read import load_table
    flags = {s.flag for s in specs}
    if "--data" in flags and flags != {"--data"}:
        raise UserError("--data and --signal/--background exclude each other: give the labelled table with --data, "
                        "or the samples with --signal and --background")
    if "--data" not in flags and flags != {"--signal", "--background"}:
        missing = "--background" if "--signal" in flags else "--signal"
        raise UserError(f"{missing}: not given; samples need at least one --signal and one --background")
    names = _unique_names(specs)
    blocks, infos, feature_names, fingerprints = [], [], None, []
    for i, (spec, name) in enumerate(zip(specs, names)):
        parts = []
        for f in spec.files:
            t = load_table(f, label_column=label_column if spec.label == FROM_COLUMN else None,
                           label_value=None if spec.label == FROM_COLUMN else spec.label, features=features,
                           weight=scaled_weight(weight, spec.scale), tree=spec.tree, cache_dir=cache_dir,
                           progress=progress)
            if feature_names is None:
                feature_names, first = t.feature_names, t.source
            elif t.feature_names != feature_names:
                raise UserError(f"{t.source}: features {', '.join(t.feature_names)} differ from those of {first} "
                                f"({', '.join(feature_names)}); choose them with --features")
            parts.append(t.all_rows())
            fingerprints.append(t.fingerprint)
        rows = Rows.concat(parts) if len(parts) > 1 else parts[0]
        w = rows.weights
        sum_w = float(np.sum(w, dtype=np.float64)) if w is not None else float(len(rows))
        if sum_w <= 0:
            raise UserError(f"{spec.flag} {spec.text}: the weights of sample {name!r} sum to {sum_w:g}; "
                            "a sample needs a positive total weight")
        blocks.append(Rows(rows.features, rows.labels, w, np.full(len(rows), i, dtype=np.int16)))
        infos.append(SampleInfo(name=name, label=spec.label, files=tuple(str(f) for f in spec.files), scale=spec.scale,
                                tree=spec.tree, extra=dict(rows=len(rows), sum_weights=sum_w)))
    total = sum(len(b) for b in blocks)
    counts = _apportion([len(b) for b in blocks], train_rows, test_rows, total)
    order = {"train": [], "extra": [], "test": []}
    offset = 0
    for b, info, (n_train, n_test) in zip(blocks, infos, counts):
        perm = np.random.default_rng([seed, zlib.crc32(info.name.encode())]).permutation(len(b)) + offset
        order["train"].append(perm[:n_train])
        order["extra"].append(perm[n_train:len(b) - n_test])
        order["test"].append(perm[len(b) - n_test:])
        info.extra.update(train=int(n_train), extra=int(len(b) - n_train - n_test), test=int(n_test))
        offset += len(b)
    everything = Rows.concat(blocks)
    index = []
    for k, part in enumerate(("train", "extra", "test")):
        rows = np.concatenate(order[part])
        index.append(rows[np.random.default_rng([seed, 1 << 20, k]).permutation(len(rows))])
    index = np.concatenate(index)
    out = everything.take(index)
    if out.weights is not None and np.all(out.weights == 1):
        out.weights = None  # all ones: the unweighted path, bit for bit
    split = SampleSplit(train_rows=sum(c[0] for c in counts), test_rows=sum(c[1] for c in counts), seed=seed)
    _check_classes(out, split)
    key = hashlib.sha256("|".join([*fingerprints, *(s.text for s in specs), str(features), str(weight), str(seed),
                                   str(train_rows), str(test_rows)]).encode()).hexdigest()[:32]
    table = Table(features=np.ascontiguousarray(out.features), labels=out.labels, feature_names=feature_names,
                  source="samples: " + "; ".join(f"{s.flag} {s.text}" for s in specs), fingerprint=key,
                  weights=out.weights, sample=out.sample, samples=infos, weight_expr=weight)
    return table, split


def scaled_weight(weight: str | None, scale: float) -> str | None:
    """The weight expression of a sample's files: the sample's scale as one more factor, so that the whole
    product is evaluated in float64 and rounded to float32 once."""
    if scale == 1.0:
        return weight
    return repr(scale) if weight is None else f"{weight}*{scale!r}"


def _unique_names(specs) -> list[str]:
    names, seen = [], {}
    for s in specs:
        seen[s.name] = seen.get(s.name, 0) + 1
        names.append(s.name if seen[s.name] == 1 else f"{s.name}#{seen[s.name]}")
    return names


def _apportion(sizes: list[int], train_rows, test_rows, total: int) -> list[tuple[int, int]]:
    """(train, test) rows per sample: the notebook's fractions of each, or the totals given shared out in
    proportion to the samples' sizes (largest remainders, so they add up exactly)."""
    def share(n_total, default):
        if n_total is None:
            return [default(n) for n in sizes]
        if not 1 <= n_total <= total:
            raise UserError(f"samples: {n_total:,} rows asked for, but the samples hold {total:,}")
        exact = [n_total * n / total for n in sizes]
        got = [int(e) for e in exact]
        for i in sorted(range(len(sizes)), key=lambda i: got[i] - exact[i])[:n_total - sum(got)]:
            got[i] += 1
        return got
    train = share(train_rows, lambda n: (n * 2 + 5) // 11)
    test = share(test_rows, lambda n: (n + 11) // 22)
    for n, a, b in zip(sizes, train, test):
        if a + b > n:
            raise UserError(f"samples: a sample of {n:,} rows cannot give {a:,} train + {b:,} test rows")
    return list(zip(train, test))


def _check_classes(rows: Rows, split: SampleSplit) -> None:
    parts = {"train": slice(0, split.train_rows), "test": slice(len(rows) - split.test_rows, len(rows))}
    for part, s in parts.items():
        y = rows.labels[s]
        for label, what in ((1, "signal"), (0, "background")):
            if not np.any(y == label):
                raise UserError(f"samples: no {what} rows in the {part} part ({len(y):,} rows); "
                                "give more rows or a larger --train-rows/--test-rows")


def balance_lines(table: Table, parts: dict[str, slice]) -> list[str]:
    """The class balance per sample and per class, raw and weighted (Σw, N_eff = (Σw)²/Σw²), per part."""
    w = table.weights
    lines = []
    for part, s in parts.items():
        if s.stop <= s.start:
            continue
        lines.append(f"{part}:")
        labels, sample = np.asarray(table.labels[s]), table.sample[s] if table.sample is not None else None
        ws = np.asarray(w[s], dtype=np.float64) if w is not None else np.ones(s.stop - s.start)
        groups = [(info.name, sample == i) for i, info in enumerate(table.samples)] if sample is not None else []
        groups += [("signal", labels == 1), ("background", labels == 0)]
        for name, mask in groups:
            n, sw, sw2 = int(mask.sum()), float(ws[mask].sum()), float((ws[mask] ** 2).sum())
            neff = sw * sw / sw2 if sw2 > 0 else 0.0
            lines.append(f"  {name:<14} {n:>11,} rows   Σw {sw:>14.6g}   N_eff {neff:>12,.1f}")
    return lines
