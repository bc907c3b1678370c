"""A toy Monte Carlo of the two processes in the UCI HIGGS data, with its 28 features and file format.

    signal:     g g -> H0 (425 GeV) -> W H+- (325 GeV),  H+- -> W h0 (125 GeV),  h0 -> b b
    background: g g -> t t -> W b W b                    (top 173 GeV)

In both, one W decays to a lepton and a neutrino and the other to two light jets. Every two-body decay
is isotropic in its parent's rest frame and boosted to the lab; the produced system gets a transverse
kick (balanced by an initial-state jet) and a rapidity; quarks radiate gluon jets and b quarks may lose
momentum to neutrinos. A parametrised detector smears jets, the lepton and the missing energy, keeps
events with one lepton and four jets inside the acceptance, and b-tags jets (three levels). The seven
high-level masses are then computed from the reconstructed objects, as in Baldi, Sadowski and Whiteson,
"Searching for exotic particles in high-energy physics with deep learning", Nat. Commun. 5, 4308 (2014).
See docs/simulator.md for the model, the constants and how it compares with the real data.

Conditions (the Conditions dataclass, `higgs-lora simulate --m-h0 ...`) shift the physics and the detector
by name: the heavy-Higgs masses, the jet energy scale and resolution, the b-tag efficiency, the soft
(pile-up) missing energy and the signal fraction. The nominal conditions are the constants below and give
the same events, bit for bit, as before conditions existed; shifted ones draw the same random numbers, so
a shift changes the events it acts on and nothing else.

Everything is vectorized over events. Events come from fixed-size blocks, each with its own random
stream derived from (seed, stream, block), so the output for a seed is the same however many events are
asked for: simulate(n, seed=s) is the first n rows of simulate(m, seed=s) for any m > n.

(About 500 lines, one concept: the physics, the detector and the HIGGS text format of one generator,
whose constants are documented together in docs/simulator.md; the default event count and seed are
config.SIM_EVENTS and config.SIM_SEED.)
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import itertools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from isal import igzip

from higgs_lora.data.table import HIGGS_FEATURES, Table
from higgs_lora.errors import UserError
from higgs_lora.hardware.machine import usable_cores
from higgs_lora.io import atomic_path

# Bump when anything below changes the events a seed produces (it is part of the data fingerprint).
SIMULATOR_VERSION = 1

SIGNAL_FRACTION = 0.53            # the real file has 52.99% signal

# Masses and widths in GeV. The heavy Higgs bosons are narrow compared with the detector resolution,
# and H0 -> W H+- has only 20 GeV to spare, so they get fixed masses; W and top are Breit-Wigner.
M_H0, M_HPM, M_H = 425.0, 325.0, 125.0
M_W, WIDTH_W = 80.4, 2.1
M_TOP, WIDTH_TOP = 173.0, 1.4
M_B = 4.7
W_WINDOW, TOP_WINDOW = 15.0, 20.0  # Breit-Wigner tails cut at mass +- window (keeps every decay open)

# Production: transverse momentum ~ Gamma(shape, scale), rapidity ~ Normal(0, sigma).
SYSTEM_PT_SHAPE, SYSTEM_PT_SCALE = 1.0, 45.0
SYSTEM_Y_SIGMA = 0.8
# t tbar pair mass above threshold: m_t1 + m_t2 + Gamma(shape, scale), a falling spectrum.
TTBAR_EXCESS_SHAPE, TTBAR_EXCESS_SCALE = 1.6, 60.0

# Detector. Jet energy resolution sigma_E / E = sqrt(stoch^2 / E + const^2 + (noise / E)^2), E in GeV.
JET_STOCH, JET_CONST, JET_NOISE = 1.0, 0.06, 2.0
JET_ANGLE_SIGMA = 0.03             # smearing of jet eta and phi
LEPTON_PT_SIGMA = 0.02             # relative
MET_SOFT_SIGMA = 10.0              # GeV per transverse component: pile-up, underlying event, unclustered energy
LEPTON_PT_MIN, LEPTON_ETA_MAX = 20.0, 2.5
JET_PT_MIN, JET_ETA_MAX = 20.0, 3.0   # the real file has jets out to |eta| ~ 3 (lepton only to 2.5)
TRACKER_ETA_MAX = 2.5              # no b-tag outside the tracker
ISR_ETA_SIGMA = 1.0                # pseudorapidity spread of the initial-state jet
FSR_PROBABILITY, FSR_Z_MIN, FSR_Z_MAX, FSR_ANGLE_SIGMA = 0.25, 0.1, 0.5, 0.6
B_SEMILEPTONIC, B_NU_FRACTION_MAX = 0.2, 0.3
# b-tagging: probabilities of the tight (2) and loose-only (1) tag, for b jets and for light jets.
BTAG_B_TIGHT, BTAG_B_LOOSE = 0.80, 0.17
BTAG_LIGHT_TIGHT, BTAG_LIGHT_LOOSE = 0.002, 0.004

# Output scales: each momentum or mass column is divided by its constant (GeV), chosen once so that the
# column has mean ~1 on a large simulated sample (like the real file); phi is mapped onto +-1.7425 as in
# the real file; eta is left as is; b-tag levels 0/1/2 are multiplied by the real file's per-jet unit.
SCALES = {
    "lepton_pT": 57.7, "missing_energy_magnitude": 51.0,
    "jet1_pt": 65.6, "jet2_pt": 65.6, "jet3_pt": 65.6, "jet4_pt": 65.6,   # jets are listed in random order
    "m_jj": 104.0, "m_jjj": 194.0, "m_lv": 85.5, "m_jlv": 195.9, "m_bb": 134.9, "m_wbb": 317.3, "m_wwbb": 474.1,
}
PHI_SCALE = np.pi / 1.7425
BTAG_UNITS = (1.0865381, 1.1074361, 1.2741122, 1.5509807)

BLOCK = 1 << 15                    # candidate events per random block (fixed: it defines the output)
_STREAM_LABELS, _STREAM_SIGNAL, _STREAM_BACKGROUND = 0, 1, 2
_COLUMN = {name: i for i, name in enumerate(HIGGS_FEATURES)}
_PERMUTATIONS = np.array(list(itertools.permutations(range(4))))
_SCALED = [_COLUMN[name] for name in SCALES]
_SCALE_VALUES = np.array(list(SCALES.values()), dtype=np.float32)
M_HEAVY_MAX = 3000.0               # heavy-Higgs masses above this are refused (far outside the toy's tuning)


@dataclasses.dataclass(frozen=True)
class Conditions:
    """Named shifts of the simulated physics and detector. The defaults are the nominal constants above.

    m_h0, m_hpm          heavy Higgs masses (GeV); H0 -> W H+- and H+- -> W h0 must stay open for every W
                         mass drawn: m_h0 > m_hpm + M_W + W_WINDOW and m_hpm > M_H + M_W + W_WINDOW.
    jet_energy_scale     multiplies every reconstructed jet pT (a miscalibration: 1.03 = jets read 3% high);
                         the missing energy balances what the jets gained or lost, as in a real detector.
    jet_resolution       multiplies the jet energy resolution sigma_E / E.
    btag_efficiency      probability of the tight tag for a true b jet (nominal 0.80); the loose-only tag
                         keeps its 0.17 as long as both fit in 1.
    met_soft_sigma       soft missing energy per transverse component (GeV): pile-up, underlying event.
    signal_fraction      probability that an event is signal.
    """
    m_h0: float = M_H0
    m_hpm: float = M_HPM
    jet_energy_scale: float = 1.0
    jet_resolution: float = 1.0
    btag_efficiency: float = BTAG_B_TIGHT
    met_soft_sigma: float = MET_SOFT_SIGMA
    signal_fraction: float = SIGNAL_FRACTION

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                    or not np.isfinite(value):
                raise UserError(f"condition {f.name} must be a finite number, got {value!r}")
            object.__setattr__(self, f.name, float(value))   # Python floats: the arithmetic stays float32
        hpm_min = M_H + M_W + W_WINDOW
        checks = [
            (hpm_min < self.m_hpm <= M_HEAVY_MAX, f"m_hpm must be in ({hpm_min:g}, {M_HEAVY_MAX:g}] GeV so that "
             f"H+- -> W h0 is open (m_h0 {M_H:g} + m_W {M_W:g} + {W_WINDOW:g} window), got {self.m_hpm:g}"),
            (self.m_hpm + M_W + W_WINDOW < self.m_h0 <= M_HEAVY_MAX,
             f"m_h0 must be in ({self.m_hpm + M_W + W_WINDOW:g}, {M_HEAVY_MAX:g}] GeV so that H0 -> W H+- is open "
             f"(m_hpm {self.m_hpm:g} + m_W {M_W:g} + {W_WINDOW:g} window), got {self.m_h0:g}"),
            (0.5 <= self.jet_energy_scale <= 1.5, f"jet_energy_scale must be in [0.5, 1.5], got {self.jet_energy_scale:g}"),
            (0 <= self.jet_resolution <= 5, f"jet_resolution must be in [0, 5], got {self.jet_resolution:g}"),
            (0 <= self.btag_efficiency <= 1, f"btag_efficiency must be in [0, 1], got {self.btag_efficiency:g}"),
            (0 <= self.met_soft_sigma <= 500, f"met_soft_sigma must be in [0, 500] GeV, got {self.met_soft_sigma:g}"),
            (0 <= self.signal_fraction <= 1, f"signal_fraction must be in [0, 1], got {self.signal_fraction:g}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def shifts(self) -> dict:
        """The fields that differ from nominal."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v != getattr(NOMINAL, k)}

    def describe(self) -> str:
        return ",".join(f"{k}={v:g}" for k, v in self.shifts().items()) or "nominal"


