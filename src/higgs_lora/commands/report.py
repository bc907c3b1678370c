"""`higgs-lora report`: rebuild the plots and reports of a run directory (no PyTorch needed)."""
from __future__ import annotations

from pathlib import Path

from higgs_lora.errors import UserError


def add_parsers(sub) -> dict:
    p = sub.add_parser("report", help="rebuild plots, report.md and report.html of a run directory")
    p.add_argument("run_dir", metavar="RUN_DIR")
    return {"report": report}


def report(args, argv) -> None:
    from higgs_lora.report import write_report
    run_dir = Path(args.run_dir)
    if not (run_dir / "metrics.json").exists():
        raise UserError(f"{run_dir}: not a run directory (no metrics.json)")
    md, html = write_report(run_dir)
    print(f"wrote {md} and {html}")
