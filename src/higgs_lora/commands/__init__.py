"""The subcommands: one module per group of commands, each with add_parsers(subparsers), which declares
its commands' arguments, and one function per command, `name(args, argv)`, that turns them into a
pipeline call and prints what a person needs. Modules import PyTorch only inside the functions that
train or predict, so `--help`, `prepare`, `simulate` and `report` start without it."""
from higgs_lora.commands import comparisons, machine, models, tables, training

# In the order `higgs-lora --help` lists them: run, train, finetune, the model commands, the data
# commands, report, strategies and adapt-study, doctor.
PARSERS = (training.add_parsers, models.add_parsers, tables.add_parsers, training.add_report_parser,
           comparisons.add_parsers, machine.add_parsers)
