"""`higgs-lora doctor`: this machine, what `--precision auto` picks on it and why, and a ~3 s probe of
training and inference speed in fp32 and bf16 (higgs_lora.doctor) - the lines for a bug report."""
from __future__ import annotations


def add_parsers(sub) -> dict:
    p = sub.add_parser("doctor", help="the machine, what --precision auto picks and why, fp32/bf16 speeds (~3 s)",
                       description="Print the CPU (model, ISA level, native bf16), the cores this process may use "
                                   "and why (affinity, cgroup quota), GPUs, what --precision auto chooses for the "
                                   "default preset's network and why, and a ~3 s measurement of training and "
                                   "inference speed in fp32 and bf16. Measures the precision probe afresh and "
                                   "replaces the cached one. Paste the output into bug reports.")
    p.add_argument("--json", action="store_true", help="print the same as JSON")
    return {"doctor": doctor}


def doctor(args, argv) -> None:
    from higgs_lora.pipeline import diagnosis as d
    from higgs_lora.config import preset
    cfg = preset("default")
    d.command(model_config=cfg.model, batch_size=cfg.batch_size, as_json=args.json)
