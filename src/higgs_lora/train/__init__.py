"""Training: the loop (loop.py), its checkpoints, optimizer and schedule, and the data sources it reads
(sources.py for tables in memory, stream.py for shard directories streamed from disk)."""
from higgs_lora.errors import Interrupted
from higgs_lora.train.checkpoint import Checkpoint
from higgs_lora.train.loop import FitResult, fit
from higgs_lora.train.optim import learning_rate, make_optimizer
from higgs_lora.train.sources import DataSource, TableSource, TensorData, seed_key
from higgs_lora.train.stream import ShardSource, ShardStream

__all__ = ["Checkpoint", "DataSource", "FitResult", "Interrupted", "ShardSource", "ShardStream", "TableSource",
           "TensorData", "fit", "learning_rate", "make_optimizer", "seed_key"]