NOMINAL = Conditions()

# The named shifts used by `higgs-lora adapt-study` (docs/adaptation.md). Each moves the data enough that a
# network trained on nominal events loses accuracy on it, within what a real analysis meets.
CONDITION_PRESETS = {
    "nominal": NOMINAL,
    # another signal hypothesis: heavier H0 and H+- (the background is the same t tbar)
    "mass-600-450": Conditions(m_h0=600.0, m_hpm=450.0),
    # a detector recalibration: jets read 5% high and 30% more smeared
    "jes-up": Conditions(jet_energy_scale=1.05, jet_resolution=1.3),
    # high pile-up: four times the soft missing energy, and a lower b-tag efficiency (busier tracker)
    "pileup-high": Conditions(met_soft_sigma=40.0, btag_efficiency=0.70),
}


# ---------------------------------------------------------------- kinematics
# Everything is float32 (plenty for a toy at this precision, and twice as fast); 4-vectors are
# tuples (E, px, py, pz) of arrays. Python float constants keep numpy in float32.

F32 = np.float32


def _uniform(rng, lo, hi, shape):
    return rng.random(shape, dtype=F32) * (hi - lo) + lo


def _normal(rng, sigma, shape):
    return rng.standard_normal(shape, dtype=F32) * sigma


def _wrap_phi(phi):
    return phi - (2 * np.pi) * np.rint(phi * (0.5 / np.pi))


