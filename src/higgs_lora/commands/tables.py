"""Commands on data files: prepare (read once and cache), shard, simulate. None of them imports PyTorch."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from higgs_lora.commands.args import add_read_args
from higgs_lora.config import SIM_SEED
from higgs_lora.errors import UserError


def add_parsers(sub) -> dict:
    p = sub.add_parser("prepare", help="read a data file (or every file of a shard directory) once and cache it; "
                                       "print rows, columns, class balance")
    _table_args(p, file=("FILE|DIR", "a table file (CSV, Parquet, ROOT FILE.root[:TREE]) or a shard directory"),
                label=("NAME|INDEX|none", "label column (default: 0); 'none': a sample file, every row labelled "
                                          "--label-value"),
                weight="event weight expression, cached beside the features")
    p.add_argument("--label-value", type=int, choices=[0, 1], default=1, help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", metavar="DIR", help="cache directory")

    p = sub.add_parser("shard", help="split a big table file into a directory of array shards, streamed",
                       description="Stream FILE (CSV, .csv.gz, Parquet or ROOT, any size) into DIR/part-00000, part-00001, "
                                   "...: each holds features.npy (float32), labels.npy (uint8) and meta.json. "
                                   "Training reads such a directory (--data DIR) window by window, each torchrun "
                                   "process only its own shards. DIR appears complete or not at all.")
    _table_args(p, file=("FILE", None), label=("NAME|INDEX", "label column (default: 0)"),
                weight="event weight expression (e.g. genWeight*sf_lep): weights.npy in every shard")
    p.add_argument("--out", required=True, metavar="DIR", help="new directory for the shards")
    p.add_argument("--rows-per-shard", type=int, default=1_000_000, metavar="N",
                   help="rows per shard (default: 1,000,000, about 113 MB with 28 features)")

    p = sub.add_parser("simulate", help="write a HIGGS-format file (or, with --samples, one weighted file per "
                                        "process) from the built-in toy Monte Carlo")
    p.add_argument("--events", type=int, required=True, metavar="N", help="number of events (--samples: per process)")
    p.add_argument("--seed", type=int, default=SIM_SEED, metavar="S", help=f"seed (default: {SIM_SEED})")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", metavar="FILE", help="output .csv or .csv.gz")
    out.add_argument("--samples", metavar="DIR",
                     help="new directory: signal.root and ttbar.root (Parquet without uproot), TTree 'events' with "
                          "the 28 features, a 'weight' branch (cross section x luminosity / N, a few percent "
                          "negative) and an integer 'event' branch; docs/analysis-data.md")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    _condition_args(p)
    return {"prepare": prepare, "shard": shard, "simulate": simulate}


def _table_args(p, *, file: tuple[str, str | None], label: tuple[str, str], weight: str) -> None:
    """The table file a command reads, and how: (metavar, help) of FILE and of --label-column; --weight's help."""
    p.add_argument("file", metavar=file[0], help=file[1])
    p.add_argument("--label-column", default="0", metavar=label[0], help=label[1])
    add_read_args(p, weight=weight)


# Written out rather than read from data/simulate.py, which imports NumPy: --help stays light.
# tests/test_simulate_conditions.py checks these against simulate.NOMINAL and CONDITION_PRESETS.
CONDITION_HELP = dict(
    condition="a named shift: jes-up, mass-600-450, nominal, pileup-high (default: nominal); the options "
              "below override it field by field",
    m_h0="heavy neutral Higgs mass (nominal 425)",
    m_hpm="charged Higgs mass (nominal 325); needs m_h0 > m_hpm + 95.4 and m_hpm > 220.4 (every decay open)",
    jet_energy_scale="multiplies reconstructed jet pT (nominal 1)",
    jet_resolution="multiplies the jet energy resolution (nominal 1)",
    btag_efficiency="tight-tag probability of a true b jet (nominal 0.8)",
    met_soft_sigma="pile-up / soft missing energy per component (nominal 10 GeV)",
    signal_fraction="fraction of signal events (nominal 0.53)",
)
CONDITION_METAVARS = dict(condition="NAME", m_h0="GEV", m_hpm="GEV", met_soft_sigma="GEV", btag_efficiency="P")


