"""Issue 24's figures beside this machine's limits, measured in one run, with the issue's targets.

    .venv/bin/python benchmarks/bench_limits.py                  # writes benchmarks/results/limits_<cpu>.txt
    .venv/bin/python benchmarks/bench_limits.py --rows 245760 --epochs 4 --out -

Limits (a GEMM probe at the network's own shapes, batch 2048, torch's default thread count): the seven dense
layers 28x128, 4 x 128x128, 128x64, 64x1, each as its forward GEMM (X·Wᵀ) and the two backward ones (dY·W and
dYᵀ·X), in fp32 and in bf16, best of several rounds. FLOPs (GEMMs only; biases, activations, loss and
optimizer are O(width) per sample and left out):
    inference  2·Σ in·out            = 154,752 FLOP per row      (the issue's ≈ 156 k)
    training   3 × that (forward, input and weight gradients) = 464,256 FLOP per sample (≈ 464 k)
so the training limit is the probe's samples/s over all 21 GEMMs and the inference limit over the 7 forward ones.

Figures, in the same run:
  - base training samples/s in fp32 and bf16, and adapter fine-tuning (rank 4, scale 0.1, every dense
    layer: the notebook preset's) per sample relative to fp32 base training: higgs_lora.train.fit on
    in-memory standardized rows at the notebook recipe (batch 4096, Adam), the fastest epoch after the first;
  - `higgs-lora predict --precision fp32` of the 1.1M-row file after `higgs-lora prepare` cached it (the
    whole process, and the rows/s it prints itself) and with an empty cache; whether the two output files
    are equal byte for byte; the startup of such a process (importing PyTorch and higgs_lora's pipeline);
  - the first read (`higgs-lora prepare` into an empty cache) against `pandas.read_csv` as whole processes;
    ISA-L streaming inflate alone; PyArrow's CSV parse of the inflated bytes on one thread with the reader's
    own options (1 MiB blocks, pieces of csvfile.PIECE_BYTES), and polars' on one and on all threads where
    polars is installed; the issue's bound max(inflate, parse on one core / (cores - 1)). Inflate and parse
    are also given as the CPU time of their thread, which other jobs on a shared machine inflate less.
  - every whole-process figure is the best of --repeats runs (interleaved: pandas, prepare, predict cached,
    predict uncached, startup, then again), the least disturbed one on a shared machine.
The file: bench-data/higgs_1.1M.csv.gz (`higgs-lora simulate --events 1100000 --seed 1`), written when missing.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import torch  # noqa: E402

from higgs_lora.config import ModelConfig, TrainConfig  # noqa: E402
from higgs_lora.adapters.lora import add_adapters  # noqa: E402
from higgs_lora.config import AdapterConfig  # noqa: E402
from higgs_lora.model.network import ResidualMLP  # noqa: E402
from higgs_lora.data.sources import TensorData
from higgs_lora.train import fit  # noqa: E402

NOTEBOOK = TrainConfig()
PROBE_BATCH = 2048
HIGGS_LORA = [sys.executable, "-m", "higgs_lora"]
FILE_ROWS = 1_100_000
# The targets.
T_FP32, T_BF16, T_FT, T_PREDICT, T_PANDAS, T_BOUND = 0.70, 0.50, 1.1, 0.70, 4.0, 0.9


def layer_shapes(config: ModelConfig) -> list[tuple[int, int]]:
    return ([(config.n_features, config.width)] + [(config.width, config.width)] * (2 * config.n_blocks)
            + [(config.width, config.head_width), (config.head_width, 1)])


def flops_per_row(config: ModelConfig) -> int:
    return 2 * sum(i * o for i, o in layer_shapes(config))


def gemm_probe(dtype: torch.dtype, *, rounds: int, reps: int) -> dict:
    """Best seconds per 2048 rows of the forward GEMMs and of all three GEMMs of every layer."""
    g = torch.Generator().manual_seed(0)
    layers = [(torch.randn(PROBE_BATCH, i, generator=g).to(dtype), torch.randn(o, i, generator=g).to(dtype),
               torch.randn(PROBE_BATCH, o, generator=g).to(dtype)) for i, o in layer_shapes(ModelConfig())]

    def forward():
        for x, w, _ in layers:
            torch.mm(x, w.t())

    def train():
        for x, w, dy in layers:
            torch.mm(x, w.t())
            torch.mm(dy, w)       # input gradient
            torch.mm(dy.t(), x)   # weight gradient

    def square():  # the headline shape, 2048x128x128
        x, w, _ = layers[1]
        torch.mm(x, w.t())

    best = {}
    for name, fn in (("forward", forward), ("train", train), ("square", square)):
        fn()
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            times.append((time.perf_counter() - t0) / reps)
        best[name] = min(times)
    return best


def probe_rates(probe: dict) -> dict:
    per_row = flops_per_row(ModelConfig())
    return dict(train_samples_per_s=PROBE_BATCH / probe["train"], infer_rows_per_s=PROBE_BATCH / probe["forward"],
                train_gflops=3 * per_row * PROBE_BATCH / probe["train"] / 1e9,
                square_gflops=2 * PROBE_BATCH * 128 * 128 / probe["square"] / 1e9)


def training_rate(kind: str, precision: str, x, y, epochs: int) -> dict:
    torch.manual_seed(NOTEBOOK.seed)
    model = ResidualMLP.from_config(ModelConfig())
    if kind == "finetune":
        add_adapters(model, AdapterConfig(rank=NOTEBOOK.rank, scale=NOTEBOOK.scale, targets=NOTEBOOK.targets))
        recipe = NOTEBOOK.finetune_recipe(epochs=epochs)
    else:
        recipe = NOTEBOOK.base_recipe()
    recipe = dataclasses.replace(recipe, epochs=epochs, precision=precision)
    print(f"fit: {kind} {precision} ...", file=sys.stderr, flush=True)
    with contextlib.redirect_stdout(sys.stderr):
        result = fit(model, TensorData(x, y, batch_size=NOTEBOOK.batch_size), recipe, progress=False)
    return common.epoch_rates(x.shape[0], [r["seconds"] for r in result.history])


def process(cmd: list[str], env: dict | None = None) -> common.Measured:
    m = common.run_measured(cmd, env=env)
    if m.returncode != 0:
        sys.exit(f"failed with exit status {m.returncode}: {' '.join(cmd)}\n{m.output[-2000:]}")
    return m


def make_model(work: Path) -> Path:
    """An untrained notebook network with the standardizer and feature names of a small file of the same
    format, saved as `higgs-lora predict` reads it (its speed does not depend on the weights)."""
    from higgs_lora import api
    small = common.simulated_file(rows=5000, seed=1)
    os.environ["HIGGS_LORA_CACHE"] = str(work / "cache-small")
    data = api.load_data(small, progress=False, device="cpu")
    del os.environ["HIGGS_LORA_CACHE"]
    model = api.Model(network=ResidualMLP(), standardizer=data.standardizer,
                      feature_names=list(data.source.feature_names))
    return api.save_model(model, work / "model", force=True)


def inflate_and_parse(path: Path) -> dict:
    """ISA-L streaming inflate alone, then PyArrow's parse of the inflated bytes on one thread as the reader
    parses them (its options: 1 MiB blocks, one read_csv call per piece of csvfile.PIECE_BYTES); wall and
    the thread's CPU seconds of each."""
    import pyarrow as pa
    from isal import igzip
    from higgs_lora.data import csvfile
    t0, c0 = time.perf_counter(), time.thread_time()
    chunks = []
    with igzip.open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            chunks.append(chunk)
    inflate, inflate_cpu = time.perf_counter() - t0, time.thread_time() - c0
    data = b"".join(chunks)
    del chunks
    n_columns = data[:data.index(b"\n")].count(b",") + 1
    options = csvfile._csv_options(n_columns, threads=False)
    t0, c0 = time.perf_counter(), time.thread_time()
    start = 0
    while start < len(data):
        stop = data.rfind(b"\n", start, start + csvfile.PIECE_BYTES) + 1 or len(data)
        if stop <= start:
            stop = len(data)
        csvfile._read_csv(pa.py_buffer(data[start:stop].rstrip(b"\n")), options)
        start = stop
    return dict(inflate_s=inflate, inflate_cpu_s=inflate_cpu, pyarrow_1thread_s=time.perf_counter() - t0,
                pyarrow_1thread_cpu_s=time.thread_time() - c0, inflated_bytes=len(data), rows=data.count(b"\n"))


