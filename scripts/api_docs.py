"""Build the API reference from the docstrings with pdoc:

    python scripts/api_docs.py --out docs/api        # then open docs/api/index.html
    python scripts/api_docs.py --out /tmp/api --strict

--strict (what CI runs, through tests/test_docs.py) fails on any pdoc warning (a name in __all__ that
does not resolve, a docstring pdoc cannot parse) and on any `higgs_lora.…` reference in a docstring
that names nothing importable. Needs the `docs` extra (pdoc).
"""
from __future__ import annotations

import argparse
import importlib
import re
import sys
import warnings
from pathlib import Path

# The modules a user imports; the others (pipeline, train, data, ...) are the machinery behind them.
PUBLIC_MODULES = ["higgs_lora", "higgs_lora.api", "higgs_lora.results", "higgs_lora.sklearn", "higgs_lora.tracking",
                  "higgs_lora.config", "higgs_lora.model", "higgs_lora.lora"]
REFERENCE = re.compile(r"`(higgs_lora(?:\.[A-Za-z_]\w*)+)(?:\(\))?`")


def resolves(dotted: str) -> bool:
    """Whether `a.b.c` names a module, or an attribute reachable from the longest importable module prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            return False
        return True
    return False


def broken_references(text: str) -> list[str]:
    return [ref for ref in REFERENCE.findall(text or "") if not resolves(ref)]


def public_modules() -> list[str]:
    return [m for m in PUBLIC_MODULES if importlib.util.find_spec(m) is not None]


def build(out: Path) -> list[str]:
    """Write the HTML into `out`; return the problems found (empty: a clean build)."""
    import pdoc
    import pdoc.doc

    import higgs_lora
    higgs_lora.load_all()  # the package's lazy names, so that pdoc finds them in its namespace
    modules = public_modules()
    problems = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*modules, output_directory=out)
        for name in modules:
            module = pdoc.doc.Module.from_name(name)
            for doc in [module, *module.flattened_own_members]:
                problems += [f"{doc.fullname}: broken reference `{ref}`" for ref in broken_references(doc.docstring)]
    problems += [f"pdoc: {w.message}" for w in caught if "pdoc" in w.filename]
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Build the higgs-lora API reference with pdoc.")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--strict", action="store_true", help="exit 1 on any warning or broken reference")
    args = parser.parse_args(argv)
    problems = build(args.out)
    for line in problems:
        print(line, file=sys.stderr)
    print(f"API reference: {args.out / 'index.html'}" + (f" ({len(problems)} problems)" if problems else ""))
    return 1 if problems and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
