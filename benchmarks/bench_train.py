"""Training speed: higgs_lora.train.fit vs the notebook's TensorFlow loop, against the machine's peak.

    .venv/bin/python benchmarks/bench_train.py                       # 1,000,000 rows, 3 epochs
    .venv/bin/python benchmarks/bench_train.py --rows 300000         # a quicker run
    .venv/bin/python benchmarks/bench_train.py --skip-reference --compile --json out.json

One run prints, side by side: peak float32 and bf16 matmul rates (torch, n^3 square, best of several);
FLOPs per training sample of the notebook's network and of adapter fine-tuning; our steady-state
samples/s (epochs after the first) for base training in fp32 and bf16 and for adapter fine-tuning in
both LoRA formulations, on in-memory standardized random rows; the reference's steady-state samples/s
(the notebook as a script, run in its TensorFlow venv on a simulated HIGGS-format CSV of the same
number of train rows and of extra rows); the ratios with their targets, and the fraction of peak.

FLOPs per sample (matmuls only; biases, activations, loss and optimizer are O(parameters) or
O(width) per sample and left out). A dense layer in -> out:
    forward                 2·in·out
    weight gradient         2·in·out      (not for frozen weights)
    input gradient          2·in·out      (not for the first layer: the data need no gradient)
An adapter h = x·A, y = h·B of rank r on that layer, A [in, r], B [r, out]:
    forward                 2·r·(in + out)
    gradients of A and B    2·r·in + 4·r·out   (dB = hᵀ·dy, dh = dy·Bᵀ, dA = xᵀ·dh)
    input gradient          2·r·in              (dx = dh·Aᵀ; not for the first layer)
Base training = Σ forward + weight gradients + input gradients. Fine-tuning (minimal, the "factored"
form) = Σ forward + input gradients of the frozen layers, plus the adapters' three terms; the "reform"
form (x·(W + s·A·B), the notebook's) also forms the full gradient of W + s·A·B, so it does the base's
work and more: its "% of peak" counts only the minimal FLOPs.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import torch  # noqa: E402

from higgs_lora.config import ModelConfig  # noqa: E402
from higgs_lora.adapters.lora import add_adapters  # noqa: E402
from higgs_lora.config import AdapterConfig  # noqa: E402
from higgs_lora.model.network import ResidualMLP  # noqa: E402
from higgs_lora.config import Recipe  # noqa: E402
from higgs_lora.data.sources import TensorData
from higgs_lora.train import fit  # noqa: E402

# The notebook's recipe.
BATCH, LR, FT_LR, RANK, SCALE, SEED = 4096, 1e-3, 5e-4, 4, 0.1, 1234
TARGET_BASE_FP32, TARGET_BASE_BF16, TARGET_FT_OVER_BASE = 1.25, 3.0, 1.3


def dense_shapes(config: ModelConfig) -> list[tuple[int, int]]:
    """(in, out) of every dense layer, in forward order."""
    return ([(config.n_features, config.width)] + [(config.width, config.width)] * (2 * config.n_blocks)
            + [(config.width, config.head_width), (config.head_width, 1)])


def train_flops(config: ModelConfig) -> int:
    shapes = dense_shapes(config)
    return sum(2 * i * o * (2 if k == 0 else 3) for k, (i, o) in enumerate(shapes))


def finetune_flops(config: ModelConfig, *, rank: int) -> int:
    total = 0
    for k, (i, o) in enumerate(dense_shapes(config)):
        dx = 0 if k == 0 else 1  # the input gradient, needed past the first layer
        total += (1 + dx) * 2 * i * o + 2 * rank * (i + o) + (2 * rank * i + 4 * rank * o) + dx * 2 * rank * i
    return total


def counted_flops(model: torch.nn.Module, *, batch: int, n_features: int) -> float:
    """FLOPs per sample of one forward + backward, as torch.utils.flop_counter counts them: the check
    of the formulas above (it sees what autograd really computes, frozen weights included)."""
    from torch.utils.flop_counter import FlopCounterMode
    x = torch.randn(batch, n_features)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


def peak_matmul(dtype: torch.dtype, *, n: int, repeats: int) -> float:
    """Best FLOP/s of an n x n x n torch.matmul."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(dtype) for _ in range(2))
    torch.matmul(a, b)  # warm-up: thread pool, kernel selection
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def random_rows(rows: int, n_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardized random features and labels that depend on them (a learnable, balanced-ish task)."""
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(rows, n_features, generator=g)
    y = (x[:, :4].sum(dim=1) + 0.5 * torch.randn(rows, generator=g) > 0).float()
    return x, y


def measure_ours(args, x, y) -> dict:
    """Steady-state samples/s of every configuration; each is its own fit() on a fresh model."""
    rates = {}

    def run(name, model, *, epochs, **kw):
        print(f"ours: {name} ...", file=sys.stderr, flush=True)
        with contextlib.redirect_stdout(sys.stderr):  # fit's epoch lines are progress, not the report
            result = fit(model, TensorData(x, y, batch_size=BATCH),
                         Recipe(epochs=epochs, seed=SEED, compile=args.compile, **kw), progress=False)
        seconds = [r["seconds"] for r in result.history]
        rates[f"ours {name}"] = common.epoch_rates(x.shape[0], seconds)
        print(f"ours: {name}: epochs {', '.join(f'{s:.2f}s' for s in seconds)} -> "
              f"{rates[f'ours {name}']['samples_per_s']:,.0f} samples/s", file=sys.stderr, flush=True)

    torch.manual_seed(SEED)
    base = ResidualMLP()
    run("base fp32", base, epochs=args.epochs, lr=LR, precision="fp32")
    run("base bf16", ResidualMLP(), epochs=args.epochs, lr=LR, precision="bf16")
    for formulation, precision in (("factored", "fp32"), ("reform", "fp32"), ("factored", "bf16")):
        model = add_adapters(copy.deepcopy(base), AdapterConfig(rank=RANK, scale=SCALE, formulation=formulation))
        run(f"finetune {formulation} {precision}", model, epochs=args.ft_epochs, lr=FT_LR, precision=precision, phase="finetune")
    return rates


def measure_reference(args) -> dict:
    n_test = 10_000
    data = common.simulated_file(rows=2 * args.rows + n_test, seed=SEED, suffix=".csv")
    with tempfile.TemporaryDirectory(prefix="bench-train-ref-") as tmp:
        cmd = common.reference_command(args, data, n_train=args.rows, n_test=n_test, epochs=args.epochs,
                                       ft_epochs=args.ft_epochs, out_model=Path(tmp) / "model.keras")
        m = common.run_measured(cmd, env={"TF_CPP_MIN_LOG_LEVEL": "2"})
    if m.returncode != 0:
        sys.exit(f"reference failed with exit status {m.returncode}")
    res = common.parse_reference(m.output, epochs=args.epochs, ft_epochs=args.ft_epochs)
    return {"reference base": common.epoch_rates(res["n_train"], res["base_epoch_lines_s"]),
            "reference finetune": common.epoch_rates(res["n_extra"], res["ft_epoch_lines_s"]),
            "reference command": cmd}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="training rows (default: 1,000,000)")
    p.add_argument("--epochs", type=int, default=3, help="base epochs, ours and the reference's; the first is "
                                                         "warm-up (default: 3)")
    p.add_argument("--ft-epochs", type=int, default=2, help="fine-tuning epochs (default: 2)")
    p.add_argument("--compile", action="store_true", help="fit(..., compile=True) for our runs")
    p.add_argument("--threads", type=int, help="torch.set_num_threads for our runs (default: torch's choice)")
    p.add_argument("--matmul-n", type=int, default=4096, help="size of the square peak matmul (default: 4096)")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write every number as JSON")
    common.add_reference_args(p)
    args = p.parse_args(argv)
    if args.epochs < 2 or args.ft_epochs < 2 or args.rows < BATCH:
        p.error(f"need --epochs >= 2, --ft-epochs >= 2 (the first is excluded) and --rows >= {BATCH}")
    common.check_reference(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = common.machine()
    config = ModelConfig()

    print("peak matmul ...", file=sys.stderr, flush=True)
    peak = dict(fp32=peak_matmul(torch.float32, n=args.matmul_n, repeats=4),
                bf16=peak_matmul(torch.bfloat16, n=args.matmul_n, repeats=4))
    flops = dict(base=train_flops(config), finetune=finetune_flops(config, rank=RANK))
    probe = ResidualMLP()
    adapted = {f: add_adapters(copy.deepcopy(probe), AdapterConfig(rank=RANK, scale=SCALE, formulation=f))
               for f in ("factored", "reform")}
    counted = dict(base=counted_flops(probe, batch=BATCH, n_features=config.n_features),
                   **{f"finetune {f}": counted_flops(m, batch=BATCH, n_features=config.n_features)
                      for f, m in adapted.items()})
    x, y = random_rows(args.rows, config.n_features)
    ours = measure_ours(args, x, y)
    del x, y
    ref = None if args.skip_reference else measure_reference(args)
    info["load_avg_end"] = os.getloadavg()

    lines = common.machine_lines(info, ["benchmarks/bench_train.py", *argv])
    lines += ["load average at end: " + " ".join(f"{v:.2f}" for v in info["load_avg_end"]),
              f"data: ours {args.rows:,} in-memory standardized random rows x {config.n_features}, batch {BATCH}, "
              f"{args.epochs} base / {args.ft_epochs} fine-tuning epochs, first excluded; compile={args.compile}",
              f"peak matmul {args.matmul_n}^3 (torch, best of 4): fp32 {peak['fp32'] / 1e9:.1f} GFLOP/s, "
              f"bf16 {peak['bf16'] / 1e9:.1f} GFLOP/s",
              f"FLOPs per sample (formula in the script's docstring): base training {flops['base']:,}; "
              f"adapter fine-tuning (rank {RANK}, minimal) {flops['finetune']:,}",
              "  torch.utils.flop_counter per sample (batch {:,}): ".format(BATCH)
              + ", ".join(f"{k} {v:,.0f}" for k, v in counted.items()),
              "", f"{'configuration':<30} {'samples/s':>10} {'best ep/s':>10} {'GFLOP/s':>8} {'% of peak':>9}  "
              "epochs (s)"]
    rates = dict(ours) | ({k: v for k, v in ref.items() if k != "reference command"} if ref else {})
    for name, r in rates.items():
        kind = "finetune" if "finetune" in name else "base"
        precision = "bf16" if name.endswith("bf16") else "fp32"  # the reference is TensorFlow fp32
        achieved = flops[kind] * r["samples_per_s"]
        r["fraction_of_peak"] = achieved / peak[precision]
        lines.append(f"{name:<30} {r['samples_per_s']:>10,.0f} {r['best_epoch_samples_per_s']:>10,.0f} "
                     f"{achieved / 1e9:>8.2f} {100 * r['fraction_of_peak']:>8.1f}%  "
                     + " ".join(f"{s:.2f}" for s in r["epoch_s"]))

    specs = []  # (label, numerator, denominator, target)
    if ref is not None:
        specs += [("base fp32: ours / reference", "ours base fp32", "reference base", TARGET_BASE_FP32),
                  ("base bf16: ours / reference", "ours base bf16", "reference base", TARGET_BASE_BF16)]
        specs += [(f"finetune {v}: ours / reference", f"ours finetune {v}", "reference finetune", None)
                  for v in ("factored fp32", "reform fp32", "factored bf16")]
    specs += [("finetune/base fp32, ours, factored", "ours finetune factored fp32", "ours base fp32", TARGET_FT_OVER_BASE),
              ("finetune/base fp32, ours, reform", "ours finetune reform fp32", "ours base fp32", TARGET_FT_OVER_BASE),
              ("finetune/base bf16, ours, factored", "ours finetune factored bf16", "ours base bf16", None)]
    ratios = [dict(name=label, value=rates[a]["samples_per_s"] / rates[b]["samples_per_s"],
                   best_epochs=rates[a]["best_epoch_samples_per_s"] / rates[b]["best_epoch_samples_per_s"],
                   target=target) for label, a, b, target in specs]
    lines += ["", f"{'ratio':<42} {'steady':>7} {'best ep':>7} {'target':>8}  verdict (steady, best epochs)"]
    for r in ratios:
        r["passed"] = None if r["target"] is None else r["value"] >= r["target"]
        verdicts = (f"{'>= ' + format(r['target'], '.2f')}x  {common.verdict(r['passed'])}, "
                    f"{common.verdict(r['best_epochs'] >= r['target'])}" if r["target"] else f"{'-':>8}")
        lines.append(f"{r['name']:<42} {r['value']:>6.2f}x {r['best_epochs']:>6.2f}x {verdicts}")
    print("\n".join(lines))

    if args.json:
        report = dict(command=["benchmarks/bench_train.py", *argv], machine=info, rows=args.rows, epochs=args.epochs,
                      ft_epochs=args.ft_epochs, batch=BATCH, compile=args.compile, peak_flops=peak,
                      flops_per_sample=flops, counted_flops_per_sample=counted, rates=rates,
                      reference_command=ref and ref["reference command"], ratios=ratios)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
