"""Shared helpers of the benchmarks: the machine, the reference peer (the notebook as a script), measured
subprocesses, simulated HIGGS-format files and PASS/FAIL lines.

The reference is `notebook_reference.py` in ../shared/reference/ beside the repository (as CI lays it out),
run with the Python of a separate TensorFlow venv (.venv-ref, never a project dependency):

    python3 -m venv .venv-ref && .venv-ref/bin/pip install tensorflow-cpu pandas scikit-learn
"""
from __future__ import annotations

import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from higgs_lora.hardware.machine import cpu_flags, cpu_model

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REFERENCE = ROOT.parent / "shared" / "reference" / "notebook_reference.py"
DEFAULT_REF_PYTHON = ROOT / ".venv-ref" / "bin" / "python"
BENCH_DATA = ROOT / "bench-data"
# The reference prints one of these per epoch, base epochs first, then the fine-tuning epochs.
EPOCH_LINE = re.compile(r"^epoch (\d+) acc (\S+) loss (\S+) time ([\d.]+)s$")


# ---------------------------------------------------------------- machine

def machine() -> dict:
    import torch
    flags = cpu_flags()
    return dict(cpu=cpu_model(), nproc=os.cpu_count(), torch_threads=torch.get_num_threads(),
                avx512="avx512f" in flags, avx512_bf16="avx512_bf16" in flags, amx="amx_tile" in flags,
                torch=torch.__version__, python=platform.python_version(), load_avg=os.getloadavg())


def machine_lines(info: dict, argv: list[str]) -> list[str]:
    isa = ", ".join(k for k in ("avx512", "avx512_bf16", "amx") if info[k]) or "no AVX-512"
    return [f"command: {shlex.join(argv)}",
            f"machine: {info['cpu']}  nproc {info['nproc']}  torch threads {info['torch_threads']}  ({isa})",
            f"software: torch {info['torch']}, Python {info['python']}",
            "load average at start (1/5/15 min): " + " ".join(f"{x:.2f}" for x in info["load_avg"])
            + "  (a shared machine: other jobs may have run during the measurement)"]


# ---------------------------------------------------------------- the reference peer

def add_reference_args(parser) -> None:
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE, metavar="PATH",
                        help=f"the notebook as a script (default: {DEFAULT_REFERENCE})")
    parser.add_argument("--ref-python", type=Path, default=DEFAULT_REF_PYTHON, metavar="PYTHON",
                        help=f"Python of the TensorFlow venv that runs it (default: {DEFAULT_REF_PYTHON})")
    parser.add_argument("--skip-reference", action="store_true", help="measure only higgs-lora")


def check_reference(args) -> None:
    if args.skip_reference:
        return
    if not args.reference.is_file():
        sys.exit(f"reference script not found: {args.reference} (use --reference PATH or --skip-reference)")
    if not args.ref_python.exists():
        sys.exit(f"reference Python not found: {args.ref_python}; create it with\n"
                 f"  python3 -m venv .venv-ref && .venv-ref/bin/pip install tensorflow-cpu pandas scikit-learn\n"
                 f"or pass --ref-python / --skip-reference")


def reference_command(args, data: Path, *, n_train: int, n_test: int, epochs: int, ft_epochs: int,
                      out_model: Path) -> list[str]:
    return [str(args.ref_python), str(args.reference), str(data), str(n_train), str(n_test), str(epochs),
            str(ft_epochs), str(out_model)]


def parse_reference(output: str, *, epochs: int, ft_epochs: int) -> dict:
    """The reference's final JSON line plus its per-epoch seconds, parsed from the epoch lines."""
    result = None
    for line in output.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
    if result is None:
        raise RuntimeError("the reference printed no JSON result line:\n" + output[-3000:])
    seconds = [float(m.group(4)) for m in map(EPOCH_LINE.match, output.splitlines()) if m]
    if len(seconds) != epochs + ft_epochs:
        raise RuntimeError(f"expected {epochs + ft_epochs} epoch lines from the reference, found {len(seconds)}")
    result["base_epoch_lines_s"], result["ft_epoch_lines_s"] = seconds[:epochs], seconds[epochs:]
    return result


def epoch_rates(rows: int, epoch_seconds: list[float]) -> dict:
    """Samples/s over the epochs after the first (which pays for tracing, compilation and warm-up), and of
    the fastest of them: on a shared machine the best epoch is the least disturbed one."""
    if len(epoch_seconds) < 2:
        raise ValueError("steady-state rate needs at least 2 epochs")
    return dict(samples_per_s=rows * (len(epoch_seconds) - 1) / sum(epoch_seconds[1:]),
                best_epoch_samples_per_s=rows / min(epoch_seconds[1:]), epoch_s=list(epoch_seconds))


# ---------------------------------------------------------------- measured subprocesses

@dataclass
class Measured:
    returncode: int
    wall_s: float
    max_rss_bytes: int
    output: str


def run_measured(cmd: list[str], *, env: dict | None = None, echo: bool = True) -> Measured:
    """Run `cmd`, streaming its output to stderr; wall time and peak RSS of it and its descendants.

    os.wait4 returns the rusage of that one child (its own and its reaped children's), so sequential
    runs do not see each other's peaks as getrusage(RUSAGE_CHILDREN) would."""
    if echo:
        print(f"$ {shlex.join(cmd)}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if echo:
            print("    " + line, end="", file=sys.stderr, flush=True)
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
    return Measured(returncode=proc.returncode, wall_s=wall, max_rss_bytes=usage.ru_maxrss * 1024,
                    output="".join(lines))


# ---------------------------------------------------------------- data files

def simulated_file(*, rows: int, seed: int, suffix: str = ".csv.gz") -> Path:
    """bench-data/higgs_sim_v<simulator version>_<rows>_seed<seed><suffix>: `rows` events from higgs_lora's
    simulator in the UCI file's format, written once and reused."""
    from higgs_lora.data.simulate import SIMULATOR_VERSION, simulate, write_higgs_csv
    path = BENCH_DATA / f"higgs_sim_v{SIMULATOR_VERSION}_{rows}_seed{seed}{suffix}"
    if path.exists():
        print(f"data: reusing {path}", file=sys.stderr)
        return path
    t0 = time.perf_counter()
    print(f"data: simulating {rows:,} events (seed {seed}) ...", file=sys.stderr, flush=True)
    features, labels = simulate(rows, seed=seed)
    t1 = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_higgs_csv(path, features, labels)
    print(f"data: simulated in {t1 - t0:.0f}s, wrote {path} ({path.stat().st_size / 1e9:.2f} GB) in "
          f"{time.perf_counter() - t1:.0f}s", file=sys.stderr)
    return path


# ---------------------------------------------------------------- verdicts

def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(lines: list[str], out: Path | None = None, *, runs: list[dict] | None = None) -> None:
    """Print the result lines; with `out`, also write them there (and one JSON line per run after them)."""
    text = "\n".join(lines)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tail = "\n" + "".join(json.dumps(r, default=float) + "\n" for r in runs) if runs else ""
        out.write_text(text + "\n" + tail)


def gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.2f} GB"
