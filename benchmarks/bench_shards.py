"""Training from a shard directory (issue 6, item 5): streamed from disk vs held in memory, side by side,
then a run on more data than the process is allowed to hold.

1. The same rows two ways, one epoch each: `higgs-lora train --data FILE` (the cached table; the train
   part becomes one tensor) and `--data SHARDS` (FILE cut by `higgs-lora shard`, read window by
   window). Printed: samples/s and peak RSS of each, and their ratios.
2. Larger than memory: a directory listing those shards K times (symlinks, so K x the rows) is trained
   for one epoch under an address-space limit (ulimit -v) smaller than its features; the in-memory run
   on the single file gets the same limit, for contrast (it is expected to fail: out of memory).

    .venv/bin/python benchmarks/bench_shards.py [--rows 11000000] [--repeat 4] [--limit-gib 2]
"""
from __future__ import annotations

import argparse
import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from common import BENCH_DATA, gb, machine, machine_lines, run_measured, simulated_file, verdict

from higgs_lora.config import DEFAULT_PRECISION, PRECISIONS

TRAINED = re.compile(r"trained in ([\d.]+)s \(([\d,]+) samples/s\)")


def train(data: Path, out: Path, *, train_rows: int, test_rows: int, precision: str, limit_bytes: int | None = None):
    cmd = [sys.executable, "-m", "higgs_lora", "train", "--data", str(data), "--out", str(out), "--force",
           "--preset", "notebook", "--epochs", "1", "--precision", precision, "--train-rows", str(train_rows),
           "--test-rows", str(test_rows), "--no-progress"]
    if limit_bytes is not None:
        cmd = ["bash", "-c", f"ulimit -v {limit_bytes // 1024} && exec {shlex.join(cmd)}"]
    m = run_measured(cmd)
    found = TRAINED.search(m.output)
    rate = float(found.group(2).replace(",", "")) if found and m.returncode == 0 else float("nan")
    return m, rate


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=11_000_000, help="rows of the simulated file (default: 11,000,000)")
    p.add_argument("--rows-per-shard", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=4, help="K: how many times part 2 lists the shards (default: 4)")
    p.add_argument("--limit-gib", type=float, default=2.0, help="address-space limit of part 2 (default: 2 GiB; libraries alone map ~1.2 GiB)")
    p.add_argument("--precision", default=DEFAULT_PRECISION, choices=PRECISIONS)
    p.add_argument("--work", type=Path, help="where the shards go (default: a temporary folder in bench-data/)")
    args = p.parse_args()
    info = machine()
    data = simulated_file(rows=args.rows, seed=2014)
    work = Path(tempfile.mkdtemp(prefix="shards-", dir=args.work or BENCH_DATA))
    try:
        lines = run(args, data, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(machine_lines(info, sys.argv) + lines))


def run(args, data: Path, work: Path) -> list[str]:
    rows, test_rows = args.rows, args.rows // 22
    train_rows = rows - test_rows - rows // 22  # most rows train: the in-memory tensor is as big as it gets
    m = run_measured([sys.executable, "-m", "higgs_lora", "prepare", str(data)])
    assert m.returncode == 0, m.output
    m = run_measured([sys.executable, "-m", "higgs_lora", "shard", str(data), "--out", str(work / "shards"),
                      "--rows-per-shard", str(args.rows_per_shard)])
    assert m.returncode == 0, m.output
    shard_s = m.wall_s
    features_bytes = rows * 28 * 4

    mem, mem_rate = train(data, work / "mem", train_rows=train_rows, test_rows=test_rows, precision=args.precision)
    st, st_rate = train(work / "shards", work / "st", train_rows=train_rows, test_rows=test_rows,
                        precision=args.precision)
    assert mem.returncode == 0 and st.returncode == 0, (mem.output[-2000:], st.output[-2000:])

    k = args.repeat
    many = work / "many"
    many.mkdir()
    for r in range(k):
        for shard in sorted((work / "shards").iterdir()):
            (many / f"copy{r}-{shard.name}").symlink_to(shard.resolve())
    limit = int(args.limit_gib * (1 << 30))
    big_rows = rows * k
    big_train = big_rows - 2 * (big_rows // 22)
    capped, capped_rate = train(many, work / "capped", train_rows=big_train, test_rows=big_rows // 22,
                                precision=args.precision, limit_bytes=limit)
    mem_capped, _ = train(data, work / "mem-capped", train_rows=train_rows, test_rows=test_rows,
                          precision=args.precision, limit_bytes=limit)
    failure = next((line for line in mem_capped.output.splitlines() if "error" in line.lower()), "(no error line)")

    return [
        f"data: {data.name}, {rows:,} rows ({gb(features_bytes)} of float32 features); train part {train_rows:,} "
        f"rows, one epoch, notebook preset, {args.precision}",
        f"sharding ({args.rows_per_shard:,} rows a shard, from the .csv.gz): {shard_s:.1f} s",
        "",
        "1. same rows, side by side                 in memory      streamed     streamed / in memory",
        f"   training samples/s                   {mem_rate:>12,.0f}  {st_rate:>12,.0f}     {st_rate / mem_rate:.2f}x",
        f"   peak RSS of the process              {gb(mem.max_rss_bytes):>12}  {gb(st.max_rss_bytes):>12}     "
        f"{st.max_rss_bytes / mem.max_rss_bytes:.2f}x",
        f"   wall time of the command             {mem.wall_s:>11.1f}s  {st.wall_s:>11.1f}s     "
        f"{st.wall_s / mem.wall_s:.2f}x",
        "",
        f"2. larger than memory: {k} x the shards = {big_rows:,} rows ({gb(big_rows * 28 * 4)} of features), "
        f"address space limited to {args.limit_gib:g} GiB ({gb(limit)})",
        f"   streamed, {big_train:,} train rows: exit {capped.returncode}, {capped_rate:,.0f} samples/s, "
        f"peak RSS {gb(capped.max_rss_bytes)}, wall {capped.wall_s:.0f}s  "
        f"[{verdict(capped.returncode == 0 and big_rows * 28 * 4 > limit)}: trained on more than the limit]",
        f"   in memory, the single file ({train_rows:,} train rows): exit {mem_capped.returncode}: {failure.strip()}",
    ]


if __name__ == "__main__":
    main()
