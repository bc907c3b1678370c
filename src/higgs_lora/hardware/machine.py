"""What this machine runs fast: the cores the process may use, native bf16, and a measured precision.

Importable without PyTorch (the CLI sets the OpenMP environment from here before torch is first
imported); torch is imported inside the functions that need it.

- Threads: the cores in the process's affinity mask, capped by the cgroup CPU quota (containers, Slurm
  jobs), not os.cpu_count(), which counts the machine's cores.
- OpenMP wait policy: left at OpenMP's default (spin, then sleep), the fastest when the cores are free.
  Where other processes take cores, thread_governor.py lowers the training threads while they do: that
  kept more speed than PASSIVE (~0.5x contended, and 5-14 % slower when quiet; bench_contention.py).
- Precision `auto`: bf16 only where the hardware has it natively (AVX512-BF16/AMX, ARM BF16, or a GPU
  that says so) and a short probe (a few training steps of the configured model at fp32 and bf16)
  measures it faster. Probes are cached per machine in the user cache directory; a probe measured while
  other processes keep the cores busy is neither cached nor used (a cached quiet one is, else fp32).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from higgs_lora.config import check_precision

PROBE_SECONDS = 0.8          # wall budget of one probe (warm-up included), under the 1 s promise
PROBE_MIN_STEPS = 2          # measured steps per precision, whatever the budget
BF16_MIN_SPEEDUP = 1.1       # bf16 rounds more; it must buy clearly more than noise to be chosen
PROBE_CACHE_VERSION = 1
# Variables through which a user (or a launcher such as torchrun) already decided the OpenMP threading.
OMP_USER_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")   # x86 AVX512-BF16, AMX; ARM's FEAT_BF16 ("bf16")
NATIVE_BF16_ISA = ("AVX512", "SVE256", "SVE", "DEFAULT")  # ATen levels that run bf16 natively with the flags


# ------------------------------------------------------------------------------------------------ the CPU

def cpu_model(*, cpuinfo: str | None = None) -> str:
    fields = cpuinfo_fields(cpuinfo)
    name = next((fields[k] for k in ("model name", "Model", "Hardware") if k in fields), "")
    return name or platform.processor() or platform.machine()


def cpu_flags(*, cpuinfo: str | None = None) -> frozenset[str]:
    fields = cpuinfo_fields(cpuinfo)
    return frozenset(next((fields[k] for k in ("flags", "Features") if k in fields), "").split())


def cpuinfo_fields(text: str | None = None) -> dict[str, str]:
    """/proc/cpuinfo (or `text`) as {key: value} of the first processor listed; {} where there is none."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon:
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_isa() -> str:
    """ATen's vector level (AVX2, AVX512, ...): lower than the CPU's when ATEN_CPU_CAPABILITY caps it."""
    import torch
    return torch.backends.cpu.get_cpu_capability()


def native_bf16(device: str = "cpu", *, flags: frozenset[str] | None = None, isa: str | None = None) -> tuple[bool, str]:
    """(whether `device` runs bf16 in hardware, why). Emulated bf16 on CPUs without it measured ~17x
    slower than fp32 (2-core AMD EPYC, AVX2 only), which no probe needs to confirm."""
    if device.startswith("cuda"):
        import torch
        ok = torch.cuda.is_bf16_supported()
        return ok, f"{torch.cuda.get_device_name(device)} {'supports' if ok else 'does not support'} bf16"
    flags = cpu_flags() if flags is None else flags
    have = [f for f in NATIVE_BF16_FLAGS if f in flags]
    if not have:
        return False, "no native bf16 on this CPU (no avx512_bf16/amx_bf16/bf16 flag)"
    isa = cpu_isa() if isa is None else isa
    if isa not in NATIVE_BF16_ISA:
        return False, f"CPU has {'/'.join(have)} but PyTorch runs at {isa} here (ATEN_CPU_CAPABILITY?)"
    return True, f"{'/'.join(have)} at {isa}"


