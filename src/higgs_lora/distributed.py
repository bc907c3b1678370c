"""Multi-process training on PyTorch's own engine (torchrun + DistributedDataParallel).

Launched by `torchrun --nproc_per_node=K -m higgs_lora ...`: torchrun sets RANK, WORLD_SIZE, LOCAL_RANK
and the rendezvous variables; `setup()` joins the process group (gloo on CPU, nccl on GPU). Every rank
reads the same (cached, memory-mapped) table, computes the same permutation each epoch and takes its
slice of every global batch, so the global batch stays --batch-size whatever the number of ranks and the
learning rate needs no rescaling. Only rank 0 prints and writes files.
"""
from __future__ import annotations

import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def setup() -> bool:
    """Join the process group when started by torchrun with more than one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return True


def local_device(device: torch.device) -> torch.device:
    if device.type == "cuda" and world()[1] > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def all_reduce_(tensor: torch.Tensor, op=None) -> torch.Tensor:
    if world()[1] > 1:
        dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if any rank says True (all ranks must call it at the same step)."""
    if world()[1] == 1:
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather(obj) -> list:
    """Every rank's `obj`, in rank order (a one-element list outside torchrun)."""
    if world()[1] == 1:
        return [obj]
    out = [None] * world()[1]
    dist.all_gather_object(out, obj)
    return out


def finish(exit_code: int) -> None:
    """End a worker so that its exit status can be trusted.

    With this PyTorch build, 2-process gloo runs intermittently abort at interpreter exit after all work
    is done ('terminate called without an active exception', SIGABRT): gloo's threads race the
    interpreter's teardown. On success: barrier, destroy the group, flush, and leave with os._exit so no
    teardown runs. On failure: skip the barrier (the other ranks may be stuck in a collective) and exit
    non-zero at once; torchrun then stops the other ranks and reports the failure.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if exit_code == 0:
        try:
            dist.barrier()
            dist.destroy_process_group()
        except Exception as e:  # a rank that fails here must not report success
            print(f"higgs-lora: error: distributed shutdown failed ({e})", file=sys.stderr)
            exit_code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
