"""Commands that compute nothing heavy start without importing PyTorch (issue 11: start-up time)."""
import subprocess
import sys

import pytest

from conftest import cli, write_higgs_csv

# Runs the CLI in a fresh interpreter, then says which heavy modules the command imported.
PROBE = """
import sys
from higgs_lora.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in ("torch", "torchmetrics", "scipy", "pandas", "pyarrow") if m in sys.modules)
print("IMPORTED:" + ",".join(heavy))
sys.exit(code)
"""


def imported(*args) -> list[str]:
    p = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    line = [s for s in p.stdout.splitlines() if s.startswith("IMPORTED:")][-1]
    return [m for m in line[len("IMPORTED:"):].split(",") if m]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("startup") / "run"
    cli("run", "--sim-events", "3000", "--preset", "notebook", "--epochs", "1", "--ft-epochs", "1",
        "--batch-size", "256", "--no-progress", "--out", out)
    return out


def test_prepare_on_a_cached_file_does_not_import_torch(tmp_path):
    data = write_higgs_csv(tmp_path / "h.csv", 500)
    cli("prepare", data)  # parses and caches
    assert imported("prepare", data) == []  # nor PyArrow: nothing is parsed
    assert "loaded from cache" in cli("prepare", data).stdout


def test_help_simulate_and_report_do_not_import_torch(tmp_path, run_dir):
    def heavy(*args):  # PyArrow is fine here; the cached prepare above checks it is not needed there
        return [m for m in imported(*args) if m != "pyarrow"]
    assert heavy("--help") == []
    assert heavy("run", "--help") == []
    assert heavy("simulate", "--events", "1000", "--out", tmp_path / "s.csv") == []
    assert heavy("report", run_dir) == []
    assert (run_dir / "report.html").exists()


def test_training_commands_do_import_torch(tmp_path):
    # The probe can tell: a command that trains imports PyTorch.
    data = write_higgs_csv(tmp_path / "h.csv", 600)
    assert "torch" in imported("train", "--data", data, "--preset", "notebook", "--epochs", "1", "--batch-size", "256",
                               "--train-rows", "400", "--test-rows", "100", "--no-progress", "--out", tmp_path / "t")
