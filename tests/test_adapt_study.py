"""adapt-study on tiny settings: the table's structure, finite in-range numbers, the choice made on
validation rows only, and the summaries computed from the rows."""
import dataclasses
import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from higgs_lora.studies import adapt_study as study
from higgs_lora.cli import main


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    assert main(["adapt-study", "--quick", "--conditions", "mass-600-450", "--out", str(out), "--threads", "1"]) == 0
    return out, json.loads((out / "adapt_study.json").read_text())


def test_quick_study_writes_a_complete_table(quick):
    out, result = quick
    assert {p.name for p in out.iterdir()} >= set(study.OUTPUT_FILES)
    methods = result["methods"]
    expected = set(study.METHODS) - (set() if study.lightgbm_available() else {"lightgbm"})
    assert set(methods) == expected
    sizes = study.QUICK.sizes
    cells = {(r["condition"], r["size"], r["seed"], r["method"]) for r in result["rows"]}
    assert cells == {("mass-600-450", n, s, m) for n in sizes for s in study.QUICK.seeds for m in methods}
    for r in result["rows"]:
        for k in ("roc_auc", "accuracy", "signal_efficiency"):
            assert 0.0 <= r[k] <= 1.0 and math.isfinite(r[k]), (r["method"], k)
        assert math.isfinite(r["log_loss"]) and r["log_loss"] > 0
        assert r["wall_s"] >= 0 and r["stored_bytes"] >= 0
        if r["method"] == "base":
            assert r["trainable_params"] == 0 and r["stored_bytes"] == 0 and r["lr"] is None
        elif r["method"] != "lightgbm":
            assert r["lr"] in study.QUICK.lrs and 1 <= r["best_epoch"] <= r["epochs_run"] <= study.QUICK.max_epochs
    rows = {(r["size"], r["method"]): r for r in result["rows"]}
    n = max(sizes)
    # rank 16 stores more than rank 1, a head less than a whole network; PiSSA keeps its initial factors
    assert rows[n, "lora-r1"]["stored_bytes"] < rows[n, "lora-r16"]["stored_bytes"]
    assert rows[n, "head"]["stored_bytes"] < rows[n, "full"]["stored_bytes"] == rows[n, "fresh-target"]["stored_bytes"]
    assert rows[n, "pissa-r4"]["stored_bytes"] > rows[n, "lora-r4"]["stored_bytes"]
    assert rows[n, "lora-r4"]["trainable_params"] == rows[n, "loraplus-r4"]["trainable_params"]
    assert rows[n, "fresh-target"]["trainable_params"] == rows[n, "full"]["trainable_params"]
    # the same base for every size: its test AUC does not depend on the number of target rows
    assert len({round(rows[s, "base"]["roc_auc"], 9) for s in sizes}) == 1
    md = (out / "adapt_study.md").read_text()
    assert "| method | 300 | 1,200 |" in md and "| lora-r4 |" in md
    assert "Crossover" in md or "win at every size" in md
    assert result["machine"]["cpu"] and result["machine"]["torch_threads"] == 1


def test_summary_and_crossover_follow_the_rows(quick):
    _, result = quick
    summary = study.summarize(result)
    rows = study.with_chosen(result)["rows"]
    assert {s["method"] for s in summary} == set(result["methods"]) | {study.CHOSEN}
    for s in summary:
        rs = [r for r in rows if (r["condition"], r["size"], r["method"]) ==
              (s["condition"], s["size"], s["method"])]
        assert s["roc_auc"] == pytest.approx(np.mean([r["roc_auc"] for r in rs]))
    c = study.crossovers(summary)["mass-600-450"]
    for p in c["sizes"]:
        cell = [s for s in summary if s["size"] == p["size"]]
        assert p["adapter_auc"] == next(s["roc_auc"] for s in cell if s["method"] == study.CHOSEN)
        assert p["other_auc"] == max(s["roc_auc"] for s in cell
                                     if not study.is_adapter(s["method"]) and s["method"] != study.CHOSEN)
        assert p["adapters_win"] == (p["adapter_auc"] >= p["other_auc"])
    if c["crossover"] is not None:
        later = [p for p in c["sizes"] if p["size"] >= c["crossover"]]
        assert not any(p["adapters_win"] for p in later)