def _boost(p, parent, m_parent):
    """Boost `p` from the rest frame of `parent` (a lab 4-vector of mass m_parent) to the lab."""
    e, x, y, z = p
    pe, px, py, pz = parent
    dot = px * x + py * y + pz * z
    k = dot / (m_parent * (pe + m_parent)) + e / m_parent
    return ((pe * e + dot) / m_parent, x + k * px, y + k * py, z + k * pz)


def _two_body(rng, parent, m_parent, m1, m2, n):
    """Isotropic decay of `parent` into masses m1, m2; both daughters in the lab."""
    p = np.sqrt(np.maximum((m_parent**2 - (m1 + m2) ** 2) * (m_parent**2 - (m1 - m2) ** 2), 0.0)) / (2 * m_parent)
    p = np.asarray(p, dtype=F32)     # all-constant masses give a float64 scalar
    cos_t = _uniform(rng, -1.0, 1.0, n)
    phi = _uniform(rng, -np.pi, np.pi, n)
    p_t = p * np.sqrt(1.0 - cos_t * cos_t)
    d1 = _boost((np.sqrt(p * p + m1 * m1), p_t * np.cos(phi), p_t * np.sin(phi), p * cos_t), parent, m_parent)
    return d1, tuple(a - b for a, b in zip(parent, d1))


def _breit_wigner(rng, mass, width, window, n):
    edge = float(np.arctan(2 * window / width))
    return mass + 0.5 * width * np.tan(_uniform(rng, -edge, edge, n))


def _system(rng, mass, n):
    """A produced system of the given mass with a transverse kick and a rapidity spread."""
    pt = rng.standard_gamma(SYSTEM_PT_SHAPE, n, dtype=F32) * SYSTEM_PT_SCALE
    phi = _uniform(rng, -np.pi, np.pi, n)
    y = _normal(rng, SYSTEM_Y_SIGMA, n)
    mt = np.sqrt(mass * mass + pt * pt)
    return (mt * np.cosh(y), pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(y))


def _pick(mask, a, b):
    return tuple(np.where(mask, u, v) for u, v in zip(a, b))


def _signal_partons(rng, n, cond):
    m_h0, m_hpm = cond.m_h0, cond.m_hpm
    h0 = _system(rng, m_h0, n)
    m_w1 = _breit_wigner(rng, M_W, WIDTH_W, W_WINDOW, n)
    m_w2 = _breit_wigner(rng, M_W, WIDTH_W, W_WINDOW, n)
    w1, hpm = _two_body(rng, h0, m_h0, m_w1, m_hpm, n)
    w2, h = _two_body(rng, hpm, m_hpm, m_w2, M_H, n)
    b1, b2 = _two_body(rng, h, M_H, M_B, M_B, n)
    first = rng.random(n, dtype=F32) < 0.5      # which W decays to the lepton
    w_lep, w_had = _pick(first, w1, w2), _pick(first, w2, w1)
    m_lep, m_had = np.where(first, m_w1, m_w2), np.where(first, m_w2, m_w1)
    lep, nu = _two_body(rng, w_lep, m_lep, 0.0, 0.0, n)
    q1, q2 = _two_body(rng, w_had, m_had, 0.0, 0.0, n)
    return h0, lep, nu, (q1, q2, b1, b2)


