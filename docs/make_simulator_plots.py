"""Regenerate the simulator's figures in docs/img/ and print the realism table of docs/simulator.md.

usage: python docs/make_simulator_plots.py [--events N] [--seed S] [--only-conditions]

Each feature panel overlays signal and background of the simulation (lines, N events) and of the real
sample (points, 1,000 events of UCI HIGGS; normalized densities, coarse bins because it is small).
"""
import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from higgs_lora.data import simulate as sim  # noqa: E402
from higgs_lora.data.table import HIGGS_FEATURES  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "tests" / "data" / "higgs_real_sample.csv"
IMG = ROOT / "docs" / "img"
SIGNAL, BACKGROUND = "#c0392b", "#2e6db4"


def panel(ax, name, sim_x, sim_y, real_x, real_y):
    both = np.concatenate([sim_x, real_x])
    lo, hi = np.quantile(both, [0.002, 0.995])
    fine, coarse = np.linspace(lo, hi, 61), np.linspace(lo, hi, 16)
    if name.endswith("btag"):                # three values: the same bins for both, so heights compare
        unit = both.max() / 2
        fine = coarse = unit * np.array([-0.25, 0.25, 0.75, 1.25, 1.75, 2.25])
    for label, color, text in ((1, SIGNAL, "signal"), (0, BACKGROUND, "background")):
        ax.hist(sim_x[sim_y == label], bins=fine, density=True, histtype="step", color=color, lw=1.2,
                label=f"simulated {text}")
        counts, edges = np.histogram(real_x[real_y == label], bins=coarse, density=True)
        centres = 0.5 * (edges[1:] + edges[:-1])
        ax.plot(centres, counts, "o", ms=3, color=color, label=f"real {text} (1,000 events)")
    ax.set_title(name, fontsize=9)
    ax.tick_params(labelsize=7)
    ax.set_yticks([])


def grid(names, path, cols, sim_x, sim_y, real_x, real_y, title):
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 2.3 * rows))
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        i = HIGGS_FEATURES.index(name)
        panel(ax, name, sim_x[:, i], sim_y, real_x[:, i], real_y)
        if name == "m_lv":
            ax.set_yscale("log")         # most events sit exactly at the W mass (the constraint's real root)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.05 * 3 / rows, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=9, frameon=False)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def masses_in_gev(sim_x, sim_y, path):
    """The reconstructed masses before scaling, with the masses the physics puts in."""
    marks = {"m_jj": [sim.M_W], "m_jjj": [sim.M_TOP], "m_lv": [sim.M_W], "m_jlv": [sim.M_TOP],
             "m_bb": [sim.M_H], "m_wbb": [sim.M_HPM], "m_wwbb": [sim.M_H0]}
    fig, axes = plt.subplots(2, 4, figsize=(13, 5.4))
    axes.flat[-1].axis("off")
    for ax, (name, nominal) in zip(axes.flat, marks.items()):
        gev = sim_x[:, HIGGS_FEATURES.index(name)] * sim.SCALES[name]
        bins = np.linspace(0, np.quantile(gev, 0.99), 80)
        for label, color, text in ((1, SIGNAL, "signal"), (0, BACKGROUND, "background")):
            ax.hist(gev[sim_y == label], bins=bins, density=True, histtype="step", color=color, lw=1.3, label=text)
        for m in nominal:
            ax.axvline(m, color="k", ls=":", lw=1)
        ax.set_title(f"{name} (GeV); dotted: {nominal[0]:g}", fontsize=9)
        ax.set_yticks([])
        ax.tick_params(labelsize=8)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Simulated masses before scaling", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# What each named condition should show: the features it moves, in GeV where it is a momentum or mass.
CONDITION_FEATURES = {
    "mass-600-450": ("m_wwbb", "m_wbb", "m_bb"),
    "jes-up": ("jet1_pt", "m_jj", "m_bb"),
    "pileup-high": ("missing_energy_magnitude", "m_jlv", "jet1_btag"),
}


