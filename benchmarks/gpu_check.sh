#!/usr/bin/env bash
# One short, prepared check of the CUDA path on a lent GPU machine (issue 24, part 3): train, fine-tune and
# predict throughput on the device (large batch, bf16 autocast, the data already on the GPU), and parity of
# the fp32 CUDA predictions with the CPU's on the same rows (max abs difference).
#
#     bash benchmarks/gpu_check.sh            # prints everything; with $OUT set, also writes $OUT/gpu_check.txt
#     ROWS=4000000 bash benchmarks/gpu_check.sh
#
# Installs nothing unless torch or higgs_lora's dependencies are missing; then only
# `pip install torch==2.13.0 -e .`. Exits 3 with a one-line message where no CUDA device is present (nothing
# is measured then: report the GPU figures as "unmeasured"). Bounded to ~8 minutes: the measurement itself
# runs under `timeout ${LIMIT_S:-420}`, and the optional torch.compile run is skipped once 240 s are spent.
# DRY_RUN=1 runs the same measurement code on the CPU at a tiny size (ROWS=20000 BATCH=4096 EPOCHS=2), to check
# the script where no GPU is lent; its figures are not GPU results.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PY" -c "import torch, numpy, safetensors, higgs_lora" 2>/dev/null; then
    echo "gpu_check: installing torch==2.13.0 and this package (-e .)"
    "$PY" -m pip install -q "torch==2.13.0" -e .
fi
if [[ "${DRY_RUN:-0}" == 1 ]]; then
    echo "gpu_check: DRY RUN on the CPU (tiny sizes): checks the script, measures no GPU"
    export ROWS=${ROWS:-20000} BATCH=${BATCH:-4096} EPOCHS=${EPOCHS:-2}
elif ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device here (torch $("$PY" -c 'import torch; print(torch.__version__)')," \
         "torch.cuda.is_available() is False): nothing measured; the GPU figures stay unmeasured" >&2
    exit 3
fi

exec timeout "${LIMIT_S:-420}" "$PY" - <<'PYEOF'
import dataclasses, os, sys, time
from pathlib import Path

import torch

from higgs_lora.config import ModelConfig, TrainConfig
from higgs_lora.adapters.lora import add_adapters
from higgs_lora.data.sources import TensorData
from higgs_lora.hardware.runtime import predict_logits
from higgs_lora.model.network import ResidualMLP
from higgs_lora.train import fit

T0 = time.perf_counter()
ROWS = int(os.environ.get("ROWS", 8_000_000))
BATCH = int(os.environ.get("BATCH", 65_536))
EPOCHS = int(os.environ.get("EPOCHS", 3))
dev = torch.device("cpu" if os.environ.get("DRY_RUN") == "1" else "cuda")
lines = []


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


def say(s=""):
    print(s, flush=True)
    lines.append(s)


if dev.type == "cuda":
    props = torch.cuda.get_device_properties(dev)
    say(f"device: {props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs; torch "
        f"{torch.__version__}, CUDA {torch.version.cuda}; TF32 matmul allowed: {torch.backends.cuda.matmul.allow_tf32}")
else:
    say(f"device: CPU (DRY RUN: these figures are not GPU results); torch {torch.__version__}")
say(f"rows {ROWS:,} on the device, batch {BATCH:,}, {EPOCHS} epochs per figure (the first is warm-up); "
    f"samples/s of the fastest epoch after the first")

g = torch.Generator().manual_seed(1234)
x_cpu = torch.randn(ROWS, 28, generator=g)
y_cpu = (x_cpu[:, :4].sum(dim=1) + 0.5 * torch.randn(ROWS, generator=g) > 0).float()
x, y = x_cpu.to(dev), y_cpu.to(dev)
cfg = TrainConfig()  # the notebook's recipe (Adam 1e-3; adapters rank 4, scale 0.1), at a large batch here


def rate(kind, precision, *, compile=False):
    torch.manual_seed(cfg.seed)
    model = ResidualMLP.from_config(ModelConfig()).to(dev)
    recipe = cfg.base_recipe()
    if kind == "finetune":
        add_adapters(model, cfg.adapter_config())
        model.to(dev)
        recipe = cfg.finetune_recipe()
    recipe = dataclasses.replace(recipe, epochs=EPOCHS, precision=precision, compile=compile)
    sync()
    result = fit(model, TensorData(x, y, batch_size=BATCH), recipe, progress=False, verbose=False)
    sync()
    seconds = [r["seconds"] for r in result.history]
    best = ROWS / min(seconds[1:])
    say(f"{kind:<9}{precision:<5}{' compiled' if compile else '':<10}{best:>14,.0f} samples/s   "
        f"(epochs {', '.join(f'{s:.2f}s' for s in seconds)})")
    return model, best


say()
base32, r32 = rate("base", "fp32")
_, r16 = rate("base", "bf16")
_, rft = rate("finetune", "bf16")
say(f"fine-tuning / base (bf16, per sample): {rft / r16:.2f}x;  goal on an H100/H200: >= 10M training samples/s -> "
    f"{'PASS' if max(r32, r16) >= 10e6 else 'FAIL'} (best {max(r32, r16):,.0f})")

say()
for precision in ("fp32", "bf16"):
    predict_logits(base32, x[:BATCH], precision=precision)  # warm-up
    best = float("inf")
    for _ in range(3):
        sync()
        t0 = time.perf_counter()
        predict_logits(base32, x, precision=precision)
        sync()
        best = min(best, time.perf_counter() - t0)
    say(f"predict  {precision:<5}{ROWS / best:>24,.0f} rows/s   (rows on the device, predict_logits' default batch, best of 3)")

# Parity: the same trained network on the same rows, fp32 on the GPU against fp32 on the CPU.
n = min(ROWS, 200_000)
cpu_model = ResidualMLP.from_config(ModelConfig())
cpu_model.load_state_dict({k: v.cpu() for k, v in base32.state_dict().items()})
gpu_logits = predict_logits(base32, x[:n]).cpu()
cpu_logits = predict_logits(cpu_model, x_cpu[:n])
d_logit = (gpu_logits - cpu_logits).abs().max().item()
d_prob = (torch.sigmoid(gpu_logits) - torch.sigmoid(cpu_logits)).abs().max().item()
say()
say(f"parity fp32 CUDA vs CPU on {n:,} rows: max |logit diff| {d_logit:.3g}, max |probability diff| {d_prob:.3g} "
    f"(max |logit| {cpu_logits.abs().max().item():.3g})")

if time.perf_counter() - T0 < 240:
    say()
    try:
        rate("base", "bf16", compile=True)
    except Exception as e:  # a compiler failure is a result of this check, not a reason to lose the rest
        say(f"torch.compile run failed: {type(e).__name__}: {str(e)[:300]}")
else:
    say("torch.compile run skipped: over 240 s spent")

say(f"total {time.perf_counter() - T0:.0f} s")
if os.environ.get("OUT"):
    out = Path(os.environ["OUT"]) / "gpu_check.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
PYEOF