def _background_partons(rng, n, cond):
    m_t1 = _breit_wigner(rng, M_TOP, WIDTH_TOP, TOP_WINDOW, n)
    m_t2 = _breit_wigner(rng, M_TOP, WIDTH_TOP, TOP_WINDOW, n)
    m_tt = m_t1 + m_t2 + rng.standard_gamma(TTBAR_EXCESS_SHAPE, n, dtype=F32) * TTBAR_EXCESS_SCALE
    tt = _system(rng, m_tt, n)
    t1, t2 = _two_body(rng, tt, m_tt, m_t1, m_t2, n)
    m_w1 = _breit_wigner(rng, M_W, WIDTH_W, W_WINDOW, n)
    m_w2 = _breit_wigner(rng, M_W, WIDTH_W, W_WINDOW, n)
    w1, b1 = _two_body(rng, t1, m_t1, m_w1, M_B, n)
    w2, b2 = _two_body(rng, t2, m_t2, m_w2, M_B, n)
    lep, nu = _two_body(rng, w1, m_w1, 0.0, 0.0, n)   # t and tbar are symmetric: t1's W is the leptonic one
    q1, q2 = _two_body(rng, w2, m_w2, 0.0, 0.0, n)
    return tt, lep, nu, (q1, q2, b1, b2)


# ---------------------------------------------------------------- showering, detector and reconstruction

def _mass(*vectors):
    e, x, y, z = (sum(v[i] for v in vectors) for i in range(4))
    return np.sqrt(np.maximum(e * e - x * x - y * y - z * z, 0.0))


def _neutrino_pz(lep, met_x, met_y):
    """Longitudinal neutrino momentum from the W-mass constraint: the smaller |pz| root, or the real part."""
    le, lx, ly, lz = lep
    pt2 = lx * lx + ly * ly
    mu = 0.5 * M_W * M_W + lx * met_x + ly * met_y
    centre = mu * lz / pt2
    disc = centre * centre - (le * le * (met_x * met_x + met_y * met_y) - mu * mu) / pt2
    return centre - np.copysign(np.sqrt(np.maximum(disc, 0.0)), centre)


def _top(key, count):
    """Mask of the `count` largest entries in each row of key [n, k]. A tiny per-column offset (in float64)
    breaks exact ties, so every row has exactly `count`."""
    key = key + np.arange(key.shape[1]) * 1e-7
    return key >= np.partition(key, key.shape[1] - count, axis=1)[:, key.shape[1] - count, None]


def _pt_eta_phi(v):
    pt = np.hypot(v[1], v[2])
    return pt, np.arcsinh(v[3] / pt), np.arctan2(v[2], v[1])


def _showered_jets(rng, system, quarks, n):
    """Jet candidates [n, 9] (pt, eta, phi; is_b [9]) from the four quarks (light, light, b, b): final-state
    radiation splits some of them, semi-leptonic b decays lose momentum to neutrinos, and an initial-state
    jet recoils against the produced system. Also returns the b decays' neutrino momentum (x, y)."""
    pt, eta, phi = (np.stack(c, axis=1) for c in zip(*(_pt_eta_phi(q) for q in quarks)))   # [n, 4]
    is_b = np.array([False, False, True, True])
    # A semi-leptonic b decay hides part of the b's momentum in a neutrino along the jet.
    lost = np.where(is_b & (rng.random((n, 4), dtype=F32) < B_SEMILEPTONIC),
                    rng.random((n, 4), dtype=F32) * B_NU_FRACTION_MAX, 0.0)
    cos_phi, sin_phi = np.cos(phi), np.sin(phi)
    nu_x = (lost * pt * cos_phi).sum(axis=1)
    nu_y = (lost * pt * sin_phi).sum(axis=1)
    pt = pt * (1.0 - lost)
    # Final-state radiation: a gluon takes a fraction z of the quark's pT at an angle; inside the jet
    # cone (R < 0.4) it stays part of the jet.
    d_eta = _normal(rng, FSR_ANGLE_SIGMA, (n, 4))
    d_phi = _normal(rng, FSR_ANGLE_SIGMA, (n, 4))
    z = np.where((rng.random((n, 4), dtype=F32) < FSR_PROBABILITY) & (d_eta * d_eta + d_phi * d_phi > 0.16),
                 _uniform(rng, FSR_Z_MIN, FSR_Z_MAX, (n, 4)), 0.0)
    # Initial-state radiation balances the produced system's transverse momentum.
    s_pt, s_phi = np.hypot(system[1], system[2]), np.arctan2(system[2], system[1])
    jets_pt = np.concatenate([pt * (1.0 - z), z * pt, s_pt[:, None]], axis=1)
    jets_eta = np.concatenate([eta, eta + d_eta, _normal(rng, ISR_ETA_SIGMA, (n, 1))], axis=1)
    jets_phi = np.concatenate([phi, _wrap_phi(phi + d_phi), _wrap_phi(s_phi + np.pi)[:, None]], axis=1)
    jets_b = np.concatenate([is_b, np.zeros(5, dtype=bool)])
    return jets_pt, jets_eta, jets_phi, jets_b, nu_x, nu_y