# ------------------------------------------------------------------------------------------------ threads

@dataclass(frozen=True)
class Cores:
    n: int
    reason: str


def usable_cores(*, affinity: set[int] | None = None, cgroup_root: Path = Path("/sys/fs/cgroup"),
                 proc_cgroup: Path = Path("/proc/self/cgroup")) -> Cores:
    """The cores this process may really use: its affinity mask, capped by the cgroup CPU quota
    (rounded up, as Go and the JVM do: a 1.5-CPU quota gets 2 threads)."""
    if affinity is None:
        affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    n, why = len(affinity), [f"{len(affinity)} CPUs in the affinity mask"]
    quota = cgroup_cpu_quota(cgroup_root=cgroup_root, proc_cgroup=proc_cgroup)
    if quota is not None:
        cpus, source = quota
        why.append(f"cgroup quota {cpus:g} CPUs ({source})")
        n = min(n, max(1, math.ceil(cpus)))
    else:
        why.append("no cgroup CPU quota")
    return Cores(max(1, n), ", ".join(why))


def cgroup_cpu_quota(*, cgroup_root: Path = Path("/sys/fs/cgroup"),
                     proc_cgroup: Path = Path("/proc/self/cgroup")) -> tuple[float, str] | None:
    """The tightest CPU quota on this process's cgroup and its ancestors, in CPUs, and the file that
    set it; None without one. cgroup v2 (`cpu.max`: "QUOTA PERIOD" or "max PERIOD") and v1
    (`cpu.cfs_quota_us`, -1 for none, over `cpu.cfs_period_us`)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    best = None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if controllers == "":  # v2: one unified hierarchy
            mounts = [cgroup_root]
        elif "cpu" in controllers.split(","):
            mounts = [cgroup_root / d for d in (controllers, "cpu", "cpu,cpuacct", "cpuacct,cpu")]
        else:
            continue
        for mount in dict.fromkeys(mounts):
            for folder in _ancestors(mount, rel):
                quota = _read_quota(folder)
                if quota is not None and (best is None or quota[0] < best[0]):
                    best = quota
    return best


def _ancestors(mount: Path, rel: str) -> list[Path]:
    """mount/rel and its parents up to mount. In a container the cgroup named in /proc/self/cgroup is
    often not visible and its own cgroup is mounted as the root, hence the root too."""
    parts = [p for p in rel.strip("/").split("/") if p and p != ".."]
    return [mount.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _read_quota(folder: Path) -> tuple[float, str] | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return (None if quota == "max" else (int(quota) / int(period), str(folder / "cpu.max")))
    except (OSError, ValueError):
        pass
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
        return (int(quota) / period, str(folder / "cpu.cfs_quota_us")) if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class ThreadSetting:
    threads: int
    reason: str
    environment: dict      # what was set (empty where the user had decided)


_SETTING: ThreadSetting | None = None   # what configure_threads did in this process


def configure_threads(environ=None, *, cores: Cores | None = None) -> ThreadSetting:
    """Set OMP_NUM_THREADS (usable cores), before torch is first imported
    (OpenMP reads them once). Leaves everything alone where the user, or a launcher like torchrun, set
    any OpenMP variable (their choice wins), and where torch is already imported (too late to matter).
    `environ`: a dict to set instead of this process's environment (tests)."""
    global _SETTING
    if environ is None:
        if _SETTING is not None:
            return _SETTING
        if "torch" in sys.modules:
            import torch
            return ThreadSetting(torch.get_num_threads(), "PyTorch's own choice (it was imported before "
                                 "higgs-lora could set OpenMP up)", {})
        _SETTING = _configure(os.environ, cores or usable_cores())
        return _SETTING
    return _configure(environ, cores or usable_cores())


