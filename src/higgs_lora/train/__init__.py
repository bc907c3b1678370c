"""Training: the loop (loop.py), its checkpoints (checkpoint.py), optimizer and schedule (optim.py). The
data it reads come from higgs_lora.data.sources (tables in memory) and higgs_lora.data.stream (shards)."""
from higgs_lora.errors import Interrupted
from higgs_lora.train.checkpoint import Checkpoint
from higgs_lora.train.loop import FitResult, fit
from higgs_lora.train.optim import learning_rate, make_optimizer

__all__ = ["Checkpoint", "FitResult", "Interrupted", "fit", "learning_rate", "make_optimizer"]
