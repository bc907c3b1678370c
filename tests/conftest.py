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


def make_adapters_look_trained(model, *, std: float = 1.0, seed: int = 0):
    """Fill every adapter's B (zero at initialisation, so a fresh adapter changes nothing) with seeded
    normal values of `std`: the adapted network then computes another function, as a trained one does."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def identity_standardizer(n_features: int = 28):
    from higgs_lora.data.standardize import Standardizer
    return Standardizer(mean=np.zeros(n_features, np.float32), std=np.ones(n_features, np.float32))


def save_base(path, model, standardizer=None, **kw):
    """Save `model` as a base (feature names f0.., the identity standardizer unless given) and load it
    back: (loaded model, standardizer, meta), as a command would see it."""
    from higgs_lora.model import model_file
    n = model.config.n_features
    model_file.save_model(path, model, standardizer or identity_standardizer(n), feature_names=[f"f{i}" for i in range(n)], **kw)
    return model_file.load_model(path)

def float32_tolerance(model, x, *, probabilities: bool = False) -> float:
    """How far apart two float32 computations of `model`'s logits on rows `x` may be when they sum in
    different orders (reform vs factored adapters, merged vs adapted, PyTorch vs PEFT or ONNX Runtime,
    one CPU's kernels vs another's, AVX2 vs AVX-512 blocking): derived from the computation, not measured
    on one CPU.

    Rounding error analysis (Higham & Mary 2019, probabilistic bound): a dot product of length n in float32,
    in any order, is within lambda * sqrt(n) * u * (|W||h| + |b|) of the exact one (u = 2^-24; lambda = 6:
    exceeded with probability below 1e-7 per dot product), the adapters' |A||B| path counted, as the
    factored form computes it. Each layer adds that much at most, for its largest entry and row; summed
    over the layers (later layers carry an error on without enlarging it by much in these networks: ReLU
    never does, and the weights' scale is near 1) it bounds each computation's error in the logit; two
    computations: twice that. Probabilities: a quarter of it (the sigmoid's slope is at most 1/4). A real
    mistake (a wrong scale, a layer left out) is orders of magnitude larger."""
    import math

    from higgs_lora.adapters.lora import LoRALinear

    u, lam = 2.0 ** -24, 6.0

    def parts(layer):
        """(effective weight, |W| with the low-rank path, bias, dot-product length) in float64."""
        if isinstance(layer, LoRALinear):
            w = layer.adapted_weight().double()
            path = (layer.lora_A.double().abs() @ layer.lora_B.double().abs()).T * layer.scaling
            if layer.config.init == "pissa":
                path = path + (layer.lora_A0.double().abs() @ layer.lora_B0.double().abs()).T * layer.scaling
            absw = w.abs() + path + (layer.base.weight.double().abs() if layer.dora else 0)
            return w, absw, layer.base.bias.double(), layer.base.in_features + 2 * layer.rank + 2
        w = layer.weight.double()
        return w, w.abs(), layer.bias.double(), layer.in_features + 1

    def step(name, h, err):
        w, absw, b, n = parts(model.get_submodule(name))
        return h @ w.T + b, err + lam * math.sqrt(n) * u * (h.abs() @ absw.T + b.abs()).max().item()

    if model.config.embedding != "none":
        raise NotImplementedError("float32_tolerance covers networks without a feature embedding")
    with torch.no_grad():
        h, err = step("input", torch.as_tensor(x).double(), 0.0)
        h = torch.relu(h)
        for i in range(model.config.n_blocks):
            t, err = step(f"blocks.{i}.dense1", h, err)
            s, err = step(f"blocks.{i}.dense2", torch.relu(t), err)
            h, err = torch.relu(h + s), err + u * (h + s).abs().max().item()
        h, err = step("hidden", h, err)
        _, err = step("output", torch.relu(h), err)
    return 2 * err / 4 if probabilities else 2 * err

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


@pytest.fixture
def no_stray_caches(tmp_path, monkeypatch):
    """Default cache locations point into tmp_path, so a test can never write beside real data or in ~ (the
    modules that read files use it for every test: pytestmark = pytest.mark.usefixtures("no_stray_caches"))."""
    monkeypatch.delenv("HIGGS_LORA_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