def _configure(environ, cores: Cores) -> ThreadSetting:
    mine = [v for v in OMP_USER_VARIABLES if v in environ]
    if mine:
        n = environ.get("OMP_NUM_THREADS", "")
        return ThreadSetting(int(n) if n.isdigit() and int(n) > 0 else cores.n,
                             f"set by the environment ({', '.join(f'{v}={environ[v]}' for v in mine)})", {})
    env = {"OMP_NUM_THREADS": str(cores.n)}
    environ.update(env)
    return ThreadSetting(cores.n, cores.reason + "; fewer while other processes keep the cores busy", env)


def threads_governed() -> bool:
    """May training lower and raise its threads with the load (thread_governor.py)? Not where the user,
    or a launcher, chose the OpenMP threading, nor where a cgroup quota rather than the affinity mask
    limits the cores (other containers' load on the host's CPUs says nothing about this one's share)."""
    chosen = not _SETTING.environment if _SETTING is not None else any(v in os.environ for v in OMP_USER_VARIABLES)
    if chosen or not hasattr(os, "sched_getaffinity"):
        return False
    return usable_cores().n >= len(os.sched_getaffinity(0))


def thread_setting() -> ThreadSetting:
    """What this process runs with: as configure_threads set it, or as torch chose on its own."""
    if _SETTING is not None:
        return _SETTING
    import torch
    return ThreadSetting(torch.get_num_threads(), f"PyTorch's own choice; usable cores: {usable_cores().reason}", {})


# ------------------------------------------------------------------------------------------------ others' load

BUSY_OTHERS_CORES = 0.5   # other processes using this much CPU make a speed measurement untrustworthy


def cpu_ticks(cpus: set[int], *, stat: Path = Path("/proc/stat")) -> int:
    """Busy clock ticks (user, nice, system, irq, softirq, steal) summed over `cpus`, all processes."""
    total = 0
    for line in stat.read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *fields = line.split()
            if int(name[3:]) in cpus:
                user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
                total += user + nice + system + irq + softirq + steal
    return total


def own_ticks(*, stat: Path = Path("/proc/self/stat")) -> int:
    """Clock ticks this process (all its threads) has run, user + system."""
    fields = stat.read_text().rsplit(")", 1)[1].split()   # the command name may hold spaces
    return int(fields[11]) + int(fields[12])


def load_sample(cpus: set[int] | None = None):
    """(clock, busy ticks of `cpus`, this process's ticks, cpus) now; None without /proc."""
    try:
        cpus = cpus if cpus is not None else os.sched_getaffinity(0)
        return time.monotonic(), cpu_ticks(cpus), own_ticks(), cpus
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def others_between(before, after, *, hz: int | None = None) -> float:
    """Cores other processes kept busy between two samples (clock, busy ticks of the CPUs, this
    process's ticks, ...): all the CPUs' busy time less this process's own, per second."""
    seconds = max(after[0] - before[0], 1e-9)
    busy = (after[1] - before[1]) - (after[2] - before[2])
    cores = max(0.0, busy) / (hz or os.sysconf("SC_CLK_TCK")) / seconds
    # Ticks count in steps of 1/hz per CPU: over an interval of a few ticks one step is many "cores".
    # No measurement can exceed the CPUs sampled (samples of load_sample carry them).
    return min(cores, float(len(after[3]))) if len(after) > 3 else cores


def others_cores(since) -> float | None:
    """How many cores other processes kept busy on the same CPUs since `since` (load_sample()), or None."""
    now = load_sample(since[3]) if since is not None else None
    return None if now is None else others_between(since, now)


# ------------------------------------------------------------------------------------------------ precision

@dataclass(frozen=True)
class PrecisionChoice:
    precision: str                 # fp32 | bf16: what runs
    reason: str
    bf16_speedup: float | None     # measured fp32 step time / bf16 step time; None when not measured
    warning: str | None = None     # set when an explicit bf16 runs emulated

    def line(self) -> str:
        return f"precision: {self.precision} ({self.reason})"

    def to_dict(self) -> dict:
        return asdict(self)


