"""The documentation runs: the Python blocks of README.md and docs/*.md marked for execution run as
written, and the API reference builds from the docstrings without a warning or a broken reference."""
import importlib
import importlib.util
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARK = "<!-- test: run -->"  # on the line before a ```python block: the block runs in CI
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def marked_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, code) of every ```python block right after a MARK line."""
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        if lines[i].strip() == MARK:
            if not lines[i + 1].strip().startswith("```python"):
                raise AssertionError(f"line {i + 1}: {MARK} must come right before a ```python block")
            end = next(j for j in range(i + 2, len(lines)) if lines[j].strip() == "```")
            blocks.append((i + 3, "\n".join(lines[i + 2:end])))
            i = end
        i += 1
    return blocks


def test_marked_blocks_are_found():
    text = f"a\n{MARK}\n```python\nx = 1\ny = 2\n```\n```python\nnot run\n```\n"
    assert marked_blocks(text) == [(4, "x = 1\ny = 2")]
    with pytest.raises(AssertionError, match="must come right before"):
        marked_blocks(f"{MARK}\ntext\n")


EXECUTED = [p for p in DOCS if marked_blocks(p.read_text())]


def test_the_workflow_page_is_executed():
    assert ROOT / "docs" / "python.md" in EXECUTED


@pytest.mark.parametrize("doc", EXECUTED, ids=[p.name for p in EXECUTED])
def test_code_blocks_run_as_written(doc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks write files where a user would: the current directory
    namespace = {"__name__": "__main__"}
    for line, code in marked_blocks(doc.read_text()):
        exec(compile(code, f"{doc.name}, block at line {line}", "exec"), namespace)


PUBLIC_MODULES = ["higgs_lora", "higgs_lora.api", "higgs_lora.report.results", "higgs_lora.sklearn", "higgs_lora.report.tracking",
                  "higgs_lora.config", "higgs_lora.model.network", "higgs_lora.adapters.lora"]
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


def test_reference_checker_catches_broken_references():
    assert broken_references("see `higgs_lora.adapters.lora.merge_adapters` and `higgs_lora.model`") == []
    assert broken_references("see `higgs_lora.adapters.lora.merge_adaptors()`") == ["higgs_lora.adapters.lora.merge_adaptors"]
    assert broken_references("`higgs_lora.nothing.here`") == ["higgs_lora.nothing.here"]


def test_docstrings_and_pages_name_only_what_exists():
    """Every `higgs_lora.…` named in a public docstring or a documentation page can be imported."""
    problems = []
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for obj in [module, *vars(module).values()]:
            if getattr(obj, "__module__", name) == name or obj is module:
                problems += [f"{name}: {ref}" for ref in broken_references(inspect.getdoc(obj) or "")]
    for doc in DOCS:
        problems += [f"{doc.name}: {ref}" for ref in broken_references(doc.read_text())]
    assert not problems, problems


def test_the_site_lists_every_page():
    """mkdocs.yml's nav names every page under docs/ (a page left out is a page nobody finds)."""
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert {p for p in pages if f": {p}" not in nav} == set()


def test_cli_reference_is_generated_from_the_parser():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "docs" / "hooks" / "cli_reference.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    page = hook.on_page_markdown(f"# x\n\n{hook.MARKER}\n", None, None, None)
    from higgs_lora.cli import build_parser
    parser, functions = build_parser()
    for command in functions:
        assert f"## `higgs-lora {command}`" in page
    assert "`--train-rows`" in page and hook.MARKER not in page


def test_readme_is_short_and_links_the_docs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for target in re.findall(r"\]\(([^)#]+)", readme):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target
