import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from higgs_lora.data import simulate as sim
from higgs_lora.data.simulate import simulate, simulated_table, write_higgs_csv
from higgs_lora.data.standardize import Standardizer
from higgs_lora.data.table import HIGGS_FEATURES
from higgs_lora.errors import UserError
from higgs_lora.model.network import ResidualMLP

REAL = Path(__file__).parent / "data" / "higgs_real_sample.csv"
COL = {name: i for i, name in enumerate(HIGGS_FEATURES)}


@pytest.fixture(scope="module")
def large():
    return simulate(200_000, seed=11)


@pytest.fixture(scope="module")
def real():
    rows = np.loadtxt(REAL, delimiter=",", dtype=np.float64)
    return rows[:, 1:], rows[:, 0]


def test_shapes_dtypes_and_ranges():
    x, y = simulate(5000, seed=1)
    assert x.shape == (5000, 28) and x.dtype == np.float32 and x.flags.c_contiguous
    assert y.shape == (5000,) and y.dtype == np.uint8 and set(np.unique(y)) == {0, 1}
    assert np.isfinite(x).all()
    phis = [COL[n] for n in HIGGS_FEATURES if n.endswith("phi")]
    assert np.abs(x[:, phis]).max() <= 1.7425 + 1e-4
    assert np.abs(x[:, COL["lepton_eta"]]).max() < 2.5
    assert np.abs(x[:, [COL[f"jet{i}_eta"] for i in range(1, 5)]]).max() < 3.0 + 0.2   # smeared after the cut
    for i, unit in enumerate(sim.BTAG_UNITS):
        values = np.unique(x[:, COL[f"jet{i + 1}_btag"]])
        np.testing.assert_allclose(values, np.float32([0, unit, 2 * unit]), rtol=1e-6)
    momenta = [COL[n] for n in sim.SCALES]
    assert (x[:, momenta] >= 0).all()
    assert (x[:, [COL[f"jet{i}_pt"] for i in range(1, 5)]] * sim.SCALES["jet1_pt"] > sim.JET_PT_MIN).all()


def test_same_seed_same_events_whatever_the_length():
    x1, y1 = simulate(3000, seed=5)
    x2, y2 = simulate(3000, seed=5)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    # The first rows do not depend on how many are asked for (blocks are seeded, not chunks of the call).
    x3, y3 = simulate(sim.BLOCK + 1000, seed=5)
    np.testing.assert_array_equal(x3[:3000], x1)
    np.testing.assert_array_equal(y3[:3000], y1)
    x4, _ = simulate(3000, seed=6)
    assert not np.array_equal(x1, x4)
    assert simulate(0, seed=1)[0].shape == (0, 28)


def test_signal_fraction(large):
    _, y = large
    assert abs(y.mean() - 0.53) < 0.006          # binomial sd at 200k is 0.0011


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True])
def test_bad_arguments_name_the_field(bad):
    with pytest.raises(UserError, match="number of events"):
        simulate(bad, seed=0)
    with pytest.raises(UserError, match="seed"):
        simulate(10, seed=bad)


def realism(sim_x, real_x):
    """Per feature: (ok, text). Momenta, masses and b-tags: mean and std within 25% of the real sample's;
    eta and phi: std within 25% and mean within 0.25 of the real one (both are ~0)."""
    rows = {}
    for name, i in COL.items():
        r, s = real_x[:, i], sim_x[:, i].astype(np.float64)
        std_ok = abs(s.std() / r.std() - 1) <= 0.25
        if name.endswith(("eta", "phi")):
            mean_ok = abs(s.mean() - r.mean()) <= 0.25
        else:
            mean_ok = abs(s.mean() / r.mean() - 1) <= 0.25
        rows[name] = (mean_ok and std_ok, f"{name}: real {r.mean():.3f}/{r.std():.3f} sim {s.mean():.3f}/{s.std():.3f}")
    return rows


def test_features_resemble_the_real_sample(large, real):
    rows = realism(large[0], real[0])
    assert len(rows) == 28
    failing = [text for ok, text in rows.values() if not ok]
    assert failing == []  # every feature, not most of them


@pytest.mark.parametrize("name,label,nominal", [
    ("m_bb", 1, sim.M_H), ("m_wwbb", 1, sim.M_H0), ("m_wbb", 1, sim.M_HPM),
    ("m_jjj", 0, sim.M_TOP), ("m_jlv", 0, sim.M_TOP), ("m_jj", 0, sim.M_W), ("m_lv", 0, sim.M_W),
])
def test_mass_peaks_where_the_physics_puts_them(large, name, label, nominal):
    x, y = large
    gev = x[y == label, COL[name]].astype(np.float64) * sim.SCALES[name]
    counts, edges = np.histogram(gev, bins=np.arange(0.3, 2.0, 0.04) * nominal)
    mode = edges[counts.argmax()] + 0.02 * nominal
    assert abs(mode / nominal - 1) < 0.15, (name, mode)


