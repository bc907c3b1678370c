"""ROOT files (TTrees), through uproot: the optional extra `higgs-lora[root]`. The tree is the one in the
file unless named (FILE.root:TREE); branches are read in steps with tree.iterate(library="np"), only
those a layout uses, straight into NumPy arrays (no awkward arrays on the way)."""
from __future__ import annotations

import sys
import zlib
from pathlib import Path

from higgs_lora.data.readers.block import Block, Columns
from higgs_lora.errors import UserError

STEP_SIZE = "64 MB"         # uncompressed bytes per step of tree.iterate
TREE_CLASSES = ("TTree", "TNtuple", "TNtupleD")


def uproot_module(path):
    try:
        import uproot
    except ImportError:
        raise UserError(f"{path}: a ROOT file; install the ROOT extra: pip install 'higgs-lora[root]'") from None
    return uproot


def _errors(uproot) -> tuple:
    """What uproot raises on a truncated, damaged or foreign file."""
    return (OSError, ValueError, KeyError, IndexError, EOFError, zlib.error, uproot.deserialization.DeserializationError)


def _said(e: Exception) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"  # uproot's messages span lines


def describe(path: Path, kind: str, tree: str | None) -> Columns:
    uproot = uproot_module(path)
    try:
        with uproot.open(path) as f:
            name = _tree_name(path, f, tree)
            t = f[name]
            names = list(t.keys(recursive=False))
            kinds = tuple(_kind(uproot, t[b]) for b in names)
            types = tuple(str(t[b].typename) for b in names)
    except _errors(uproot) as e:
        raise UserError(f"{path}: not a readable ROOT file ({_said(e)})") from None
    return Columns(names=names, kinds=kinds, tree=name, types=types)


def _tree_name(path: Path, f, tree: str | None) -> str:
    trees = sorted({k.split(";")[0] for k, c in f.classnames(recursive=True).items() if c in TREE_CLASSES})
    if tree is not None:
        if tree not in trees:
            others = f"its trees are {', '.join(trees)}" if trees else "it holds no TTree"
            raise UserError(f"{path}: no tree named {tree!r}; {others}")
        return tree
    if not trees:
        classes = sorted(set(f.classnames(recursive=True).values()))
        raise UserError(f"{path}: no TTree in the file (it holds {', '.join(classes) or 'nothing'})")
    if len(trees) > 1:
        raise UserError(f"{path}: {len(trees)} trees ({', '.join(trees)}); name one: {path}:TREE")
    return trees[0]


def _kind(uproot, branch) -> str:
    interp = branch.interpretation
    if isinstance(interp, uproot.interpretation.numerical.AsDtype):
        if interp.inner_shape != ():
            return "jagged"  # a fixed-size array per entry: not one number either
        return "float" if interp.to_dtype.kind == "f" else "int" if interp.to_dtype.kind in "iub" else "other"
    if isinstance(interp, (uproot.interpretation.jagged.AsJagged, uproot.interpretation.objects.AsObjects)):
        return "jagged"
    return "other"


def blocks(path: Path, layout, *, progress: bool):
    from tqdm import tqdm
    uproot = uproot_module(path)
    used = sorted(set(layout.feature_columns) | set(layout.weight)
                  | ({layout.label} if layout.label is not None else set()))
    names = [layout.names[c] for c in used]
    entry = 0
    try:
        with uproot.open(path) as f:
            tree = f[layout.tree]
            with tqdm(total=tree.num_entries, unit="row", unit_scale=True, desc=path.name, disable=not progress,
                      file=sys.stderr) as bar:
                for arrays in tree.iterate(filter_name=names, step_size=STEP_SIZE, library="np"):
                    n = len(arrays[names[0]])
                    yield Block(first=entry, n=n, chunks=lambda c, a=arrays: [a[layout.names[c]]],
                                total=tree.num_entries)
                    entry += n
                    bar.update(n)
    except _errors(uproot) as e:
        raise UserError(f"{layout.where(path)}: entry {entry}: cannot read the ROOT file (truncated or damaged?) "
                        f"({_said(e)})") from None