def choose_precision(requested: str, *, device: str, make_model: Callable, n_features: int, batch_size: int,
                     kind: str = "train", probe: Callable | None = None, native: tuple[bool, str] | None = None,
                     ) -> PrecisionChoice:
    """fp32, bf16 or auto -> what to run and why. `make_model()` builds the configured network (the
    probe measures it, whatever it is); `probe` and `native` replace the measurement in tests."""
    check_precision(requested)
    if requested == "fp32":
        return PrecisionChoice("fp32", "requested", None)
    is_native, why = native_bf16(device) if native is None else native
    if requested == "auto" and not is_native:
        return PrecisionChoice("fp32", "auto: " + why, None)
    if requested == "bf16" and is_native:
        return PrecisionChoice("bf16", "requested; native bf16: " + why, None)
    probe = probe or cached_probe
    speedup = probe(device=device, make_model=make_model, n_features=n_features, batch_size=batch_size, kind=kind)
    if speedup is None:  # measured under others' load, no quiet probe cached: trust none (issue 21)
        if requested == "bf16":
            return PrecisionChoice("bf16", "requested; " + why, None,
                                   f"warning: --precision bf16 is emulated here ({why}); its cost could not be "
                                   "measured while other processes kept the cores busy")
        return PrecisionChoice("fp32", f"auto: native bf16 ({why}), but its probe ran while other processes kept "
                                       "the cores busy and no quiet probe is cached: fp32 and its budget", None)
    measured = f"bf16 measured {_times(speedup)} fp32 on this machine"
    if requested == "bf16":  # emulated: obey, and say what it costs
        warning = (f"warning: --precision bf16 is emulated here ({why}): {_times(speedup)} fp32's speed"
                   + ("" if speedup >= 1 else f", a {1 / speedup:.1f}x slowdown") + "; --precision auto picks for you")
        return PrecisionChoice("bf16", "requested; " + why, speedup, warning)
    if speedup >= BF16_MIN_SPEEDUP:
        return PrecisionChoice("bf16", f"auto: native bf16 ({why}) and {measured}", speedup)
    return PrecisionChoice("fp32", f"auto: native bf16 ({why}), but {measured} (bf16 needs >= "
                                   f"{BF16_MIN_SPEEDUP}x)", speedup)


def _times(speedup: float) -> str:
    return f"{speedup:.2f}x"


def scaled_epochs(epochs_fp32: int, choice: PrecisionChoice) -> int:
    """The epochs that take the time `epochs_fp32` fp32 epochs take, at the chosen precision's
    measured speed (rounded down, so the time promise holds)."""
    if choice.precision == "fp32" or not choice.bf16_speedup:
        return epochs_fp32
    return max(1, math.floor(epochs_fp32 * choice.bf16_speedup))


# ------------------------------------------------------------------------------------------------ the probe

def probe_key(*, device: str, n_features: int, batch_size: int, kind: str, model: str, threads: int) -> str:
    """What a measurement depends on: the machine (CPU model and flags, or the GPU), torch and its
    threads, and the network and batch it ran."""
    import torch
    where = torch.cuda.get_device_name(device) if device.startswith("cuda") else cpu_model()
    flags = hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest()[:12]
    return json.dumps(dict(v=PROBE_CACHE_VERSION, device=where, flags=flags, isa=cpu_isa(), torch=torch.__version__,
                           threads=threads, model=model, n_features=n_features, batch=batch_size, kind=kind),
                      sort_keys=True)


def cache_file() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "higgs-lora" / "hardware.json"


