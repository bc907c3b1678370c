"""The documentation runs: the Python blocks of README.md and docs/*.md marked for execution run as
written, and the API reference builds from the docstrings without a warning or a broken reference."""
import importlib.util
import re
import subprocess
import sys
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


def _api_docs():
    spec = importlib.util.spec_from_file_location("api_docs", ROOT / "scripts" / "api_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_checker_catches_broken_references():
    api_docs = _api_docs()
    assert api_docs.broken_references("see `higgs_lora.lora.merge_adapters` and `higgs_lora.model`") == []
    assert api_docs.broken_references("see `higgs_lora.lora.merge_adaptors()`") == ["higgs_lora.lora.merge_adaptors"]
    assert api_docs.broken_references("`higgs_lora.nothing.here`") == ["higgs_lora.nothing.here"]


def test_api_reference_builds_strictly(tmp_path):
    pytest.importorskip("pdoc", reason="the docs extra (pdoc) is not installed")
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "api_docs.py"), "--out", str(tmp_path), "--strict"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    pages = {q.relative_to(tmp_path).as_posix() for q in tmp_path.rglob("*.html")}
    assert {"higgs_lora.html", "higgs_lora/sklearn.html", "higgs_lora/tracking.html"} <= pages
    top = (tmp_path / "higgs_lora.html").read_text()
    assert "merge_adapters" in top  # the lazily imported public names are documented
    assert re.search(r"ResidualMLPClassifier", (tmp_path / "higgs_lora" / "sklearn.html").read_text())


def test_readme_links_the_api_reference():
    readme = (ROOT / "README.md").read_text()
    assert "scripts/api_docs.py" in readme and "docs/python.md" in readme
