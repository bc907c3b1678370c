"""The in-memory form of a data set: float32 features, uint8 labels, names and a fingerprint."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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

    def __post_init__(self):
        if self.features.ndim != 2 or self.features.shape[0] != self.labels.shape[0]:
            raise ValueError(f"features {self.features.shape} and labels {self.labels.shape} do not match")

    @property
    def rows(self) -> int:
        return self.features.shape[0]

    @property
    def n_features(self) -> int:
        return self.features.shape[1]

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Features and labels of rows start..stop-1 (views), as ShardSet.read gives them from disk."""
        return self.features[start:stop], self.labels[start:stop]


def default_feature_names(n_features: int) -> list[str]:
    return list(HIGGS_FEATURES) if n_features == len(HIGGS_FEATURES) else [f"f{i}" for i in range(n_features)]