def cached_probe(*, device: str, make_model: Callable, n_features: int, batch_size: int, kind: str = "train",
                 refresh: bool = False) -> float | None:
    """The measured bf16 speed-up, from the cache when this machine measured it before (`refresh`:
    measure again and replace it, as `doctor` does).

    A probe taken while other processes kept at least BUSY_OTHERS_CORES busy on this process's CPUs is
    neither cached nor used: a neighbour skews the ratio (1.2-1.4x quiet, 2.4x once on a busy Xeon), and
    an inflated ratio would inflate the default preset's epochs. Then the quiet probe cached before is
    used where there is one (`refresh`), else None: the caller falls back to fp32 and its budget."""
    import torch
    model = make_model()
    key = probe_key(device=device, n_features=n_features, batch_size=batch_size, kind=kind,
                    model=repr(model), threads=torch.get_num_threads())
    path = cache_file()
    cache = _read_cache(path)
    if key in cache and not refresh:
        return cache[key]["bf16_speedup"]
    before = load_sample()
    speedup = measure_speedup(model, device=device, n_features=n_features, batch_size=batch_size, kind=kind)
    others = others_cores(before)
    if others is not None and others >= BUSY_OTHERS_CORES and device == "cpu":
        quiet = cache.get(key, {}).get("bf16_speedup")
        instead = (f"the quiet probe cached on {cache[key].get('measured', '?')} ({quiet:.2f}x) is used instead"
                   if quiet is not None else "fp32 and its budget are used instead (no quiet probe is cached)")
        print(f"higgs-lora: the bf16 probe ran while other processes used {others:.1f} cores: its result "
              f"({speedup:.2f}x) is neither used nor cached; {instead}", file=sys.stderr, flush=True)
        return quiet
    cache[key] = dict(bf16_speedup=speedup, measured=time.strftime("%Y-%m-%dT%H:%M:%S"), others_cores=others)
    _write_cache(path, cache)
    return speedup


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):  # absent or damaged: measure again
        return {}


