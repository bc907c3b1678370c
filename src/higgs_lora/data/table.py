"""The in-memory form of a data set: Rows (float32 features, uint8 labels, optional weights and sample
ids) with their feature names, where they came from and a fingerprint."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from higgs_lora.data.rows import Rows, SampleInfo

# Column order of the UCI HIGGS file after the label (Baldi, Sadowski, Whiteson 2014).
HIGGS_FEATURES = [
    "lepton_pT", "lepton_eta", "lepton_phi", "missing_energy_magnitude", "missing_energy_phi",
    "jet1_pt", "jet1_eta", "jet1_phi", "jet1_btag", "jet2_pt", "jet2_eta", "jet2_phi", "jet2_btag",
    "jet3_pt", "jet3_eta", "jet3_phi", "jet3_btag", "jet4_pt", "jet4_eta", "jet4_phi", "jet4_btag",
    "m_jj", "m_jjj", "m_lv", "m_jlv", "m_bb", "m_wbb", "m_wwbb",
]


@dataclass
class Table:
    features: np.ndarray        # float32 [rows, n_features], C-contiguous (may be a read-only memmap)
    labels: np.ndarray          # uint8 [rows], values 0/1
    feature_names: list[str]
    source: str                 # path of the file read, or "simulated:..." for the built-in data
    fingerprint: str            # identifies the content the table came from (file hash or simulator settings)
    weights: np.ndarray | None = None   # float32 [rows] event weights (sample scale included); None: all 1
    sample: np.ndarray | None = None    # int16 [rows] index into `samples`; None: one sample
    samples: list[SampleInfo] = field(default_factory=list)
    weight_expr: str | None = None      # how `weights` were made (e.g. "genWeight*sf_lep"), for metrics.json

    def __post_init__(self):
        Rows(self.features, self.labels, self.weights, self.sample)  # checks the shapes agree

    @property
    def rows(self) -> int:
        return self.features.shape[0]

    @property
    def n_features(self) -> int:
        return self.features.shape[1]

    @property
    def weighted(self) -> bool:
        return self.weights is not None

    def all_rows(self) -> Rows:
        return Rows(self.features, self.labels, self.weights, self.sample)

    def read(self, start: int, stop: int) -> Rows:
        """Rows start..stop-1 (views), as ShardSet.read gives them from disk."""
        return self.all_rows().slice(start, stop)


def default_feature_names(n_features: int) -> list[str]:
    return list(HIGGS_FEATURES) if n_features == len(HIGGS_FEATURES) else [f"f{i}" for i in range(n_features)]
