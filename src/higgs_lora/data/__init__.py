"""Reading, caching, splitting, standardizing and simulating tabular data."""
from higgs_lora.data.split import Split, class_balance, format_balance, split_rows
from higgs_lora.data.standardize import Standardizer
from higgs_lora.data.table import HIGGS_FEATURES, Table, default_feature_names

__all__ = ["Split", "class_balance", "format_balance", "split_rows", "Standardizer", "HIGGS_FEATURES", "Table",
           "default_feature_names"]