def test_a_small_network_learns_it_like_real_higgs():
    torch.manual_seed(0)
    x, y = simulate(100_000, seed=3)
    n_train = 80_000
    standardizer = Standardizer.fit(x[:n_train])
    z = torch.from_numpy(standardizer.transform(x))
    t = torch.from_numpy(y.astype(np.float32))
    model = ResidualMLP()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for _ in range(2):
        for idx in torch.randperm(n_train).split(512):
            opt.zero_grad()
            loss_fn(model(z[idx]), t[idx]).backward()
            opt.step()
    with torch.no_grad():
        scores = model(z[n_train:]).numpy()
    auc = roc_auc_score(y[n_train:], scores)
    assert 0.75 <= auc <= 0.93, auc


def test_table():
    table = simulated_table(2000, seed=9)
    x, y = simulate(2000, seed=9)
    np.testing.assert_array_equal(table.features, x)
    np.testing.assert_array_equal(table.labels, y)
    assert table.source == "simulated:events=2000:seed=9"
    assert table.feature_names == HIGGS_FEATURES
    assert table.fingerprint == simulated_table(2000, seed=9).fingerprint
    assert len({table.fingerprint, simulated_table(2001, seed=9).fingerprint,
                simulated_table(2000, seed=10).fingerprint}) == 3


# ---------------------------------------------------------------- the file format

def printf(values) -> list[str]:
    return ["%.18e" % float(v) for v in np.asarray(values, dtype=np.float32)]


def formatted(values) -> list[str]:
    cells = sim._format_e18(np.asarray(values, dtype=np.float32))
    return [bytes(c[c != 0]).decode()[:-1] for c in cells]        # drop the separator


def test_formatting_matches_printf_on_awkward_values():
    rng = np.random.default_rng(0)
    edge = np.float32([0.0, -0.0, 1, 10, 100, 1000, 1e4, 9999.999, 1e-4, 1.00000005e-4, 9.9999997e-05, 0.1, 0.5,
                       2.5, -1.7425, 1e-45, 1.2e-38, 3.4e38, -1e30, np.inf, -np.inf, np.nan, 999.99994, 1e-5])
    spread = (rng.standard_normal(50_000) * 10.0 ** rng.integers(-6, 6, 50_000)).astype(np.float32)
    anything = rng.integers(0, 2**32, 50_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    for values in (edge, spread, anything):
        assert formatted(values) == printf(values)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=1, max_size=50))
def test_formatting_matches_printf_property(values):
    assert formatted(values) == printf(values)


def test_writes_the_real_file_byte_for_byte(tmp_path, real):
    x, y = real
    raw = REAL.read_bytes()
    write_higgs_csv(tmp_path / "a.csv", x.astype(np.float32), y.astype(np.uint8), workers=1)
    assert (tmp_path / "a.csv").read_bytes() == raw
    write_higgs_csv(tmp_path / "a.csv.gz", x.astype(np.float32), y.astype(np.uint8), workers=1)
    assert gzip.decompress((tmp_path / "a.csv.gz").read_bytes()) == raw
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "a.csv.gz"]     # no temporaries left


def test_parallel_chunks_make_one_valid_gzip(tmp_path, monkeypatch):
    monkeypatch.setattr(sim, "_WRITE_ROWS", 700)
    x, y = simulate(3000, seed=2)
    write_higgs_csv(tmp_path / "s.csv.gz", x, y, workers=2)
    text = gzip.decompress((tmp_path / "s.csv.gz").read_bytes())
    rows = np.loadtxt(text.decode().splitlines(), delimiter=",")
    np.testing.assert_array_equal(rows[:, 0], y)
    np.testing.assert_array_equal(rows[:, 1:].astype(np.float32), x)
    write_higgs_csv(tmp_path / "s.csv", x, y, workers=1)
    assert (tmp_path / "s.csv").read_bytes() == text


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "out.csv"
    target.write_text("old\n")

    def broken(chunk):
        raise OSError("disk full")

    monkeypatch.setattr(sim, "_encode_chunk", broken)
    x, y = simulate(100, seed=1)
    with pytest.raises(OSError):
        write_higgs_csv(target, x, y, workers=1)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]
    with pytest.raises(ValueError):
        write_higgs_csv(target, x, y[:10])
