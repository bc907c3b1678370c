"""Simulator conditions: nominal is bit-for-bit the simulator before conditions existed; each shift moves
the distribution it names, in the direction and by the amount it says, and nothing it does not."""
import hashlib

import numpy as np
import pytest

from higgs_lora.cli import main
from higgs_lora.data import simulate as sim
from higgs_lora.data.simulate import CONDITION_PRESETS, NOMINAL, Conditions, simulate, simulated_table
from higgs_lora.data.table import HIGGS_FEATURES
from higgs_lora.errors import UserError

COL = {name: i for i, name in enumerate(HIGGS_FEATURES)}
JET_PT = [COL[f"jet{i}_pt"] for i in range(1, 5)]
BTAG = [COL[f"jet{i}_btag"] for i in range(1, 5)]

# sha256 of features.tobytes() + labels.tobytes(), computed with the simulator of commit 0d479ac (before
# conditions were added). The nominal conditions must keep reproducing these events exactly.
BEFORE_CONDITIONS = {
    (100_000, 2014): "8a1e9297b5af81ee47b2c0bc52952c53779390c126962f3ebaf8511d70a0a7e8",
    (70_000, 7): "d01acf0dae0a64b625ba0efc9f9899d45a4d680a157c7460b55cef362eccff3e",
}


def _sha(x, y):
    return hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()


@pytest.mark.parametrize("n, seed", sorted(BEFORE_CONDITIONS))
def test_nominal_is_bit_for_bit_the_simulator_before_conditions(n, seed):
    assert _sha(*simulate(n, seed=seed)) == BEFORE_CONDITIONS[n, seed]
    # spelled out field by field, equal to nominal: the same events
    explicit = Conditions(m_h0=425, m_hpm=325, jet_energy_scale=1, jet_resolution=1, btag_efficiency=0.8,
                          met_soft_sigma=10, signal_fraction=0.53)
    assert explicit == NOMINAL
    assert _sha(*simulate(n, seed=seed, conditions=explicit)) == BEFORE_CONDITIONS[n, seed]


def test_version_and_fingerprint_unchanged_for_nominal_and_distinct_for_shifts():
    assert sim.SIMULATOR_VERSION == 1
    key = "higgs-lora-simulator:1:1000:5"
    assert sim.fingerprint(1000, seed=5) == hashlib.sha256(key.encode()).hexdigest()[:16]
    shifted = Conditions(jet_energy_scale=1.05)
    assert sim.fingerprint(1000, seed=5, conditions=shifted) != sim.fingerprint(1000, seed=5)
    table = simulated_table(1000, seed=5, conditions=shifted)
    assert "jet_energy_scale=1.05" in table.source
    assert simulated_table(1000, seed=5).source == "simulated:events=1000:seed=5"


@pytest.fixture(scope="module")
def nominal():
    return simulate(60_000, seed=3)


def _gev(x, name):
    return x[:, COL[name]] * sim.SCALES[name]


def test_jet_energy_scale_multiplies_jet_pt(nominal):
    x0, y0 = nominal
    x1, y1 = simulate(60_000, seed=3, conditions=Conditions(jet_energy_scale=1.05))
    np.testing.assert_array_equal(y0, y1)          # labels do not depend on the detector
    ratio = np.median(x1[:, JET_PT]) / np.median(x0[:, JET_PT])
    assert 1.03 < ratio < 1.07                     # 5% up (the pT threshold moves the median a little)
    # the lepton is not a jet: same median within noise
    assert abs(np.median(x1[:, COL["lepton_pT"]]) / np.median(x0[:, COL["lepton_pT"]]) - 1) < 0.01


def test_jet_resolution_widens_the_higgs_peak(nominal):
    x0, y0 = nominal
    x1, y1 = simulate(60_000, seed=3, conditions=Conditions(jet_resolution=1.5))
    def near_125(x, y):  # m_bb of signal: the h0 -> b b peak, fraction within 15 GeV of 125
        return np.mean(np.abs(_gev(x, "m_bb")[y == 1] - sim.M_H) < 15)
    assert near_125(x1, y1) < near_125(x0, y0) - 0.04