def _detector(rng, system, lep, nu, quarks, cond):
    """Shower, smear, apply the acceptance, b-tag and compute the 28 features of the accepted events."""
    # The lepton first: events without an accepted lepton are dropped before the (costlier) jets.
    l_pt_true, l_eta, l_phi = _pt_eta_phi(lep)
    l_pt = l_pt_true * (1.0 + _normal(rng, LEPTON_PT_SIGMA, l_pt_true.shape[0]))
    ok = (l_pt > LEPTON_PT_MIN) & (np.abs(l_eta) < LEPTON_ETA_MAX)
    l_pt_true, l_pt, l_eta, l_phi = l_pt_true[ok], l_pt[ok], l_eta[ok], l_phi[ok]
    system, nu = tuple(c[ok] for c in system), tuple(c[ok] for c in nu)
    quarks = [tuple(c[ok] for c in q) for q in quarks]
    n = l_pt.shape[0]

    pt, eta, phi, is_b, met_x, met_y = _showered_jets(rng, system, quarks, n)
    e = np.maximum(pt * np.cosh(eta), 1.0)
    sigma = np.sqrt((JET_STOCH**2 + JET_NOISE**2 / e) / e + JET_CONST**2) * cond.jet_resolution
    # (x * 1.0 is exact in floating point: the nominal conditions change no bit)
    pt_reco = pt * np.maximum(1.0 + sigma * rng.standard_normal(pt.shape, dtype=F32), 0.0) * cond.jet_energy_scale

    # Missing energy: the neutrinos plus whatever the detector mis-measured, plus soft noise.
    miss = pt - pt_reco
    l_miss = l_pt_true - l_pt
    cos_l, sin_l = np.cos(l_phi), np.sin(l_phi)
    met_x += nu[1] + (miss * np.cos(phi)).sum(axis=1) + l_miss * cos_l + _normal(rng, cond.met_soft_sigma, n)
    met_y += nu[2] + (miss * np.sin(phi)).sum(axis=1) + l_miss * sin_l + _normal(rng, cond.met_soft_sigma, n)

    # The four leading jets inside the acceptance; events with fewer than four are dropped.
    good = (pt_reco > JET_PT_MIN) & (np.abs(eta) < JET_ETA_MAX)
    ok = good.sum(axis=1) >= 4
    chosen = _top(np.where(good, pt_reco, -1.0), 4) & ok[:, None]     # exactly 4 per kept row
    m = int(ok.sum())
    pt_reco, eta, phi = (a[chosen].reshape(m, 4) for a in (pt_reco, eta, phi))
    jet_b = np.broadcast_to(is_b, chosen.shape)[chosen].reshape(m, 4)
    l_pt, l_eta, l_phi, cos_l, sin_l, met_x, met_y = (a[ok] for a in (l_pt, l_eta, l_phi, cos_l, sin_l, met_x, met_y))
    # Angles are smeared after the choice: at 0.03 it hardly moves a jet across the |eta| edge.
    eta_reco = eta + _normal(rng, JET_ANGLE_SIGMA, (m, 4))
    phi_reco = _wrap_phi(phi + _normal(rng, JET_ANGLE_SIGMA, (m, 4)))

    u = rng.random((m, 4), dtype=F32)
    tight = np.where(jet_b, cond.btag_efficiency, BTAG_LIGHT_TIGHT)
    loose = np.where(jet_b, min(BTAG_B_LOOSE, 1.0 - cond.btag_efficiency), BTAG_LIGHT_LOOSE)
    tag = np.where(u < tight, 2, np.where(u < tight + loose, 1, 0)).astype(np.int8)
    tag[np.abs(eta_reco) > TRACKER_ETA_MAX] = 0

    jx, jy = pt_reco * np.cos(phi_reco), pt_reco * np.sin(phi_reco)
    jz, je = pt_reco * np.sinh(eta_reco), pt_reco * np.cosh(eta_reco)     # jets taken as massless
    lepton = (l_pt * np.cosh(l_eta), l_pt * cos_l, l_pt * sin_l, l_pt * np.sinh(l_eta))
    nz = _neutrino_pz(lepton, met_x, met_y)
    met = np.hypot(met_x, met_y)
    neutrino = (np.hypot(met, nz), met_x, met_y, nz)

    # The two b candidates are the jets with the best tags (ties: higher pT); the other two make the W.
    is_bjet = _top(tag * 1e4 + pt_reco, 2)
    b1, b2 = zip(*(c[is_bjet].reshape(m, 2).T for c in (je, jx, jy, jz)))
    q1, q2 = zip(*(c[~is_bjet].reshape(m, 2).T for c in (je, jx, jy, jz)))
    w_had = tuple(a + b for a, b in zip(q1, q2))
    w_lep = tuple(a + b for a, b in zip(lepton, neutrino))
    m_jj, m_lv = _mass(w_had), _mass(w_lep)
    # The b that goes with the hadronic W is the one that brings it closer to the top mass.
    m_jjj1, m_jjj2 = _mass(w_had, b1), _mass(w_had, b2)
    swap = np.abs(m_jjj2 - M_TOP) < np.abs(m_jjj1 - M_TOP)
    m_jjj = np.where(swap, m_jjj2, m_jjj1)
    m_jlv = np.where(swap, _mass(w_lep, b1), _mass(w_lep, b2))
    bb = tuple(a + b for a, b in zip(b1, b2))
    m_bb = _mass(bb)
    # W b b with the hadronic W: fully measured, unlike the leptonic one (either could be the H+-'s).
    m_wbb = _mass(w_had, bb)
    m_wwbb = _mass(w_had, w_lep, bb)

    # The real file does not list its jets by pT: in it jet1 is below its 20% quantile while jet2 is above
    # its 80% quantile in 1.2% of events, which pT order makes impossible. We list them in random order.
    shown = (np.arange(m)[:, None], _PERMUTATIONS[rng.integers(0, len(_PERMUTATIONS), m)])
    pt_reco, eta_reco, phi_reco, tag = (a[shown] for a in (pt_reco, eta_reco, phi_reco, tag))
    out = np.empty((m, len(HIGGS_FEATURES)), dtype=F32)
    out[:, 0], out[:, 1], out[:, 2] = l_pt, l_eta, l_phi / PHI_SCALE
    out[:, 3], out[:, 4] = met, np.arctan2(met_y, met_x) / PHI_SCALE
    for i in range(4):
        c = _COLUMN[f"jet{i + 1}_pt"]
        out[:, c], out[:, c + 1], out[:, c + 2] = pt_reco[:, i], eta_reco[:, i], phi_reco[:, i] / PHI_SCALE
        out[:, c + 3] = tag[:, i] * BTAG_UNITS[i]
    for name, values in (("m_jj", m_jj), ("m_jjj", m_jjj), ("m_lv", m_lv), ("m_jlv", m_jlv), ("m_bb", m_bb),
                         ("m_wbb", m_wbb), ("m_wwbb", m_wwbb)):
        out[:, _COLUMN[name]] = values
    out[:, _SCALED] /= _SCALE_VALUES
    return out


