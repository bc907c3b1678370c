"""Helpers shared by the tests: small learnable data, HIGGS-format files, the CLI in a fresh process, and
a data-source wrapper that presses Ctrl-C at a chosen step. Test modules import them from here only."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)  # tests are small; one thread keeps them deterministic and polite on shared CPUs


@pytest.fixture(autouse=True, scope="session")
def session_user_cache(tmp_path_factory):
    """The user cache (hardware.py's precision probes) in a folder of this test session, never ~/.cache:
    measured once per session and network, shared by the CLI's fresh processes through the environment."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("user-cache"))
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


def synthetic_xy(rows: int, *, n_features: int = 28, seed: int = 0):
    """A learnable toy problem: raw (unstandardized) float32 features and uint8 labels."""
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=1.0, scale=2.0, size=(rows, n_features)).astype(np.float32)
    z = x[:, 0] * x[:, 1] - x[:, 2] + 0.5 * rng.normal(size=rows)
    y = (z > np.median(z)).astype(np.uint8)
    return x, y


def write_higgs_csv(path: Path, rows: int, seed: int = 0) -> Path:
    """A HIGGS-format CSV (label first, no header) of `synthetic_xy` rows."""
    x, y = synthetic_xy(rows, seed=seed)
    np.savetxt(path, np.column_stack([y.astype(np.float64), x]), delimiter=",", fmt="%.18e")
    return path


def cli(*args, check=True):
    """Run the CLI in a fresh process, as a user would."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "higgs_lora", *map(str, args)], capture_output=True, text=True, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


def torchrun(nproc, *args, check=True, **kw):
    """The CLI under torchrun with `nproc` processes (gloo on this CPU)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([*TORCHRUN, f"--nproc_per_node={nproc}", "-m", "higgs_lora", *map(str, args)],
                       capture_output=True, text=True, env=env, timeout=600, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


class CtrlCAfter:
    """A training part that sends this process SIGINT (Ctrl-C) when `steps` steps of the run are done:
    fit() then stops at that step, writes its checkpoint and raises Interrupted, as for a user's Ctrl-C."""

    def __init__(self, part, steps: int | None):
        self.part, self.steps, self.done = part, steps, 0

    def __getattr__(self, name):
        return getattr(self.part, name)

    def batches(self, **kw):
        for batch in self.part.batches(**kw):
            if self.steps is not None and self.done == self.steps:
                signal.raise_signal(signal.SIGINT)
            self.done += 1
            yield batch


@pytest.fixture
def xy():
    return synthetic_xy(4000)


def write_root(path: Path, trees: dict) -> Path:
    """A ROOT file of TTrees, {tree: {branch: array}} (needs uproot; awkward arrays make jagged branches).
    Written by the tests, never committed."""
    import uproot
    with uproot.recreate(path) as f:
        for name, branches in trees.items():
            types = {b: ("var * float64" if hasattr(a, "layout") else a.dtype) for b, a in branches.items()}
            f.mktree(name, types)
            f[name].extend(branches)
    return path
