"""Does `--preset default` keep its time promise on this machine? The default vs the notebook preset as
whole `higgs-lora run` processes, side by side.

    .venv/bin/python benchmarks/bench_default_time.py                      # 2 rounds, built-in data
    .venv/bin/python benchmarks/bench_default_time.py --avx2               # emulated AVX2 on this CPU
    .venv/bin/python benchmarks/bench_default_time.py --rounds 3 --data bench-data/sim_1.1M.csv.gz

Each round runs `higgs-lora run --preset notebook` and `higgs-lora run` (the default preset, precision
auto) one after the other (the order alternates between rounds), and reads back from each run directory
what was chosen (hardware.json: precision, why, epochs) and what it cost (metrics.json: base-training and
total seconds). Target: the default's time <= 1.1x the notebook's, on base training and on the whole run.

--avx2 sets ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 for both: an
AVX2-only CPU (no native bf16) emulated on this one. The precision probe cache is kept in a temporary
folder, so the first default run of the benchmark measures it (as a user's first run does).

--neighbour busy|nice runs one `while True: pass` process beside every run (at full priority, or under
`nice -n 19`), as a shared login node has. The probe cache starts empty there too, so the default run
shows what a user's first run on a busy machine chooses. Target: default base AUC >= the notebook's and
time <= 1.1x in every condition.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, machine_lines, report, verdict  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def run(preset: str, *, work: Path, env: dict, data: str | None, extra: list[str]) -> dict:
    out = work / f"{preset}-{time.monotonic_ns()}"
    cmd = [str(Path(sys.executable).with_name("higgs-lora")), "run", "--out", str(out), "--preset", preset,
           "--no-report", "--no-progress", *(["--data", data] if data else []), *extra]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    config, metrics, hw = (json.loads((out / f).read_text()) for f in ("config.json", "metrics.json", "hardware.json"))
    line = next((x for x in proc.stdout.splitlines() if "precision:" in x), "")
    shutil.rmtree(out, ignore_errors=True)
    return dict(wall=wall, train=metrics["timings_s"]["train"], total=metrics["timings_s"]["total"],
                precision=config["train"]["precision"], epochs=config["train"]["epochs"],
                bf16_speedup=hw.get("bf16_speedup"), line=line.strip(),
                auc=metrics["base"]["roc_auc"], acc=metrics["base"]["accuracy"])


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--avx2", action="store_true", help="emulate an AVX2-only CPU (see the docstring)")
    p.add_argument("--data", help="data file (default: the built-in simulated data)")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more options for both runs")
    p.add_argument("--neighbour", choices=("none", "busy", "nice"), default="none",
                   help="one busy-looping process beside the runs: at full priority (busy) or nice 19 (nice)")
    p.add_argument("--out", type=Path, help="also write the lines here")
    args = p.parse_args()
    neighbour = None
    if args.neighbour != "none":
        spin = [sys.executable, "-c", "while True: pass"]
        neighbour = subprocess.Popen(["nice", "-n", "19", *spin] if args.neighbour == "nice" else spin)
    cache = Path(tempfile.mkdtemp(prefix="bench-default-"))
    env = {**os.environ, **(AVX2 if args.avx2 else {}), "XDG_CACHE_HOME": str(cache)}
    lines = machine_lines(machine(), sys.argv)
    lines.append("emulated AVX2 on this CPU (" + " ".join(f"{k}={v}" for k, v in AVX2.items()) + ")" if args.avx2
                 else "native ISA of this CPU")
    lines.append({"none": "no neighbour started by the benchmark",
                  "busy": "one full-priority busy-looping neighbour process during every run",
                  "nice": "one busy-looping neighbour process at nice 19 during every run"}[args.neighbour])
    res: dict[str, list[dict]] = {"notebook": [], "default": []}
    try:
        for r in range(args.rounds):
            for preset in (("notebook", "default") if r % 2 == 0 else ("default", "notebook")):
                x = run(preset, work=cache, env=env, data=args.data, extra=args.extra)
                res[preset].append(x)
                print(f"round {r + 1} {preset:8s} wall {x['wall']:7.1f} s  train {x['train']:6.1f} s  "
                      f"{x['precision']} x {x['epochs']} epochs  AUC {x['auc']:.4f}  {x['line']}", file=sys.stderr)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        if neighbour is not None:
            neighbour.kill()
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("wall", "train", "total", "auc", "acc")}
           for k, v in res.items()}
    d = res["default"][0]
    lines.append(f"default preset chose: {d['precision']}, {d['epochs']} epochs"
                 + (f" (bf16 speed-up {d['bf16_speedup']:.2f}x)" if d["bf16_speedup"] else "") + f"; {d['line']}")
    lines.append(f"medians of {args.rounds} rounds (seconds):   {'wall':>8s} {'train':>8s} {'run total':>10s}"
                 f" {'base AUC':>9s} {'base acc':>9s}")
    for k in res:
        m = med[k]
        lines.append(f"  {k:30s} {m['wall']:8.1f} {m['train']:8.1f} {m['total']:10.1f} {m['auc']:9.4f} "
                     f"{100 * m['acc']:8.2f}%")
    wall, train = (med["default"][m] / med["notebook"][m] for m in ("wall", "train"))
    lines.append(f"default / notebook: wall {wall:.2f}x, base training {train:.2f}x (target <= 1.1x: "
                 f"{verdict(max(wall, train) <= 1.1)})")
    auc_gain = med["default"]["auc"] - med["notebook"]["auc"]
    lines.append(f"default - notebook base AUC: {auc_gain:+.4f} (target >= 0: {verdict(auc_gain >= 0)})")
    report(lines, args.out)


if __name__ == "__main__":
    main()