POLARS_PARSE = """
import io, sys, time
from isal import igzip
import polars as pl
data = igzip.open(sys.argv[1], "rb").read()
n = data[:data.index(b"\\n")].count(b",") + 1
t0, c0 = time.perf_counter(), time.process_time()
pl.read_csv(io.BytesIO(data), has_header=False, quote_char=None, schema={f"c{i}": pl.Float64 for i in range(n)})
print(time.perf_counter() - t0, time.process_time() - c0, pl.thread_pool_size())
"""


def polars_parse(path: Path, threads: int) -> tuple[float, float] | None:
    """(wall, process CPU seconds) of polars' parse of the inflated bytes with `threads` threads (a
    subprocess: the pool size is fixed at import); None where polars is not installed."""
    try:
        import polars  # noqa: F401
    except ImportError:
        return None
    out = subprocess.run([sys.executable, "-c", POLARS_PARSE, str(path)], capture_output=True, text=True,
                         env={**os.environ, "POLARS_MAX_THREADS": str(threads)})
    return (float(out.stdout.split()[0]), float(out.stdout.split()[1])) if out.returncode == 0 else None


def row(name: str, value: str, limit: str, ratio: float, target: str, ok: bool) -> str:
    return f"{name:<44}{value:>16}{limit:>20}{ratio:>8.2f}  {target:<10}{common.verdict(ok)}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=4096 * 30, help="in-memory training rows (default 122,880)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per training figure (>= 2; default 3)")
    p.add_argument("--rounds", type=int, default=30, help="GEMM probe rounds, 5 repeats each (default 30)")
    p.add_argument("--file", type=Path, default=common.BENCH_DATA / "higgs_1.1M.csv.gz",
                   help="1.1M-row HIGGS-format .csv.gz (default bench-data/higgs_1.1M.csv.gz; written when missing)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each whole-process figure, the best kept (default 3)")
    p.add_argument("--out", default=None, help="result file (default benchmarks/results/limits_<cpu>.txt; '-': none)")
    args = p.parse_args()

    info = common.machine()
    lines = common.machine_lines(info, sys.argv)
    if not args.file.exists():
        args.file.parent.mkdir(parents=True, exist_ok=True)
        process(HIGGS_LORA + ["simulate", "--events", str(FILE_ROWS), "--seed", "1", "--out", str(args.file)])

    probes = {"fp32": [gemm_probe(torch.float32, rounds=args.rounds, reps=5)],
              "bf16": [gemm_probe(torch.bfloat16, rounds=args.rounds, reps=5)]}

    g = torch.Generator().manual_seed(NOTEBOOK.seed)
    x = torch.randn(args.rows, 28, generator=g)
    y = (x[:, :4].sum(dim=1) + 0.5 * torch.randn(args.rows, generator=g) > 0).float()
    train = {"base fp32": training_rate("base", "fp32", x, y, args.epochs),
             "base bf16": training_rate("base", "bf16", x, y, args.epochs),
             "finetune fp32": training_rate("finetune", "fp32", x, y, args.epochs)}

    work = common.BENCH_DATA / "limits-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    model = make_model(work)
    cached_env = {"HIGGS_LORA_CACHE": str(work / "cache")}
    startup_cmd = [sys.executable, "-c", "import torch, pyarrow.parquet, higgs_lora.cli, higgs_lora.pipeline"]
    runs: dict[str, list] = {k: [] for k in ("pandas", "first", "cached", "uncached", "startup")}
    identical = True
    for i in range(args.repeats):  # interleaved, so that a burst of others' load hits every figure alike
        runs["pandas"].append(process([sys.executable, "-c",
                                       f"import pandas; pandas.read_csv({str(args.file)!r}, header=None)"]))
        shutil.rmtree(work / "cache", ignore_errors=True)
        runs["first"].append(process(HIGGS_LORA + ["prepare", str(args.file)], env=cached_env))
        predict = [HIGGS_LORA + ["predict", str(model), "--data", str(args.file), "--out", str(work / f"p{k}.parquet"),
                                 "--precision", "fp32", "--device", "cpu", "--force"] for k in range(2)]
        runs["cached"].append(process(predict[0], env=cached_env))
        runs["uncached"].append(process(predict[1], env={"HIGGS_LORA_CACHE": str(work / f"empty{i}")}))
        identical &= (work / "p0.parquet").read_bytes() == (work / "p1.parquet").read_bytes()
        runs["startup"].append(process(startup_cmd))
    pandas, first, cached, uncached, startup = (min(runs[k], key=lambda m: m.wall_s) for k in
                                                ("pandas", "first", "cached", "uncached", "startup"))
    own = [re.search(r"\(([\d,]+) rows/s\)", m.output) for m in runs["cached"]]
    own_rate = max((float(m.group(1).replace(",", "")) for m in own if m), default=None)  # the best of the runs
    parse = inflate_and_parse(args.file)
    pl1, pl_all = polars_parse(args.file, 1), polars_parse(args.file, os.cpu_count())
    probes["fp32"].append(gemm_probe(torch.float32, rounds=args.rounds, reps=5))  # again at the end: best of both
    probes["bf16"].append(gemm_probe(torch.bfloat16, rounds=args.rounds, reps=5))
    shutil.rmtree(work, ignore_errors=True)

    lim = {k: probe_rates({n: min(pr[n] for pr in v) for n in v[0]}) for k, v in probes.items()}
    cores = os.cpu_count()
    bound = max(parse["inflate_s"], parse["pyarrow_1thread_s"] / max(1, cores - 1))
    bound_cpu = max(parse["inflate_cpu_s"], parse["pyarrow_1thread_cpu_s"] / max(1, cores - 1))
    lines += [f"threads: torch {torch.get_num_threads()} (its default here); training rows {args.rows:,} in memory, "
              f"{args.epochs} epochs per figure; file {args.file.name} ({args.file.stat().st_size / 1e6:.0f} MB, "
              f"{parse['rows']:,} rows, {parse['inflated_bytes'] / parse['rows']:.0f} bytes a row inflated)",
              "THE MACHINE WAS SHARED with other jobs during this run: each figure and each limit is the least "
              "disturbed of its repeats (fastest epoch, best probe round), not a quiet-machine fact.", "",
              f"limits (GEMM probe at the network's shapes, batch 2048, best of 2 x {args.rounds} rounds of 5 repeats, "
              "at the start and at the end of the run):"]
    for k in ("fp32", "bf16"):
        r = lim[k]
        lines.append(f"  {k}: 2048x128x128 {r['square_gflops']:.0f} GFLOP/s; all 21 training GEMMs "
                     f"{r['train_gflops']:.0f} GFLOP/s -> {r['train_samples_per_s']:,.0f} training samples/s; "
                     f"forward GEMMs -> {r['infer_rows_per_s']:,.0f} inference rows/s")
    lines.append(f"  FLOPs: {3 * flops_per_row(ModelConfig()):,} per training sample, {flops_per_row(ModelConfig()):,} "
                 "per inference row (GEMMs only)")

    best = {k: v["best_epoch_samples_per_s"] for k, v in train.items()}
    cached_rate = parse["rows"] / cached.wall_s
    header = f"{'figure':<44}{'measured':>16}{'limit / reference':>20}{'ratio':>8}  {'target':<10}verdict"
    lines += ["", header, "-" * len(header)]
    lines.append(row("base training fp32 (samples/s)", f"{best['base fp32']:,.0f}",
                     f"{lim['fp32']['train_samples_per_s']:,.0f}", best["base fp32"] / lim["fp32"]["train_samples_per_s"],
                     f">= {T_FP32:.2f}", best["base fp32"] / lim["fp32"]["train_samples_per_s"] >= T_FP32))
    lines.append(row("base training bf16 (samples/s)", f"{best['base bf16']:,.0f}",
                     f"{lim['bf16']['train_samples_per_s']:,.0f}", best["base bf16"] / lim["bf16"]["train_samples_per_s"],
                     f">= {T_BF16:.2f}", best["base bf16"] / lim["bf16"]["train_samples_per_s"] >= T_BF16))
    ft = best["finetune fp32"] / best["base fp32"]
    lines.append(row("adapter fine-tuning fp32 / base (per sample)", f"{best['finetune fp32']:,.0f}",
                     f"base {best['base fp32']:,.0f}", ft, f">= {T_FT:.1f}x", ft >= T_FT))
    pr = cached_rate / lim["fp32"]["infer_rows_per_s"]
    lines.append(row("predict, cached table (rows/s, whole process)", f"{cached_rate:,.0f}",
                     f"{lim['fp32']['infer_rows_per_s']:,.0f}", pr, f">= {T_PREDICT:.2f}", pr >= T_PREDICT))
    if own_rate:
        lines.append(row("  the rows/s predict prints itself", f"{own_rate:,.0f}",
                         f"{lim['fp32']['infer_rows_per_s']:,.0f}", own_rate / lim["fp32"]["infer_rows_per_s"],
                         f">= {T_PREDICT:.2f}", own_rate / lim["fp32"]["infer_rows_per_s"] >= T_PREDICT))
    lines.append(row("predict, uncached file (s, whole process)", f"{uncached.wall_s:.2f} s",
                     f"first read {first.wall_s:.2f} s", uncached.wall_s / first.wall_s, "<= 1.00",
                     uncached.wall_s <= first.wall_s))
    lines.append(row("first read, pandas / higgs-lora prepare", f"{first.wall_s:.2f} s",
                     f"pandas {pandas.wall_s:.2f} s", pandas.wall_s / first.wall_s, f">= {T_PANDAS:.0f}x",
                     pandas.wall_s / first.wall_s >= T_PANDAS))
    lines.append(row("first read, bound / higgs-lora prepare", f"{first.wall_s:.2f} s",
                     f"bound {bound:.2f} s", bound / first.wall_s, f">= {T_BOUND}", bound / first.wall_s >= T_BOUND))
    lines.append(row("  the bound from the parts' CPU times", f"{first.wall_s:.2f} s", f"bound {bound_cpu:.2f} s",
                     bound_cpu / first.wall_s, f">= {T_BOUND}", bound_cpu / first.wall_s >= T_BOUND))
    lines += ["", "first-read parts: ISA-L streaming inflate alone %.2f s (its thread's CPU %.2f s); PyArrow CSV parse of "
              "the inflated bytes on one thread, as the reader parses them, %.2f s (CPU %.2f s); bound max(inflate, parse "
              "/ (%d cores - 1)) = %.2f s (from the CPU times: %.2f s)" % (
                  parse["inflate_s"], parse["inflate_cpu_s"], parse["pyarrow_1thread_s"], parse["pyarrow_1thread_cpu_s"],
                  cores, bound, bound_cpu)]
    if pl1 is None:
        lines.append("polars: not installed, not measured")
    else:
        import polars
        (pl1, pl1_cpu), pl_all = pl1, pl_all and pl_all[0]
        pl_bound = max(parse["inflate_s"], pl1 / max(1, cores - 1))
        lines.append(f"polars {polars.__version__} (installed for this measurement only, not a dependency; float64 columns, no "
                     "quoting, as the reader's options): parse on one "
                     f"thread {pl1:.2f} s, CPU {pl1_cpu:.2f} s ({parse['pyarrow_1thread_s'] / pl1:.2f}x PyArrow's wall, "
                     f"{parse['pyarrow_1thread_cpu_s'] / pl1_cpu:.2f}x its CPU), on {cores} threads "
                     + (f"{pl_all:.2f} s" if pl_all else "failed") + f"; bound with it {pl_bound:.2f} s "
                     f"= {pandas.wall_s / pl_bound:.1f}x pandas")
    lines.append("training, steady state (all epochs after the first) beside the fastest epoch: " + "; ".join(
        f"{k} {v['samples_per_s']:,.0f} / {v['best_epoch_samples_per_s']:,.0f}" for k, v in train.items()))
    lines.append(f"whole processes, best of {args.repeats}: pandas {pandas.wall_s:.2f} s, prepare {first.wall_s:.2f} s, "
                 f"predict cached {cached.wall_s:.2f} s, predict uncached {uncached.wall_s:.2f} s, startup (import torch, "
                 f"pyarrow.parquet and higgs_lora's pipeline) {startup.wall_s:.2f} s; every run: " + "; ".join(
                     f"{k} " + " ".join(f"{m.wall_s:.2f}" for m in v) for k, v in runs.items()))
    lines.append("predict's outputs from the cache and from the parser: "
                 + ("equal byte for byte" if identical else "DIFFERENT (a regression: they must be equal to the bit)"))
    lines.append("load average at end (1/5/15 min): " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    short = re.sub(r"[^a-z0-9]+", "-", info["cpu"].lower()).strip("-")
    out = None if args.out == "-" else Path(args.out or common.ROOT / "benchmarks" / "results" / f"limits_{short}.txt")
    record = [dict(limits=lim, training=train, pandas_s=pandas.wall_s, first_read_s=first.wall_s,
                   predict_cached_s=cached.wall_s, predict_uncached_s=uncached.wall_s, predict_own_rows_per_s=own_rate,
                   startup_s=startup.wall_s, predict_outputs_identical=identical,
                   runs_s={k: [m.wall_s for m in v] for k, v in runs.items()},
                   **parse, polars_1thread_s=pl1, polars_all_s=pl_all, machine=info)]
    common.report(lines, out, runs=record)


if __name__ == "__main__":
    main()
