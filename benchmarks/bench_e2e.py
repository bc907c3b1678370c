"""End to end: `higgs-lora run --preset notebook` vs the notebook as a script, on the same file.

    .venv/bin/python benchmarks/bench_e2e.py                        # 11,000,000 simulated rows (written once)
    .venv/bin/python benchmarks/bench_e2e.py --rows 1100000         # the CLI's default data size
    .venv/bin/python benchmarks/bench_e2e.py --file HIGGS.csv.gz --json out.json

Without --file it writes (once) bench-data/higgs_sim_v<version>_<rows>_seed<seed>.csv.gz with
higgs_lora's simulator, printed like the UCI file. Each run is its own subprocess: wall time and peak RSS (os.wait4)
of ours in fp32 and in bf16 (`--precision bf16`) and of the reference (TensorFlow, fp32), back to back;
test accuracy of the base and the adapted network of each; our merged-model inference rows/s. Our runs
get a fresh, empty --cache-dir, so they parse the CSV as the reference does. The split is the same for
both: the first train rows, the last test rows (default 2/11 and 0.5/11 of the rows, the notebook's
fractions of HIGGS), the rows between for fine-tuning.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from higgs_lora.data.split import split_rows  # noqa: E402

NOTEBOOK_EPOCHS, NOTEBOOK_FT_EPOCHS = 10, 3
TARGET_WALL_FP32, TARGET_WALL_BF16, TARGET_RSS, TARGET_INFERENCE, TARGET_ACC_POINTS = 1 / 2, 1 / 3, 1 / 2, 3e6, 1.0
HIGGS_LORA = common.ROOT / ".venv" / "bin" / "higgs-lora"


def count_rows(path: Path) -> int:
    from isal import igzip
    with (igzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")) as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 24), b""))


def run_ours(args, data: Path, work: Path, precision: str) -> dict:
    out, cache = work / f"ours-{precision}", work / f"cache-{precision}"
    cmd = [str(args.higgs_lora), "run", "--preset", "notebook", "--data", str(data), "--no-report", "--no-progress",
           "--out", str(out), "--cache-dir", str(cache)]
    cmd += ["--precision", "bf16"] if precision == "bf16" else []
    for flag, value in (("--train-rows", args.train_rows), ("--test-rows", args.test_rows),
                        ("--epochs", args.epochs), ("--ft-epochs", args.ft_epochs)):
        if value is not None:
            cmd += [flag, str(value)]
    m = common.run_measured(cmd)
    if m.returncode != 0:
        sys.exit(f"higgs-lora run ({precision}) failed with exit status {m.returncode}")
    metrics = json.loads((out / "metrics.json").read_text())
    shutil.rmtree(cache, ignore_errors=True)
    return dict(command=cmd, wall_s=m.wall_s, max_rss_bytes=m.max_rss_bytes, n_train=metrics["data"]["train_rows"],
                n_test=metrics["data"]["test_rows"], base=metrics["base"], adapted=metrics["adapted"],
                timings_s=metrics["timings_s"], throughput=metrics["throughput"])


def run_reference(args, data: Path, work: Path, *, n_train: int, n_test: int) -> dict:
    epochs = args.epochs if args.epochs is not None else NOTEBOOK_EPOCHS
    ft_epochs = args.ft_epochs if args.ft_epochs is not None else NOTEBOOK_FT_EPOCHS
    cmd = common.reference_command(args, data, n_train=n_train, n_test=n_test, epochs=epochs, ft_epochs=ft_epochs,
                                   out_model=work / "reference.keras")
    m = common.run_measured(cmd, env={"TF_CPP_MIN_LOG_LEVEL": "2"})
    if m.returncode != 0:
        sys.exit(f"reference failed with exit status {m.returncode}")
    res = common.parse_reference(m.output, epochs=epochs, ft_epochs=ft_epochs)
    return dict(command=cmd, wall_s=m.wall_s, max_rss_bytes=m.max_rss_bytes, n_train=res["n_train"],
                n_test=res["n_test"], base=res["base"], adapted=res["ft"], timings_s=res["times"],
                throughput=dict(train_samples_per_s=res["base_samples_per_s"],
                                finetune_samples_per_s=res["ft_samples_per_s"]))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--file", type=Path, help="an existing HIGGS-format file (.csv or .csv.gz, label first)")
    g.add_argument("--rows", type=int, default=11_000_000,
                   help="rows of the simulated file written to bench-data/ (default: 11,000,000)")
    p.add_argument("--seed", type=int, default=2014, help="simulator seed (default: 2014)")
    p.add_argument("--train-rows", type=int, help="first N rows train (default: 2/11 of the rows)")
    p.add_argument("--test-rows", type=int, help="last N rows test (default: 0.5/11 of the rows)")
    p.add_argument("--epochs", type=int, help=f"base epochs, both sides (default: the notebook's {NOTEBOOK_EPOCHS})")
    p.add_argument("--ft-epochs", type=int, help=f"fine-tuning epochs (default: the notebook's {NOTEBOOK_FT_EPOCHS})")
    p.add_argument("--no-bf16", action="store_true", help="skip our --precision bf16 run")
    p.add_argument("--higgs-lora", type=Path, default=HIGGS_LORA, help=f"the CLI to run (default: {HIGGS_LORA})")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write every number as JSON")
    common.add_reference_args(p)
    args = p.parse_args(argv)
    common.check_reference(args)
    if not args.higgs_lora.exists():
        sys.exit(f"{args.higgs_lora} not found (pip install -e . in .venv, or --higgs-lora PATH)")
    info = common.machine()

    if args.file:
        data, rows = args.file, count_rows(args.file)
    else:
        rows = args.rows
        data = common.simulated_file(rows=rows, seed=args.seed)
    split = split_rows(rows, train_rows=args.train_rows, test_rows=args.test_rows, source=str(data))
    with open(data, "rb") as f:  # into the page cache, so that no run pays for the first read from disk
        while f.read(1 << 24):
            pass

    common.BENCH_DATA.mkdir(exist_ok=True)
    runs = {}
    with tempfile.TemporaryDirectory(prefix="e2e-", dir=common.BENCH_DATA) as tmp:
        work = Path(tmp)
        if not args.skip_reference:
            runs["reference"] = run_reference(args, data, work, n_train=split.train_rows, n_test=split.test_rows)
        runs["ours fp32"] = run_ours(args, data, work, "fp32")
        if not args.no_bf16:
            runs["ours bf16"] = run_ours(args, data, work, "bf16")
    for name, r in runs.items():
        if (r["n_train"], r["n_test"]) != (split.train_rows, split.test_rows):
            sys.exit(f"{name} split {r['n_train']:,}/{r['n_test']:,} differs from {split.train_rows:,}/{split.test_rows:,}")
    info["load_avg_end"] = os.getloadavg()

    lines = common.machine_lines(info, ["benchmarks/bench_e2e.py", *argv])
    lines += ["load average at end: " + " ".join(f"{v:.2f}" for v in info["load_avg_end"]),
              f"data: {data} ({data.stat().st_size / 1e9:.2f} GB), {rows:,} rows: train {split.train_rows:,}, "
              f"extra {split.extra_rows:,}, test {split.test_rows:,}", ""]
    lines += [f"{name}: {' '.join(r['command'])}" for name, r in runs.items()]
    lines += ["", f"{'run':<10} {'wall s':>8} {'peak RSS':>9} {'base acc':>9} {'adapted':>8} {'base AUC':>9} "
              f"{'adapted':>8} {'train/s':>9} {'finetune/s':>10}  phases (s)"]
    for name, r in runs.items():
        auc = "roc_auc" if "roc_auc" in r["base"] else "auc"
        phases = " ".join(f"{k} {v:.1f}" for k, v in r["timings_s"].items() if isinstance(v, (int, float)))
        lines.append(f"{name:<10} {r['wall_s']:>8.1f} {common.gb(r['max_rss_bytes']):>9} {r['base']['accuracy']:>9.4f} "
                     f"{r['adapted']['accuracy']:>8.4f} {r['base'].get(auc, float('nan')):>9.4f} "
                     f"{r['adapted'].get(auc, float('nan')):>8.4f} {r['throughput']['train_samples_per_s'] or 0:>9,.0f} "
                     f"{r['throughput']['finetune_samples_per_s'] or 0:>10,.0f}  {phases}")

    checks = []
    ours = runs["ours fp32"]
    rate = ours["throughput"]["inference_rows_per_s"]
    checks.append(("merged-model inference rows/s (ours fp32)", f"{rate:,.0f}", f">= {TARGET_INFERENCE:,.0f}",
                   rate >= TARGET_INFERENCE))
    if "reference" in runs:
        ref = runs["reference"]
        for name, target in (("ours fp32", TARGET_WALL_FP32), ("ours bf16", TARGET_WALL_BF16)):
            if name in runs:
                v = runs[name]["wall_s"] / ref["wall_s"]
                checks.append((f"wall time {name} / reference", f"{v:.2f}x", f"<= {target:.2f}x", v <= target))
        for name in ("ours fp32", "ours bf16"):
            if name in runs:
                v = runs[name]["max_rss_bytes"] / ref["max_rss_bytes"]
                checks.append((f"peak RSS {name} / reference", f"{v:.2f}x", f"<= {TARGET_RSS:.2f}x", v <= TARGET_RSS))
        for name in ("ours fp32", "ours bf16"):
            for part in ("base", "adapted"):
                if name in runs:
                    d = 100 * (runs[name][part]["accuracy"] - ref[part]["accuracy"])
                    checks.append((f"test accuracy {part}: {name} - reference", f"{d:+.2f} pt",
                                   f"|d| <= {TARGET_ACC_POINTS:.0f} pt", abs(d) <= TARGET_ACC_POINTS))
    lines += ["", f"{'check':<46} {'value':>11} {'target':>14}  verdict"]
    lines += [f"{label:<46} {value:>11} {target:>14}  {common.verdict(ok)}" for label, value, target, ok in checks]
    print("\n".join(lines))

    if args.json:
        report = dict(command=["benchmarks/bench_e2e.py", *argv], machine=info, data=str(data), rows=rows,
                      split=split.to_dict(), runs=runs,
                      checks=[dict(name=n, value=v, target=t, passed=ok) for n, v, t, ok in checks])
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
