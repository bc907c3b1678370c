"""Communication share of a DDP training step on this machine (issue 6): torchrun, K processes.

Each rank times the same training steps twice, interleaved: with DDP's gradient all-reduce, and inside
`no_sync()` (identical compute, no communication). share = 1 - t_no_sync / t_ddp.

    .venv/bin/torchrun --standalone --nproc_per_node=2 benchmarks/bench_ddp.py [--batch 4096] [--steps 40]

`--batch` is the GLOBAL batch; each rank computes batch/K rows per step, as `higgs-lora` does.
"""
import argparse
import os
import platform
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from higgs_lora.adapters.lora import add_adapters
from higgs_lora.config import AdapterConfig
from higgs_lora.model.network import ResidualMLP


def main():
    ap = argparse.ArgumentParser(allow_abbrev=False)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--lora", action="store_true", help="adapter fine-tuning (only A, B travel)")
    args = ap.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(rank)
    model = ResidualMLP()
    if args.lora:
        add_adapters(model, AdapterConfig(rank=4, scale=0.1))
    ddp = DistributedDataParallel(model)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    per_rank = args.batch // world
    x, y = torch.randn(per_rank, 28), (torch.rand(per_rank) > 0.5).float()

    def step(sync: bool):
        ctx = ddp.no_sync() if not sync else torch.enable_grad()
        with ctx:
            loss = loss_fn(ddp(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()

    for _ in range(5):
        step(True)
    t = {True: 0.0, False: 0.0}
    for _ in range(args.steps):
        for sync in (True, False):
            dist.barrier()
            t0 = time.perf_counter()
            step(sync)
            t[sync] += time.perf_counter() - t0
    times = torch.tensor([t[True], t[False]], dtype=torch.float64)
    dist.all_reduce(times)
    if rank == 0:
        t_ddp, t_local = (times / world / args.steps).tolist()
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch "
              f"{torch.__version__}, {torch.get_num_threads()} threads/rank; {world} ranks, gloo")
        print(f"{'adapters' if args.lora else 'base'}: {params:,} gradients all-reduced per step, global batch "
              f"{args.batch} ({per_rank} per rank)")
        print(f"step with all-reduce {1e3 * t_ddp:.2f} ms, without {1e3 * t_local:.2f} ms -> "
              f"communication share {100 * (1 - t_local / t_ddp):.1f}% of the step")
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)


if __name__ == "__main__":
    main()
