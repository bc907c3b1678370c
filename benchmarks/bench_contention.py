"""Training speed with one competing busy process vs quiet, per OpenMP setting, side by side.

    .venv/bin/python benchmarks/bench_contention.py                    # 3 rounds, ~2 min
    .venv/bin/python benchmarks/bench_contention.py --rounds 5 --seconds 6

Each case is a fresh process (OpenMP reads its settings once) that trains the notebook's network
(batch 4096, Adam, a gather per batch as TensorData does) for --seconds and prints samples/s. The
settings compared:

- today:      what torch does alone (threads = cores, libgomp's default: spin, then sleep)
- higgs-lora: what the CLI sets before torch is imported (machine.configure_threads: usable cores) and
              what fit() does each step (thread_governor: fewer threads while other processes are busy)
- plus the alternatives measured to choose that: PASSIVE (idle threads sleep: the choice before the
  governor), ACTIVE, a short spin, one thread.

"contended" runs with one `while True: pass` process beside it. Rounds interleave every case, and the
table gives medians and each case's ratio to the quiet speed of the same setting and of today's quiet.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, machine_lines, report, verdict  # noqa: E402

CHILD = r"""
import os, sys, time, json
if sys.argv[1] == "higgs-lora":
    from higgs_lora.hardware import machine
    machine.configure_threads()
import torch
from higgs_lora.model.network import ResidualMLP
torch.manual_seed(0)
seconds = float(sys.argv[2])
x = torch.randn(262144, 28); y = (torch.rand(262144) < 0.5).float()
m = ResidualMLP(); opt = torch.optim.Adam(m.parameters(), lr=1e-3, foreach=True)
loss_fn = torch.nn.BCEWithLogitsLoss()
poll = lambda: None
if sys.argv[1] == "higgs-lora":  # as fit() does: the governor looks at the other processes' load each step
    from higgs_lora.hardware.governor import thread_governor
    poll = thread_governor(torch.get_num_threads(), set_threads=torch.set_num_threads,
                           enabled=machine.threads_governed()).poll
def step(i):
    poll()
    idx = torch.randint(0, x.shape[0], (4096,))
    loss = loss_fn(m(x.index_select(0, idx)), y.index_select(0, idx))
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
for i in range(5):
    step(i)
t, n = time.perf_counter(), 0
while time.perf_counter() - t < seconds:
    step(n); n += 1
print(json.dumps(dict(rate=n * 4096 / (time.perf_counter() - t), threads=torch.get_num_threads())))
"""

CASES = {  # name -> (child mode, extra environment)
    "today": ("plain", {}),
    "higgs-lora": ("higgs-lora", {}),
    "PASSIVE": ("plain", {"OMP_WAIT_POLICY": "PASSIVE"}),
    "ACTIVE": ("plain", {"OMP_WAIT_POLICY": "ACTIVE"}),
    "GOMP_SPINCOUNT=10000": ("plain", {"GOMP_SPINCOUNT": "10000"}),
    "1 thread": ("plain", {"OMP_NUM_THREADS": "1"}),
}
OMP = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def measure(mode: str, env: dict, seconds: float) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in OMP}
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(seconds)], env={**clean, **env},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0, help="training time per case")
    p.add_argument("--cases", nargs="+", default=[c for c in CASES if c != "ACTIVE"], choices=list(CASES),
                   help="ACTIVE is left out by default: on a busy machine it crawls (2k samples/s quiet)")
    p.add_argument("--out", type=Path, help="also write the lines here")
    args = p.parse_args()
    lines = machine_lines(machine(), sys.argv)
    lines.append(f"ATEN/oneDNN caps: ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY', '-')} "
                 f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '-')}")
    rates = {(c, s): [] for c in args.cases for s in ("quiet", "contended")}
    threads = {}
    for r in range(args.rounds):
        for case in args.cases:
            mode, env = CASES[case]
            for state in ("quiet", "contended"):
                hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if state == "contended" else None
                try:
                    if hog:
                        time.sleep(0.2)
                    res = measure(mode, env, args.seconds)
                finally:
                    if hog:
                        hog.kill()
                        hog.wait()
                rates[(case, state)].append(res["rate"])
                threads[(case, state)] = res["threads"]   # at the end of the run: the governor may lower it
                print(f"round {r + 1} {case:22s} {state:9s} {res['rate']:>10,.0f} samples/s", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in rates.items()}
    today_quiet = med.get(("today", "quiet"))
    lines.append(f"medians of {args.rounds} interleaved rounds, {args.seconds:g} s of training each:")
    lines.append(f"{'setting':24s}{'threads q/c':>12s}{'quiet':>12s}{'contended':>12s}{'cont/quiet':>12s}"
                 f"{'quiet/today':>13s}")
    for case in args.cases:
        q, c = med[(case, "quiet")], med[(case, "contended")]
        rel = f"{q / today_quiet:>12.2f}x" if today_quiet else ""
        t = f"{threads[(case, 'quiet')]}/{threads[(case, 'contended')]}"
        lines.append(f"{case:24s}{t:>12s}{q:>12,.0f}{c:>12,.0f}{c / q:>11.2f}x{rel}")
    if "higgs-lora" in args.cases and today_quiet:
        q, c = med[("higgs-lora", "quiet")], med[("higgs-lora", "contended")]
        lines.append(f"higgs-lora contended/quiet {c / q:.2f}x (target >= 0.4): {verdict(c / q >= 0.4)}; "
                     f"quiet vs today {q / today_quiet:.2f}x (target >= 0.95): {verdict(q / today_quiet >= 0.95)}")
    report(lines, args.out)


if __name__ == "__main__":
    main()