# ---------------------------------------------------------------- event streams

def _rng(seed, stream, block):
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(stream, block))))


def _process_block(process, seed, block, cond):
    """The accepted events of one block of BLOCK candidates of `process` (signal or background)."""
    rng = _rng(seed, process, block)
    partons = _signal_partons if process == _STREAM_SIGNAL else _background_partons
    return _detector(rng, *partons(rng, BLOCK, cond), cond)


def _fill(out, rows, process, seed, cond):
    """Write the first len(rows) accepted events of `process` into out[rows]."""
    done, block = 0, 0
    while done < len(rows):
        events = _process_block(process, seed, block, cond)[: len(rows) - done]
        out[rows[done:done + len(events)]] = events
        done += len(events)
        block += 1


def _check(n_events, seed):
    if isinstance(n_events, bool) or not isinstance(n_events, (int, np.integer)) or n_events < 0:
        raise UserError(f"number of events must be a whole number >= 0, got {n_events!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"seed must be a whole number >= 0, got {seed!r}")


def simulate(n_events: int, *, seed: int, conditions: Conditions = NOMINAL) -> tuple[np.ndarray, np.ndarray]:
    """n_events simulated events: features float32 [n, 28] in HIGGS' column order and scaling,
    labels uint8 [n] (1 = signal, probability conditions.signal_fraction). Same seed, same events."""
    _check(n_events, seed)
    if not isinstance(conditions, Conditions):
        raise TypeError(f"conditions must be a Conditions, got {type(conditions).__name__}")
    labels = np.empty(n_events, dtype=np.uint8)
    for block, start in enumerate(range(0, n_events, BLOCK)):
        size = min(BLOCK, n_events - start)
        labels[start:start + size] = _rng(seed, _STREAM_LABELS, block).random(BLOCK)[:size] < conditions.signal_fraction
    features = np.empty((n_events, len(HIGGS_FEATURES)), dtype=np.float32)
    _fill(features, np.flatnonzero(labels == 1), _STREAM_SIGNAL, seed, conditions)
    _fill(features, np.flatnonzero(labels == 0), _STREAM_BACKGROUND, seed, conditions)
    return features, labels


def fingerprint(n_events: int, *, seed: int, conditions: Conditions = NOMINAL) -> str:
    # Nominal keeps the key it had before conditions existed (cached runs and fingerprints stay valid).
    shifted = "" if conditions == NOMINAL else ":" + conditions.describe()
    key = f"higgs-lora-simulator:{SIMULATOR_VERSION}:{n_events}:{seed}{shifted}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def simulated_table(n_events: int, *, seed: int, conditions: Conditions = NOMINAL) -> Table:
    features, labels = simulate(n_events, seed=seed, conditions=conditions)
    shifted = "" if conditions == NOMINAL else ":" + conditions.describe()
    return Table(features=features, labels=labels, feature_names=list(HIGGS_FEATURES),
                 source=f"simulated:events={n_events}:seed={seed}{shifted}",
                 fingerprint=fingerprint(n_events, seed=seed, conditions=conditions))


# ---------------------------------------------------------------- the HIGGS text format

# Python's '%.18e' (correctly rounded, like C's printf) costs about a microsecond a value, 25 minutes for
# the 319 million values of an 11M-row file. Float32 values have a short exact binary form, so the same
# text is computed here with integer arithmetic on whole arrays; values outside [1e-4, 1e4) (rare in HIGGS
# data) fall back to Python's formatting. tests/test_simulate.py checks both paths against '%.18e'.
_POW5 = np.array([5**j for j in range(23)], dtype=np.uint64)
_POW10_18, _POW10_19 = np.uint64(10**18), np.uint64(10**19)


def _digits19(mantissa, exp2, k):
    """round(mantissa * 2**exp2 * 10**(18 - k)) exactly, ties to even, for 18 - k in [15, 22]:
    the 19 significant digits of the value when k = floor(log10(value))."""
    j = (18 - k).astype(np.uint64)
    pow5 = _POW5[j]
    hi = mantissa * (pow5 >> np.uint64(32))                 # mantissa * 5**j = hi * 2**32 + lo, each < 2**56
    lo = mantissa * (pow5 & np.uint64(0xFFFFFFFF))
    shift = -(exp2 + (18 - k))                              # the value is mantissa * 5**j / 2**shift
    right = shift > 0
    s = np.minimum(np.maximum(shift, 1), 31).astype(np.uint64)   # (the bounds only guard values not kept)
    q = (hi << (np.uint64(32) - s)) + (lo >> s)
    r = lo & ((np.uint64(1) << s) - np.uint64(1))
    half = np.uint64(1) << (s - np.uint64(1))
    q += (r > half) | ((r == half) & ((q & np.uint64(1)) == 1))
    left = np.minimum(np.maximum(-shift, 0), 63).astype(np.uint64)   # no rounding: exact, below 2**64
    return np.where(right, q, ((hi << np.uint64(32)) + lo) << left)


def _pairs(texts) -> np.ndarray:
    """Two-character strings as one uint16 each (memory order), for writing into a uint16 view."""
    return np.frombuffer("".join(texts).encode(), dtype=np.uint16).copy()


# Each value is written as 26 bytes, read as 13 uint16 "pairs":
#   sign|NUL, d0, '.', d1, d2 .. d17 (8 pairs), d18, 'e', exponent sign, e1, e2, separator
_SIGN_LEAD = _pairs([sign + str(d) for sign in ("\0", "-") for d in range(10)])
_DOT_DIGIT = _pairs(["." + str(d) for d in range(10)])
_TWO_DIGITS = _pairs([f"{i:02d}" for i in range(100)])
_DIGIT_E = _pairs([str(d) + "e" for d in range(10)])
_EXP_SIGN = _pairs([sign + str(d) for sign in ("+", "-") for d in range(10)])
_DIGIT_COMMA = _pairs([str(d) + "," for d in range(10)])
_CELL = 26


def _format_e18(values: np.ndarray) -> np.ndarray:
    """'%.18e' % v + ',' for float32 values [n], as bytes [n, 26], right-aligned with NUL padding."""
    x = np.ascontiguousarray(values, dtype=np.float32).ravel()
    bits = x.view(np.uint32)
    mantissa = ((bits & 0x7FFFFF) | 0x800000).astype(np.uint64)
    exp2 = ((bits >> 23) & 0xFF).astype(np.int64) - 150
    with np.errstate(invalid="ignore"):                               # signalling NaNs are fine here
        magnitude = np.abs(x.astype(np.float64))
    zero = magnitude == 0
    fast = zero | ((magnitude >= 1e-4) & (magnitude < 1e4))
    k = np.floor(np.log10(np.where(fast & ~zero, magnitude, 1.0))).astype(np.int64)
    digits = _digits19(mantissa, exp2, np.minimum(np.maximum(k, -4), 3))
    # log10 can be one off next to a power of ten: redo those with the neighbouring exponent.
    for _ in range(2):
        fix = np.flatnonzero(fast & ~zero & ((digits >= _POW10_19) | (digits < _POW10_18)))
        if fix.size == 0:
            break
        k[fix] += np.where(digits[fix] >= _POW10_19, 1, -1)
        fast[fix] &= (k[fix] >= -4) & (k[fix] <= 3)
        digits[fix] = _digits19(mantissa[fix], exp2[fix], np.minimum(np.maximum(k[fix], -4), 3))
    blank = zero | ~fast                                              # ~fast: filled in below
    digits[blank] = 0
    k[blank] = 0

    out = np.empty((x.size, _CELL // 2), dtype=np.uint16)
    lead = (digits // _POW10_18).astype(np.int64)
    fraction = digits % _POW10_18                                     # 18 digits d1 .. d18
    out[:, 0] = _SIGN_LEAD[np.signbit(x) * 10 + lead]
    out[:, 1] = _DOT_DIGIT[(fraction // np.uint64(10**17)).astype(np.int64)]
    middle = fraction // np.uint64(10) % np.uint64(10**16)            # d2 .. d17
    for col, part in ((2, middle // np.uint64(10**8)), (6, middle % np.uint64(10**8))):
        part = part.astype(np.uint32)                                # eight digits: 32-bit arithmetic will do
        out[:, col] = _TWO_DIGITS[part // 1_000_000]
        out[:, col + 1] = _TWO_DIGITS[part // 10_000 % 100]
        out[:, col + 2] = _TWO_DIGITS[part // 100 % 100]
        out[:, col + 3] = _TWO_DIGITS[part % 100]
    out[:, 10] = _DIGIT_E[(fraction % np.uint64(10)).astype(np.int64)]
    out[:, 11] = _EXP_SIGN[(k < 0) * 10 + np.abs(k) // 10]
    out[:, 12] = _DIGIT_COMMA[np.abs(k) % 10]
    text = out.view(np.uint8)
    for i in np.flatnonzero(~fast):
        slow = ("%.18e," % float(x[i])).encode()
        text[i] = 0
        text[i, _CELL - len(slow):] = np.frombuffer(slow, dtype=np.uint8)
    return text


def format_higgs_rows(features: np.ndarray, labels: np.ndarray) -> bytes:
    """The HIGGS text of these rows: label, then the features, each '%.18e', comma-separated."""
    rows, cols = features.shape
    values = np.empty((rows, cols + 1), dtype=np.float32)
    values[:, 0] = labels
    values[:, 1:] = features
    cells = _format_e18(values).reshape(rows, cols + 1, _CELL)
    cells[:, -1, -1] = ord("\n")
    flat = cells.ravel()
    return flat[flat != 0].tobytes()


_WRITE_ROWS = 1 << 16           # rows per chunk (about 48 MB of text)


def _encode_chunk(args) -> bytes:
    features, labels, gz = args
    text = format_higgs_rows(features, labels)
    return igzip.compress(text, compresslevel=1) if gz else text


def write_higgs_csv(path, features: np.ndarray, labels: np.ndarray, *, workers: int | None = None) -> None:
    """Write rows in the UCI HIGGS text format (no header; gzip-compressed when the name ends in .gz),
    atomically. Chunks are formatted and compressed (as concatenated gzip members, which every gzip
    reader accepts) in `workers` threads, default one per CPU: numpy and isal release the GIL."""
    features = np.asarray(features)
    labels = np.asarray(labels)
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise ValueError(f"features [rows, n] and labels [rows] expected, got {features.shape} and {labels.shape}")
    gz = str(path).endswith(".gz")
    chunks = [(features[i:i + _WRITE_ROWS], labels[i:i + _WRITE_ROWS], gz)
              for i in range(0, features.shape[0], _WRITE_ROWS)]
    workers = max(1, workers or usable_cores().n)
    with atomic_path(path) as tmp, open(tmp, "wb") as f, ThreadPoolExecutor(workers) as pool:
        pending = collections.deque()                   # at most workers + 1 chunks of text in memory
        for chunk in chunks:
            pending.append(pool.submit(_encode_chunk, chunk))
            if len(pending) > workers:
                f.write(pending.popleft().result())
        while pending:
            f.write(pending.popleft().result())