def _condition_args(p) -> None:
    g = p.add_argument_group("conditions (shifts of the physics and the detector; docs/simulator.md)")
    for name, text in CONDITION_HELP.items():
        g.add_argument("--" + name.replace("_", "-"), type=str if name == "condition" else float,
                       metavar=CONDITION_METAVARS.get(name, "F"), help=text)


def _conditions(args):
    import dataclasses

    from higgs_lora.data.simulate import CONDITION_PRESETS, NOMINAL
    if args.condition is not None and args.condition not in CONDITION_PRESETS:
        raise UserError(f"--condition {args.condition!r}: unknown; choose one of {', '.join(sorted(CONDITION_PRESETS))}")
    base = CONDITION_PRESETS[args.condition] if args.condition else NOMINAL
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(base) if getattr(args, f.name) is not None}
    return dataclasses.replace(base, **fields)


def prepare(args, argv) -> None:
    if Path(args.file).is_dir():
        from higgs_lora.data.shards import open_shards
        from higgs_lora.data.split import class_balance
        t = time.perf_counter()
        shards = open_shards(args.file, label_column=args.label_column, cache_dir=args.cache_dir, progress=True)
        b = class_balance(shards.labels)
        print(f"{args.file}: {len(shards.shards)} shards, {b['rows']:,} rows x {shards.n_features} features  "
              f"signal {b['signal']:,} ({100 * b['signal_fraction']:.2f}%)  background {b['background']:,}  "
              f"ready in {time.perf_counter() - t:.2f}s")
        return
    from higgs_lora.commands.args import features, label_column
    from higgs_lora.data.read import prepare as read_and_cache
    label = label_column(args.label_column)
    s = read_and_cache(args.file, label_column=label, label_value=args.label_value if label is None else None,
                       features=features(args), weight=args.weight, tree=args.tree, cache_dir=args.cache_dir,
                       progress=True)
    print(f"{args.file}: {s['rows']:,} rows x {s['columns']} columns  signal {s['signal']:,} "
          f"({100 * s['signal_fraction']:.2f}%)  background {s['background']:,}  "
          f"{'loaded from cache' if s['from_cache'] else 'parsed and cached'} in {s['seconds']:.2f}s -> {s['cache_path']}")


def shard(args, argv) -> None:
    from higgs_lora.commands.args import features
    from higgs_lora.data.shards import write_shards
    t = time.perf_counter()
    parts = write_shards(args.file, args.out, rows_per_shard=args.rows_per_shard, label_column=args.label_column,
                         features=features(args), weight=args.weight, tree=args.tree, progress=True)
    print(f"wrote {len(parts)} shards to {args.out} in {time.perf_counter() - t:.1f}s")


def simulate(args, argv) -> None:
    from higgs_lora.data.simulate import simulate as run_simulation
    from higgs_lora.data.simulate import write_higgs_csv
    if args.events < 1:
        raise UserError(f"--events must be >= 1, got {args.events}")
    if args.samples is not None:
        from higgs_lora.data.sim_samples import write_samples
        t = time.perf_counter()
        paths = write_samples(args.samples, events=args.events, seed=args.seed, conditions=_conditions(args))
        print(f"simulated {args.events:,} events per process in {time.perf_counter() - t:.1f}s: "
              + ", ".join(str(p) for p in paths))
        return
    out = Path(args.out)
    if out.exists() and not args.force:
        raise UserError(f"--out {out}: file exists (use --force to overwrite)")
    conditions = _conditions(args)
    t = time.perf_counter()
    features, labels = run_simulation(args.events, seed=args.seed, conditions=conditions)
    t_sim = time.perf_counter() - t
    write_higgs_csv(out, features, labels)
    print(f"simulated {args.events:,} events ({conditions.describe()}) in {t_sim:.1f}s ({args.events / t_sim:,.0f}/s), "
          f"signal {labels.mean() * 100:.2f}%, written to {out} in {time.perf_counter() - t - t_sim:.1f}s")