def _write_cache(path: Path, cache: dict) -> None:
    """Atomic (temp file + rename); io.atomic_path is not used because io imports torch at start-up.
    A cache that cannot be written costs a probe next time, nothing more."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(cache, f, indent=1)
        os.replace(tmp, path)
    except OSError:
        pass


def measure_speedup(model, *, device: str, n_features: int, batch_size: int, kind: str = "train",
                    seconds: float = PROBE_SECONDS) -> float:
    """fp32 step time / bf16 step time of `model` on random rows: a warm-up step each, then steps
    alternating fp32 and bf16 until `seconds` (at least PROBE_MIN_STEPS each). The median of the ratios
    of neighbouring steps: two steps a few milliseconds apart see the same load from other processes,
    where medians taken apart drifted by 1.5x on a busy 2-core machine. `kind`: train (forward,
    backward, Adam) or infer."""
    import statistics
    times = step_times(model, device=device, n_features=n_features, batch_size=batch_size, kind=kind,
                       seconds=seconds, precisions=("fp32", "bf16"))
    return statistics.median(f / b for f, b in zip(times["fp32"], times["bf16"]))


def step_times(model, *, device: str, n_features: int, batch_size: int, kind: str, seconds: float,
               precisions=("fp32", "bf16")) -> dict[str, list[float]]:
    import torch
    dev = torch.device(device)
    model = model.to(dev)
    g = torch.Generator().manual_seed(0)
    # Batches are gathered from a larger table, as training gathers them: that cost does not shrink in bf16.
    x_all = torch.randn(4 * batch_size, n_features, generator=g).to(dev)
    y_all = (torch.rand(4 * batch_size, generator=g) < 0.5).float().to(dev)
    idx = torch.randperm(4 * batch_size, generator=g)[:batch_size].to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, foreach=True) if kind == "train" else None
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step(precision: str) -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t = time.perf_counter()
        x, y = x_all.index_select(0, idx), y_all.index_select(0, idx)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            if opt is None:
                with torch.inference_mode():
                    model(x)
            else:
                loss = loss_fn(model(x).float(), y)
        if opt is not None:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return time.perf_counter() - t

    start = time.perf_counter()
    for p in precisions:
        step(p)  # first steps create kernels and buffers
    times: dict[str, list[float]] = {p: [] for p in precisions}
    while True:
        for p in precisions:
            times[p].append(step(p))
        done = min(len(t) for t in times.values()) >= PROBE_MIN_STEPS
        if done and time.perf_counter() - start >= seconds:
            return times


# ------------------------------------------------------------------------------------------------ a run's recipe

def resolve_recipe(cfg, *, device: str, make_model: Callable, previous: dict | None = None,
                   probe: Callable | None = None, native: tuple[bool, str] | None = None,
                   train_rows: int | None = None):
    """(cfg with precision fp32|bf16 and its budget for that precision, the record for config.json, the
    PrecisionChoice, or None where `previous` was reused).

    `cfg` is a TrainConfig (precision auto|fp32|bf16). Its `sized` settings (the default preset's batch,
    epochs, patience, lr) follow `train_rows` by config.budget(), the epochs as a maximum times the
    measured bf16 speed-up where bf16 is chosen; without `sized`, `scale_epochs` scales the epochs alone
    (floor(epochs x speed-up)). `previous`: the record of the run being resumed: reused as it is, never
    measured again, so a resumed run has the recipe and precision it started with."""
    reused = reuse_record(cfg, previous)
    if reused is not None:
        return reused, previous, None
    choice = choose_precision(cfg.precision, device=device, make_model=make_model, n_features=cfg.model.n_features,
                              batch_size=cfg.batch_size, probe=probe, native=native)
    speedup = choice.bf16_speedup if choice.precision == "bf16" and choice.bf16_speedup else 1.0
    sized, plan = cfg.sized_to(train_rows, speedup) if cfg.sized and train_rows else (cfg, None)
    if plan is not None:
        epochs, epochs_fp32 = sized.epochs, cfg.sized_to(train_rows, 1.0)[0].epochs
    else:
        epochs = scaled_epochs(cfg.epochs, choice) if cfg.scale_epochs else cfg.epochs
        epochs_fp32 = cfg.epochs
    record = dict(requested=cfg.precision, precision=choice.precision, reason=choice.reason,
                  bf16_speedup=choice.bf16_speedup, epochs_requested=cfg.epochs, epochs=epochs,
                  epochs_scaled=epochs != epochs_fp32)
    if plan is not None:
        record.update(train_rows=train_rows, budget={k: getattr(sized, k) for k in cfg.sized}, epochs_fp32=epochs_fp32)
    return _resolved(cfg, record), record, choice


def reuse_record(cfg, record: dict | None):
    """`cfg` resolved as `record` says, when the record was made for the same request; else None."""
    if not record or record.get("requested") != cfg.precision or record.get("epochs_requested") != cfg.epochs:
        return None
    return _resolved(cfg, record)


def _resolved(cfg, record: dict):
    import dataclasses
    values = dict(record.get("budget") or {}, epochs=record["epochs"])
    return dataclasses.replace(cfg, precision=record["precision"], **values, scale_epochs=False, sized=())


def record_line(record: dict) -> str:
    """The one line a run prints about its arithmetic."""
    line = f"precision: {record['precision']} ({record['reason']})"
    if record.get("budget"):
        parts = [f"at most {record['epochs']} epochs" + (
            f" ({record['epochs_fp32']} in fp32 x {record['bf16_speedup']:.2f})" if record.get("epochs_scaled") else "")]
        b = record["budget"]
        parts += [f"batch {b['batch_size']}"] if "batch_size" in b else []
        parts += [f"patience {b['patience']}"] if "patience" in b else []
        parts += [f"peak lr {b['lr']:.2g}"] if "lr" in b else []
        parts += [f"weight decay {b['weight_decay']:.2g}"] if "weight_decay" in b else []
        line += f"; budget for {record['train_rows']:,} training rows: " + ", ".join(parts)
    elif record.get("epochs_scaled"):
        line += (f"; epochs {record['epochs_requested']} (given for fp32) x {record['bf16_speedup']:.2f} -> "
                 f"{record['epochs']}")
    return line
