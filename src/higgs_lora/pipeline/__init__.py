"""The workflows, one layer above training, reporting and export: the preparation path (data.py), the
shared phases (phases.py), the whole run (run.py), the single steps (steps.py) and output directories
(rundir.py). Keyword arguments and small results: the commands and Python callers use them alike."""
from higgs_lora.pipeline.inputs import DataSpec, Prepared, load_data, prepare_data
from higgs_lora.pipeline.whole_run import run
from higgs_lora.pipeline.steps import (Trained, evaluate, export, export_peft, finetune, import_keras, import_peft,
                                       merge, predict, predict_samples, train)

__all__ = ["DataSpec", "Prepared", "Trained", "evaluate", "export", "export_peft", "finetune", "import_keras",
           "import_peft", "load_data", "merge", "predict", "predict_samples", "prepare_data", "run", "train"]
