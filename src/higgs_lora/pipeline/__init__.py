"""The workflows, one layer above training, reporting and export: the preparation path (data.py), the
shared phases (phases.py), the whole run (run.py), the single steps (steps.py) and output directories
(rundir.py). Keyword arguments and small results: the commands and Python callers use them alike."""
from higgs_lora.pipeline.data import DataSpec, Prepared, load_data, prepare_data
from higgs_lora.pipeline.run import run
from higgs_lora.pipeline.steps import Trained, evaluate, export, finetune, import_keras, merge, predict, train

__all__ = ["DataSpec", "Prepared", "Trained", "evaluate", "export", "finetune", "import_keras", "load_data", "merge",
           "predict", "prepare_data", "run", "train"]
