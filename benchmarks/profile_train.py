"""Where a training step's time goes: GEMMs, element-wise work, casts, the optimizer, batch gathering, Python.

    .venv/bin/python benchmarks/profile_train.py                        # writes benchmarks/results/profile_<cpu>.txt
    .venv/bin/python benchmarks/profile_train.py --steps 20 --no-compile --out -   # quicker, print only

The default network (28 -> 128, 2 residual blocks, -> 64 -> 1) at the notebook preset (batch 4096, Adam 1e-3;
adapters rank 4, scale 0.1 on every dense layer, Adam 5e-4), in fp32 and bf16, for base training and adapter
fine-tuning. The step is driven as train/loop.py drives it: a row gather from the epoch's permutation
(TensorData.batches), the forward under runtime.autocast, `.float()` logits, BCEWithLogitsLoss,
zero_grad(set_to_none=True), backward, the optimizer of train/optim.py, the on-device running sums.

Two views of the same step:
  - wall clock, phase by phase: perf_counter between the phases. On a CPU every op returns when its work is
    done, so these timers need no synchronisation (and add none); the fastest quarter of the steps is kept
    (the least disturbed on a shared machine), with the median step beside it.
  - torch.profiler: self CPU time of each aten op, grouped by name: GEMM (mm/addmm/bmm), optimizer
    (_foreach_*/_fused_*), data (index_select/gather/index), casts (copy_/_to_copy), element-wise (every
    other aten op); Python/other = the unprofiled wall step minus all of those (interpreter, autograd
    bookkeeping, dispatch).

Candidates measured side by side in the same run (measurements, not changes to the code): fused and for-loop
Adam against the current foreach Adam; batches taken as contiguous slices of a copy shuffled once per epoch
against random row gathers; torch.compile of the model as `fit(compile=True)` does (compile time against the
per-step gain); and, where the CPU has AVX-512, the whole wall-clock part again in a subprocess with
ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 (an AVX2 CPU emulated on this one).
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import torch  # noqa: E402

from higgs_lora.config import ModelConfig, TrainConfig  # noqa: E402
from higgs_lora.adapters.lora import add_adapters, param_groups  # noqa: E402
from higgs_lora.config import AdapterConfig  # noqa: E402
from higgs_lora.model.network import ResidualMLP  # noqa: E402
from higgs_lora.hardware.runtime import autocast  # noqa: E402
from higgs_lora.train.optim import make_optimizer  # noqa: E402
from higgs_lora.data.sources import epoch_permutation  # noqa: E402

NOTEBOOK = TrainConfig()  # the notebook preset's recipe
CPU = torch.device("cpu")
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
PHASES = ("data", "forward", "backward", "optimizer", "other")
GEMM_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm"}
DATA_OPS = {"aten::index_select", "aten::gather", "aten::index", "aten::take", "aten::randperm"}
CAST_OPS = {"aten::copy_", "aten::_to_copy"}


def network(kind: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = ResidualMLP.from_config(ModelConfig())
    if kind == "finetune":
        add_adapters(model, AdapterConfig(rank=NOTEBOOK.rank, scale=NOTEBOOK.scale, targets=NOTEBOOK.targets))
    return model


def optimizer(model, kind: str, variant: str):
    lr = NOTEBOOK.lr if kind == "base" else NOTEBOOK.ft_lr
    if variant == "current":  # what fit() builds
        return make_optimizer(param_groups(model), name="adam", lr=lr, weight_decay=0.0, device=CPU)
    params = [p for p in model.parameters() if p.requires_grad]
    flags = {"fused": dict(fused=True), "for-loop": dict(foreach=False)}[variant]
    return torch.optim.Adam(params, lr=lr, **flags)


class Batches:
    """The rows of a step: `gather` as TensorData.batches (index_select of a permutation slice), or `blocks`
    (one index_select of the whole part per epoch, then contiguous slices of that copy)."""

    def __init__(self, x, y, batch: int, how: str):
        self.x, self.y, self.batch, self.how = x, y, batch, how
        self.steps = x.shape[0] // batch
        self.epoch = -1

    def get(self, step: int):
        epoch, s = divmod(step, self.steps)
        lo, hi = s * self.batch, (s + 1) * self.batch
        if epoch != self.epoch:
            self.epoch = epoch
            self.perm = epoch_permutation(self.x.shape[0], seed=1234, phase="base", epoch=epoch, device=CPU)
            if self.how == "blocks":  # the epoch's shuffle, paid on the first step of the epoch
                self.xs, self.ys = self.x.index_select(0, self.perm), self.y.index_select(0, self.perm)
        if self.how == "blocks":
            return self.xs[lo:hi], self.ys[lo:hi]
        idx = self.perm[lo:hi]
        return self.x.index_select(0, idx), self.y.index_select(0, idx)


def run_steps(model, opt, batches: Batches, precision: str, steps: int, *, warmup: int = 3, timed: bool = True,
              train_model=None):
    """Per-phase seconds of each measured step (after `warmup` steps), as loop.fit runs a step."""
    train_model = model if train_model is None else train_model
    loss_fn = torch.nn.BCEWithLogitsLoss()
    loss_sum = torch.zeros((), dtype=torch.float64)
    correct = torch.zeros((), dtype=torch.int64)
    clock = time.perf_counter
    rows, first_step_s = [], None
    model.train()
    for step in range(warmup + steps):
        t0 = clock()
        xb, yb = batches.get(step)
        t1 = clock()
        with autocast(CPU, precision):
            logits = train_model(xb).float()
        loss = loss_fn(logits, yb)
        t2 = clock()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = clock()
        opt.step()
        t4 = clock()
        loss_sum += loss.detach() * yb.shape[0]
        correct += ((logits.detach() > 0) == (yb > 0.5)).sum()
        t5 = clock()
        if step == 0:
            first_step_s = t5 - t0
        if step >= warmup and timed:
            rows.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4))
    return rows, first_step_s


def summary(rows) -> dict:
    """ms of each phase in the fastest quarter of the steps (on a shared machine the least disturbed ones: the
    other jobs only ever add time), the whole step as the mean of those steps' sums, and the median step."""
    fast = sorted(rows, key=sum)[:max(1, len(rows) // 4)]
    out = {name: 1e3 * statistics.fmean(r[i] for r in fast) for i, name in enumerate(PHASES)}
    out["step"] = 1e3 * statistics.fmean(sum(r) for r in fast)
    out["median_step"] = 1e3 * statistics.median(sum(r) for r in rows)
    return out


def profile_breakdown(model, opt, batches, precision: str, steps: int) -> dict:
    """Self CPU ms per step of each op group, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile
    run_steps(model, opt, batches, precision, 2, warmup=0, timed=False)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        run_steps(model, opt, batches, precision, steps, warmup=0, timed=False)
        wall_ms = (time.perf_counter() - t0) * 1e3 / steps
    groups = dict(GEMM=0.0, optimizer=0.0, data=0.0, casts=0.0, elementwise=0.0)
    top: dict[str, float] = {}
    for ev in prof.key_averages():
        name = ev.key
        if not name.startswith("aten::"):
            continue  # record_function ranges (Optimizer.step, autograd nodes): their own time is Python/other
        ms = ev.self_cpu_time_total / 1e3 / steps
        if name in GEMM_OPS:
            g = "GEMM"
        elif name.startswith(("aten::_foreach", "aten::_fused")):
            g = "optimizer"
        elif name in DATA_OPS:
            g = "data"
        elif name in CAST_OPS:
            g = "casts"
        else:
            g = "elementwise"
        groups[g] += ms
        top[name] = top.get(name, 0.0) + ms
    groups["top_ops"] = sorted(top.items(), key=lambda kv: -kv[1])[:8]
    groups["wall"] = wall_ms
    return groups


def measure(kind: str, precision: str, steps: int, x, y, *, optimizer_variant="current", how="gather",
            compiled=False) -> dict:
    model = network(kind)
    opt = optimizer(model, kind, optimizer_variant)
    train_model = torch.compile(model) if compiled else None
    t0 = time.perf_counter()
    rows, first = run_steps(model, opt, Batches(x, y, NOTEBOOK.batch_size, how), precision, steps,
                            train_model=train_model)
    res = summary(rows)
    res["first_step_s"] = first
    res["wall_s"] = time.perf_counter() - t0
    return res


def share(ms: float, wall: float) -> str:
    return f"{ms:>5.2f}/{100 * ms / wall:>2.0f}%"


def fmt_phases(label: str, r: dict) -> str:
    sps = NOTEBOOK.batch_size / r["step"] * 1e3
    return (f"{label:<30}" + "".join(f"{r[p]:>10.2f}" for p in PHASES)
            + f"{r['step']:>9.2f}{sps:>11,.0f}{r['median_step']:>9.2f}")


PHASE_HEADER = f"{'':<30}" + "".join(f"{p:>10}" for p in PHASES) + f"{'step':>9}{'samples/s':>11}{'median':>9}"


def wall_part(args, x, y) -> list[str]:
    """The wall-clock table and the candidates that need no compiler: what the AVX2 subprocess reruns."""
    lines = [f"wall clock, ms per step: mean of the fastest quarter of {args.steps} steps (batch {NOTEBOOK.batch_size}); "
             "'median' = the median step, for how disturbed the run was:",
             PHASE_HEADER]
    for kind in ("base", "finetune"):
        for precision in ("fp32", "bf16"):
            cur = measure(kind, precision, args.steps, x, y)
            lines.append(fmt_phases(f"{kind} {precision} (current)", cur))
            for variant in ("fused", "for-loop"):
                r = measure(kind, precision, args.steps, x, y, optimizer_variant=variant)
                lines.append(fmt_phases(f"  Adam {variant}", r) + f"   optimizer {r['optimizer'] / cur['optimizer']:.2f}x")
            r = measure(kind, precision, args.steps, x, y, how="blocks")
            lines.append(fmt_phases("  contiguous shuffled blocks", r) + f"   data {r['data'] / cur['data']:.2f}x")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=4096 * 40, help="rows of the in-memory part (default 163,840)")
    p.add_argument("--steps", type=int, default=30, help="measured steps per configuration (default 30)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile candidate")
    p.add_argument("--no-avx2", action="store_true", help="skip the emulated-AVX2 subprocess")
    p.add_argument("--wall-only", action="store_true", help=argparse.SUPPRESS)  # the AVX2 subprocess
    p.add_argument("--out", default=None, help="result file (default benchmarks/results/profile_<cpu>.txt; '-': none)")
    args = p.parse_args()

    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.rows, 28, generator=g)
    y = (torch.rand(args.rows, generator=g) < 0.5).float()
    if args.wall_only:
        print("\n".join(wall_part(args, x, y)))
        return

    info = common.machine()
    lines = common.machine_lines(info, sys.argv)
    lines.append(f"network: {ModelConfig()}  batch {NOTEBOOK.batch_size}; {args.rows:,} random standardized rows")
    lines += wall_part(args, x, y)

    lines += ["", "torch.profiler, self CPU ms per step by op group (Python/other = the profiled step's wall - the rest; it "
              "includes the profiler's own cost):",
              f"{'':<18}{'GEMM':>8}{'elemwise':>9}{'casts':>8}{'optim':>8}{'data':>8}{'Py/other':>9}{'step':>8}   top ops"]
    for kind in ("base", "finetune"):
        for precision in ("fp32", "bf16"):
            model = network(kind)
            opt = optimizer(model, kind, "current")
            batches = Batches(x, y, NOTEBOOK.batch_size, "gather")
            groups = profile_breakdown(model, opt, batches, precision, max(5, args.steps // 2))
            wall = groups["wall"]
            accounted = sum(groups[k] for k in ("GEMM", "elementwise", "casts", "optimizer", "data"))
            top = ", ".join(f"{n[6:]} {ms:.2f}" for n, ms in groups["top_ops"][:5])
            lines.append(f"{kind + ' ' + precision:<14}" + " ".join(
                share(groups[k], wall) for k in ("GEMM", "elementwise", "casts", "optimizer", "data"))
                + f" {share(max(0.0, wall - accounted), wall)} {wall:>6.2f}   {top}")
    lines.append("  (each cell: ms per step / share of the profiled step; mean over all profiled steps, not the fastest)")

    if not args.no_compile:
        lines += ["", "torch.compile of the model (as fit(compile=True)); first step = compilation + one step:"]
        for precision in ("fp32", "bf16"):
            eager = measure("base", precision, args.steps, x, y)
            try:
                comp = measure("base", precision, args.steps, x, y, compiled=True)
            except Exception as e:  # noqa: BLE001 - a compiler failure is a result here, not a crash
                lines.append(f"  base {precision}: torch.compile failed: {type(e).__name__}: {str(e)[:200]}")
                continue
            gain_ms = eager["step"] - comp["step"]
            steps_to_pay = comp["first_step_s"] * 1e3 / gain_ms if gain_ms > 0 else float("inf")
            lines.append(f"  base {precision}: eager {eager['step']:.2f} ms/step, compiled {comp['step']:.2f} ms/step "
                         f"({eager['step'] / comp['step']:.2f}x), compile {comp['first_step_s']:.1f} s "
                         f"= {steps_to_pay:,.0f} steps of the gain (an epoch of 2M rows is {2_000_000 // NOTEBOOK.batch_size} steps)")

    if not args.no_avx2 and info["avx512"]:
        env = {**os.environ, **AVX2}
        cmd = [sys.executable, __file__, "--wall-only", "--rows", str(args.rows), "--steps", str(args.steps)]
        lines += ["", "EMULATED AVX2 on this CPU (" + " ".join(f"{k}={v}" for k, v in AVX2.items()) + "), same table:"]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        lines += proc.stdout.splitlines() if proc.returncode == 0 else [f"  failed: {proc.stderr[-500:]}"]
    elif not args.no_avx2:
        lines.append("no AVX-512 on this CPU: the table above is already AVX2 (or less); no emulation run")

    lines.append("load average at end (1/5/15 min): " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    short = re.sub(r"[^a-z0-9]+", "-", info["cpu"].lower()).strip("-")
    out = None if args.out == "-" else Path(args.out or common.ROOT / "benchmarks" / "results" / f"profile_{short}.txt")
    common.report(lines, out)


if __name__ == "__main__":
    main()