def test_the_adapter_setting_is_chosen_on_validation_loss_not_on_test_auc(quick):
    _, result = quick
    chosen = study.chosen_adapter_rows(result["rows"])
    cells = {(r["condition"], r["size"], r["seed"]) for r in result["rows"]}
    assert {(r["condition"], r["size"], r["seed"]) for r in chosen} == cells
    for r in chosen:
        adapters = [a for a in result["rows"] if study.is_adapter(a["method"])
                    and (a["condition"], a["size"], a["seed"]) == (r["condition"], r["size"], r["seed"])]
        pick = min(adapters, key=lambda a: a["val_loss"])
        assert r["chosen"] == pick["method"] and r["roc_auc"] == pick["roc_auc"] and r["method"] == study.CHOSEN
        assert r["wall_s"] == pytest.approx(sum(a["wall_s"] for a in adapters))   # the choice costs every setting
    # made-up rows where validation and test disagree: validation decides
    rest = dict(condition="c", size=10, seed=0, accuracy=0.7, signal_efficiency=0.3, trainable_params=1,
                stored_bytes=1, wall_s=1.0)
    rows = [dict(rest, method="lora-r1", val_loss=0.50, roc_auc=0.70),
            dict(rest, method="lora-r16", val_loss=0.60, roc_auc=0.90),
            dict(rest, method="full", val_loss=0.40, roc_auc=0.80)]
    (picked,) = study.chosen_adapter_rows(rows)
    assert picked["chosen"] == "lora-r1" and picked["roc_auc"] == 0.70
    summary = study.summarize(dict(methods=["lora-r1", "lora-r16", "full"], rows=rows))
    c = study.crossovers(summary)["c"]
    assert c["sizes"][0]["adapter_auc"] == 0.70 and c["crossover"] == 10   # not 0.90: that was test-picked


def test_crossover_definition_on_made_up_numbers():
    def cell(size, adapter, other):
        return [dict(condition="c", size=size, method=study.CHOSEN, roc_auc=adapter),
                dict(condition="c", size=size, method="full", roc_auc=other)]
    summary = cell(1000, 0.9, 0.8) + cell(3000, 0.85, 0.86) + cell(10000, 0.9, 0.89) + cell(30000, 0.9, 0.95)
    c = study.crossovers(summary)["c"]
    assert c["crossover"] == 30000 and c["adapters_win_at"] == [1000, 10000]


def test_signal_efficiency_at_fixed_background_rejection():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 20000)
    scores = rng.normal(labels * 1.0, 1.0)
    eff = study.signal_efficiency(scores, labels, bkg_eff=0.1)
    threshold = np.quantile(scores[labels == 0], 0.9)
    assert eff == pytest.approx(np.mean(scores[labels == 1] > threshold))
    # a Gaussian shift of 1: the signal above the background's 90% quantile (1.2816) is P(Z > 0.2816) = 0.389
    assert eff == pytest.approx(0.389, abs=0.015)
    assert roc_auc_score(labels, scores) > 0.7


def test_validation_rows_come_from_the_target_training_rows_only():
    settings = dataclasses.replace(study.QUICK, conditions=("jes-up",))
    standardizer, _, _ = study.source_data(settings, 0)
    pool, test = study.target_data(settings, "jes-up", 0, standardizer)
    assert pool.x.shape[0] == max(settings.sizes) and test.x.shape[0] == settings.test_rows
    # the test rows follow the pool in the simulated sequence: no row of a training subset is a test row
    both = np.concatenate([pool.raw, test.raw])
    assert len(np.unique(both, axis=0)) == len(both)


def test_bad_settings_fail_clearly():
    from higgs_lora.errors import UserError
    with pytest.raises(UserError, match="unknown condition"):
        dataclasses.replace(study.QUICK, conditions=("mars",)).validate()
    with pytest.raises(UserError, match="unknown method"):
        dataclasses.replace(study.QUICK, methods=("magic",)).validate()
    with pytest.raises(UserError, match="sizes must be >= 20"):
        dataclasses.replace(study.QUICK, sizes=(5,)).validate()


def test_paired_differences_and_crossover_against_retraining_on_made_up_numbers():
    rows = [dict(condition="c", size=n, seed=s, method=m, roc_auc=v)
            for n, s, m, v in [(100, 0, "lora-r4", 0.90), (100, 0, "full", 0.88), (100, 1, "lora-r4", 0.80),
                               (100, 1, "full", 0.79), (100, 0, "lightgbm", 0.70), (100, 1, "lightgbm", 0.71)]]
    d = study.paired(dict(rows=rows), "lora-r4", "full")
    assert d["c", 100][0] == pytest.approx(0.015) and d["c", 100][1] == pytest.approx(np.std([0.02, 0.01], ddof=1))
    summary = [dict(condition="c", size=100, method=study.CHOSEN, roc_auc=0.85), dict(condition="c", size=100,
               method="full", roc_auc=0.86), dict(condition="c", size=100, method="lightgbm", roc_auc=0.70)]
    assert study.crossovers(summary)["c"]["crossover"] == 100
    assert study.crossovers(summary, against=study.RETRAINING)["c"]["crossover"] is None
