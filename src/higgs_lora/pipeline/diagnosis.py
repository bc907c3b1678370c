"""`higgs-lora doctor`: what this machine is, what `--precision auto` picks on it and why, and how fast it
trains and predicts in fp32 and bf16: the lines to paste into a bug report, and to hold the README's
figures against."""
from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import sys

from higgs_lora import __version__
from higgs_lora.hardware import machine

PROBE_SECONDS = 1.5   # per kind (training, inference): ~3 s in all


def diagnose(*, model_config, batch_size: int, seconds: float = PROBE_SECONDS) -> dict:
    """Everything `doctor` reports, as a JSON-able dict. `model_config`: the network to measure."""
    import torch

    from higgs_lora.model.network import ResidualMLP

    flags = machine.cpu_flags()
    native, native_why = machine.native_bf16("cpu")
    cores = machine.usable_cores()
    threads = machine.thread_setting()
    gpus = [dict(index=i, name=torch.cuda.get_device_name(i), bf16=machine.native_bf16(f"cuda:{i}")[0])
            for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    device = "cuda" if gpus else "cpu"

    def make_model():
        return ResidualMLP.from_config(model_config)
    # Measured afresh (and the cached probe replaced): a probe cached while the machine was busy is wrong.
    choice = machine.choose_precision("auto", device=device, make_model=make_model,
                                       n_features=model_config.n_features, batch_size=batch_size,
                                       probe=functools.partial(machine.cached_probe, refresh=True))
    probe = {}
    for kind, rows in (("train", batch_size), ("infer", 2048 if device == "cpu" else 1 << 16)):
        times = machine.step_times(make_model(), device=device, n_features=model_config.n_features,
                                    batch_size=rows, kind=kind, seconds=seconds)
        probe[kind] = {p: rows / statistics.median(t) for p, t in times.items()}
        probe[kind]["bf16_speedup"] = statistics.median(f / b for f, b in zip(times["fp32"], times["bf16"]))
    return dict(
        higgs_lora=__version__, python=platform.python_version(), torch=torch.__version__,
        platform=platform.platform(),
        cpu=dict(model=machine.cpu_model(), isa=machine.cpu_isa(),
                 flags=sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4", "bf16", "asimd", "sve"))),
                 native_bf16=native, native_bf16_reason=native_why),
        cores=dict(usable=cores.n, reason=cores.reason, os_cpu_count=os.cpu_count(),
                   torch_threads=torch.get_num_threads(), threads_reason=threads.reason),
        gpus=gpus, device=device,
        auto=dict(precision=choice.precision, reason=choice.reason, bf16_speedup=choice.bf16_speedup),
        probe=dict(model=model_config.to_dict(), batch=batch_size, seconds_per_kind=seconds,
                   train_samples_per_s=probe["train"], inference_rows_per_s=probe["infer"]),
        load_average=list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    )


def format_report(d: dict) -> str:
    c, k, p = d["cpu"], d["cores"], d["probe"]
    gpus = ", ".join(f"cuda:{g['index']} {g['name']} (bf16 {'yes' if g['bf16'] else 'no'})" for g in d["gpus"]) or "none"
    tr, inf = p["train_samples_per_s"], p["inference_rows_per_s"]
    speed = "faster" if tr["bf16_speedup"] >= 1 else "slower"
    lines = [
        f"higgs-lora {d['higgs_lora']}  Python {d['python']}  torch {d['torch']}  {d['platform']}",
        f"CPU:        {c['model']}",
        f"ISA level:  {c['isa']} (torch.backends.cpu.get_cpu_capability)  flags: {' '.join(c['flags']) or '-'}",
        f"native bf16: {'yes' if c['native_bf16'] else 'no'} ({c['native_bf16_reason']})",
        f"cores:      {k['usable']} usable ({k['reason']}); os.cpu_count {k['os_cpu_count']}",
        f"threads:    {k['torch_threads']} ({k['threads_reason']})",
        f"GPUs:       {gpus}",
        f"auto:       {d['auto']['precision']} on {d['device']} ({d['auto']['reason']})",
        f"probe ({d['device']}, width {p['model']['width']}, {p['model']['n_blocks']} blocks, batch {p['batch']}, "
        f"~{2 * p['seconds_per_kind']:g} s):",
        f"  training   fp32 {tr['fp32']:>12,.0f} samples/s   bf16 {tr['bf16']:>12,.0f} samples/s   "
        f"bf16 {tr['bf16_speedup']:.2f}x ({speed})",
        f"  inference  fp32 {inf['fp32']:>12,.0f} rows/s      bf16 {inf['bf16']:>12,.0f} rows/s      "
        f"bf16 {inf['bf16_speedup']:.2f}x",
    ]
    if d["load_average"]:
        lines.append("load average: " + " ".join(f"{x:.2f}" for x in d["load_average"])
                     + "  (other busy processes slow the probe)")
    return "\n".join(lines)


def command(*, model_config, batch_size: int, as_json: bool) -> None:
    d = diagnose(model_config=model_config, batch_size=batch_size)
    print(json.dumps(d, indent=1) if as_json else format_report(d))
    sys.stdout.flush()
