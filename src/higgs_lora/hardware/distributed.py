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

# PyTorch is imported by the functions that need it, not here: the data layer asks world() too, and
# commands that only read files must not pay for importing PyTorch (a process group can only exist
# once torch.distributed has been imported, so until then the answer is one process).


def _dist():
    return sys.modules.get("torch.distributed")


def world() -> tuple[int, int]:
    dist = _dist()
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def log(msg: str = "") -> None:
    """Print on the main process only (each rank would say the same)."""
    if is_main():
        print(msg, flush=True)


def started_by_torchrun() -> bool:
    """Whether this process is one of several started by torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup() -> bool:
    """Join the process group when started by torchrun with more than one process."""
    if not started_by_torchrun():
        return False
    import torch
    import torch.distributed as dist
    if dist.is_initialized():
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return True


def local_device(device):
    import torch
    if device.type == "cuda" and world()[1] > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def barrier() -> None:
    if world()[1] > 1:
        _dist().barrier()


def all_reduce_(tensor, op=None):
    if world()[1] > 1:
        dist = _dist()
        dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, device) -> bool:
    """True on every rank if any rank says True (all ranks must call it at the same step)."""
    if world()[1] == 1:
        return flag
    import torch
    dist = _dist()
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather(obj) -> list:
    """Every rank's `obj`, in rank order (a one-element list outside torchrun)."""
    if world()[1] == 1:
        return [obj]
    out = [None] * world()[1]
    _dist().all_gather_object(out, obj)
    return out


def finish(exit_code: int) -> None:
    """End a worker so that its exit status can be trusted.

    With this PyTorch build, 2-process gloo runs intermittently abort at interpreter exit after all work
    is done ('terminate called without an active exception', SIGABRT): gloo's threads race the
    interpreter's teardown. On success: barrier, destroy the group, flush, and leave with os._exit so no
    teardown runs. On failure: skip the barrier (the other ranks may be stuck in a collective) and exit
    non-zero at once; torchrun then stops the other ranks and reports the failure.
    """
    dist = _dist()
    if dist is None or not (dist.is_available() and dist.is_initialized()):
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