def test_btag_efficiency_sets_the_tight_rate(nominal):
    x0, y0 = nominal
    x1, y1 = simulate(60_000, seed=3, conditions=Conditions(btag_efficiency=0.6))
    tight = lambda x, y: np.mean(x[y == 1][:, BTAG] / np.float32(sim.BTAG_UNITS) > 1.5)  # noqa: E731
    # signal has two b jets out of four: the tight rate per jet scales with the b efficiency
    assert tight(x1, y1) == pytest.approx(tight(x0, y0) * 0.6 / 0.8, rel=0.06)


def test_pileup_widens_the_missing_energy(nominal):
    x0, y0 = nominal
    x1, _ = simulate(60_000, seed=3, conditions=Conditions(met_soft_sigma=40.0))
    assert np.mean(_gev(x1, "missing_energy_magnitude")) > np.mean(_gev(x0, "missing_energy_magnitude")) + 15


def test_heavier_higgs_moves_the_mass_peaks(nominal):
    x0, y0 = nominal
    x1, y1 = simulate(60_000, seed=3, conditions=CONDITION_PRESETS["mass-600-450"])
    np.testing.assert_array_equal(y0, y1)
    for name, shift in (("m_wwbb", 175), ("m_wbb", 125)):
        before = np.median(_gev(x0, name)[y0 == 1])
        after = np.median(_gev(x1, name)[y1 == 1])
        assert 0.5 * shift < after - before < 1.5 * shift, name
    # the background (t tbar) is untouched by the Higgs masses
    np.testing.assert_array_equal(x0[y0 == 0], x1[y1 == 0])


def test_signal_fraction(nominal):
    _, y = simulate(60_000, seed=3, conditions=Conditions(signal_fraction=0.2))
    assert y.mean() == pytest.approx(0.2, abs=0.01)


@pytest.mark.parametrize("kwargs, words", [
    (dict(m_h0=400.0), "m_h0 must be in (420.4"),
    (dict(m_hpm=200.0, m_h0=425.0), "m_hpm must be in (220.4"),
    (dict(m_h0=5000.0), "3000"),
    (dict(jet_energy_scale=0.0), "jet_energy_scale"),
    (dict(btag_efficiency=1.2), "btag_efficiency"),
    (dict(met_soft_sigma=-1.0), "met_soft_sigma"),
    (dict(signal_fraction=float("nan")), "signal_fraction must be a finite number"),
])
def test_out_of_range_conditions_fail_clearly(kwargs, words):
    with pytest.raises(UserError, match=words.replace("(", r"\(")):
        Conditions(**kwargs)


def test_cli_simulate_with_conditions(tmp_path, capsys):
    out = tmp_path / "shifted.csv"
    assert main(["simulate", "--events", "2000", "--seed", "4", "--out", str(out), "--condition", "jes-up",
                 "--met-soft-sigma", "25"]) == 0
    rows = np.loadtxt(out, delimiter=",", dtype=np.float32)
    x, y = simulate(2000, seed=4, conditions=Conditions(jet_energy_scale=1.05, jet_resolution=1.3,
                                                       met_soft_sigma=25.0))
    np.testing.assert_array_equal(rows[:, 1:], x)
    np.testing.assert_array_equal(rows[:, 0], y)
    assert "jet_energy_scale=1.05" in capsys.readouterr().out
    assert main(["simulate", "--events", "10", "--out", str(tmp_path / "bad.csv"), "--m-hpm", "400"]) == 1
    assert "m_h0 must be in (495.4" in capsys.readouterr().err


def test_simulate_help_states_the_nominal_values_and_names_every_condition():
    from higgs_lora.commands.tables import CONDITION_HELP
    assert f"a named shift: {', '.join(sorted(CONDITION_PRESETS))} (default" in CONDITION_HELP["condition"]
    for name, value in NOMINAL.__dict__.items():
        assert f"(nominal {value:g}" in CONDITION_HELP[name], name
    assert set(CONDITION_HELP) == {"condition", *NOMINAL.__dict__}


def test_unknown_condition_name_fails_clearly(tmp_path, capsys):
    assert main(["simulate", "--events", "10", "--out", str(tmp_path / "x.csv"), "--condition", "mars"]) == 1
    assert "--condition 'mars': unknown; choose one of jes-up, mass-600-450, nominal, pileup-high" in capsys.readouterr().err
