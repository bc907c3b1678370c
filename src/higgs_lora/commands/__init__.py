"""The subcommands: one module per command or small group, each with add_parsers(subparsers), which
declares its commands' arguments, and one function per command, `name(args, argv)`, that turns them
into a pipeline call and prints what a person needs. Modules import PyTorch only inside the functions
that train or predict, so `--help`, `prepare`, `simulate` and `report` start without it."""
from higgs_lora.commands import data, doctor, models, report, run, strategies, study, training

# In the order `higgs-lora --help` lists them.
MODULES = (run, training, models, data, report, strategies, study, doctor)