def conditions_figure(events, seed, path):
    """Each named shift beside nominal (same seed): the features it moves, signal and background."""
    nominal = sim.simulate(events, seed=seed)
    fig, axes = plt.subplots(len(CONDITION_FEATURES), 3, figsize=(12, 3.0 * len(CONDITION_FEATURES)))
    for row, (name, features) in zip(axes, CONDITION_FEATURES.items()):
        shifted = sim.simulate(events, seed=seed, conditions=sim.CONDITION_PRESETS[name])
        for ax, feature in zip(row, features):
            i = HIGGS_FEATURES.index(feature)
            scale = sim.SCALES.get(feature, 1.0)
            values = [x[:, i] * scale for x, _ in (nominal, shifted)]
            lo, hi = np.quantile(np.concatenate(values), [0.002, 0.99])
            bins = np.linspace(lo, hi, 61)
            if feature.endswith("btag"):
                unit = values[0].max() / 2
                bins = unit * np.array([-0.25, 0.25, 0.75, 1.25, 1.75, 2.25])
            for (x, y), ls, which in ((nominal, "-", "nominal"), (shifted, "--", name)):
                for label, color, text in ((1, SIGNAL, "signal"), (0, BACKGROUND, "background")):
                    ax.hist(x[y == label, i] * scale, bins=bins, density=True, histtype="step", color=color,
                            ls=ls, lw=1.2, label=f"{which} {text}")
            unit = " (GeV)" if feature in sim.SCALES else ""
            ax.set_title(f"{name}: {feature}{unit}", fontsize=9)
            ax.set_yticks([])
            ax.tick_params(labelsize=7)
        row[0].legend(fontsize=7)
    fig.suptitle(f"Named conditions (dashed) beside nominal (solid), {events:,} events each", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def realism_table(sim_x, real_x):
    print("| feature | real mean | real std | simulated mean | simulated std | within 25% |")
    print("|---|---:|---:|---:|---:|:---:|")
    passed = 0
    for i, name in enumerate(HIGGS_FEATURES):
        r, s = real_x[:, i], sim_x[:, i].astype(np.float64)
        std_ok = abs(s.std() / r.std() - 1) <= 0.25
        angle = name.endswith(("eta", "phi"))
        mean_ok = abs(s.mean() - r.mean()) <= 0.25 if angle else abs(s.mean() / r.mean() - 1) <= 0.25
        passed += mean_ok and std_ok
        print(f"| {name} | {r.mean():.3f} | {r.std():.3f} | {s.mean():.3f} | {s.std():.3f} | "
              f"{'yes' if mean_ok and std_ok else 'NO'} |")
    print(f"\n{passed} of {len(HIGGS_FEATURES)} features within tolerance")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only-conditions", action="store_true", help="only the conditions figure")
    args = parser.parse_args()
    IMG.mkdir(parents=True, exist_ok=True)
    conditions_figure(min(args.events, 200_000), args.seed, IMG / "sim_conditions.png")
    if args.only_conditions:
        return
    rows = np.loadtxt(REAL, delimiter=",")
    real_x, real_y = rows[:, 1:], rows[:, 0]
    sim_x, sim_y = sim.simulate(args.events, seed=args.seed)
    IMG.mkdir(parents=True, exist_ok=True)
    low, high = HIGGS_FEATURES[:21], HIGGS_FEATURES[21:]
    grid(low, IMG / "sim_low_level.png", 4, sim_x, sim_y, real_x, real_y,
         "Low-level features: simulation (lines) vs real HIGGS sample (points)")
    grid(high, IMG / "sim_high_level.png", 4, sim_x, sim_y, real_x, real_y,
         "High-level features: simulation (lines) vs real HIGGS sample (points)")
    masses_in_gev(sim_x, sim_y, IMG / "sim_masses_gev.png")
    realism_table(sim_x, real_x)


if __name__ == "__main__":
    main()
