"""The default preset's budget (config.budget, issue 21): a table computed by hand from its documented rule,
the notebook preset untouched, explicit settings obeyed, a speed-up that buys only a maximum, a probe
measured under load that buys nothing, and the estimator's validation part and budget."""
import math

import pytest

from higgs_lora.hardware import machine
from higgs_lora.config import SIZED, Budget, budget, preset

from conftest import synthetic_xy


# rows -> (batch, epochs, patience, lr, weight decay), by hand from the docstring's rule:
#   batch 2048 halved (>= 128) until rows/batch >= 64; epochs max(9, min(100, ceil(750 / steps per epoch)));
#   patience max(3, ceil(epochs / 5)); lr 7e-3 sqrt(batch / 2048); wd min(10, 1e-2 (180000 / rows)^2)
TABLE = {
    300: (128, 100, 20, 7e-3 / 4, 10.0),                          # 3 steps/epoch: the epoch cap
    2_700: (128, 35, 7, 7e-3 / 4, 10.0),   # 22 steps/epoch
    27_000: (256, 9, 3, 7e-3 / math.sqrt(8), 1e-2 * (180_000 / 27_000) ** 2),  # 106 steps: 9 epochs are 954
    180_000: (2048, 9, 3, 7e-3, 1e-2),                            # the measured default: 88 steps/epoch, 792
    945_000: (2048, 9, 3, 7e-3, 1e-2),                            # --rows all of the built-in data
    9_900_000: (2048, 9, 3, 7e-3, 1e-2),                          # 11M rows: today's speed
}


@pytest.mark.parametrize("rows", TABLE)
def test_the_budget_table(rows):
    batch, epochs, patience, lr, wd = TABLE[rows]
    b = budget(rows)
    assert (b.batch_size, b.epochs, b.patience) == (batch, epochs, patience)
    assert b.lr == pytest.approx(lr, rel=1e-12) and b.weight_decay == pytest.approx(wd, rel=1e-12)
    assert math.ceil(rows / b.batch_size) * b.epochs >= min(750, 100 * math.ceil(rows / b.batch_size))


def test_the_default_preset_is_the_budget_of_the_rows_it_was_measured_at():
    cfg, b = preset("default").sized_to(180_000)
    assert set(preset("default").sized) == set(SIZED) and cfg.sized == ()
    assert {k: getattr(preset("default"), k) for k in SIZED} == {k: getattr(b, k) for k in SIZED}
    assert (cfg.val_fraction, cfg.patience) == (0.1, 3)   # validation and early stopping at every size


def test_a_faster_arithmetic_buys_a_maximum_not_patience():
    for rows in (2_700, 180_000):
        slow, fast = budget(rows), budget(rows, 1.9)
        assert fast.epochs == math.floor(slow.epochs * 1.9) and fast.patience == slow.patience
        assert (fast.batch_size, fast.lr, fast.weight_decay) == (slow.batch_size, slow.lr, slow.weight_decay)
    assert budget(2_700, 0.7) == budget(2_700)   # never fewer epochs than fp32's


def test_explicit_settings_are_obeyed_and_the_rest_follows_them():
    cfg = preset("default", batch_size=512, weight_decay=0.0)
    assert cfg.sized == ("epochs", "patience", "lr")
    sized, b = cfg.sized_to(2_700)
    assert (sized.batch_size, sized.weight_decay) == (512, 0.0)
    assert sized.epochs == b.epochs == 100 and sized.lr == pytest.approx(7e-3 * math.sqrt(512 / 2048))
    assert preset("default", epochs=4, patience=0, lr=1e-3).sized_to(2_700)[0].epochs == 4


def test_the_notebook_preset_is_the_notebook_recipe_at_every_size():
    nb = preset("notebook")
    for rows in (300, 2_700, 180_000):
        cfg, b = nb.sized_to(rows)
        assert b is None and cfg is nb
    assert (nb.epochs, nb.batch_size, nb.lr, nb.optimizer, nb.val_fraction, nb.patience, nb.sized) == \
        (10, 4096, 1e-3, "adam", 0.0, 0, ())


def resolved(speedup, rows=2_700):
    cfg = preset("default")
    return machine.resolve_recipe(cfg, device="cpu", make_model=lambda: None, train_rows=rows,
                                   probe=lambda **kw: speedup, native=(True, "mocked"))


def test_resolve_records_the_budget_and_a_loaded_probe_inflates_nothing():
    cfg, record, choice = resolved(2.0)
    assert choice.precision == "bf16" and cfg.epochs == record["epochs"] == budget(2_700, 2.0).epochs
    assert record["budget"] == budget(2_700, 2.0).to_dict() and record["epochs_fp32"] == budget(2_700).epochs
    assert "at most 70 epochs (35 in fp32 x 2.00), batch 128" in machine.record_line(record)
    cfg, record, choice = resolved(None)   # the probe ran under others' load and no quiet one is cached
    assert choice.precision == "fp32" and cfg.precision == "fp32"
    assert cfg.epochs == budget(2_700).epochs and not record["epochs_scaled"] and "busy" in record["reason"]
    again = machine.reuse_record(preset("default"), record)   # --resume: the same recipe, not re-sized
    assert (again.epochs, again.batch_size, again.weight_decay) == (cfg.epochs, cfg.batch_size, cfg.weight_decay)


def test_the_estimator_holds_out_validation_and_trains_by_the_budget():
    pytest.importorskip("sklearn")
    from higgs_lora.sklearn import ResidualMLPClassifier
    x, y = synthetic_xy(1000)
    clf = ResidualMLPClassifier(random_state=0, epochs=3).fit(x, y)
    assert isinstance(clf.budget_, Budget) and clf.budget_ == Budget(**{**budget(900).to_dict(), "epochs": 3})
    assert all(h["val_loss"] is not None for h in clf.history_)
    nb = ResidualMLPClassifier(preset="notebook", epochs=2).fit(x, y)
    assert nb.budget_ is None and all(h["val_loss"] is None for h in nb.history_)


def test_fine_tuning_validation_rows_are_the_end_of_the_extra_rows():
    from higgs_lora.data import split_rows
    s = split_rows(1100, train_rows=200, test_rows=50)          # extra: rows 200..1050
    assert s.extra_parts(0.0) == (slice(200, 1050), slice(1050, 1050))
    assert s.extra_parts(0.05) == (slice(200, 1008), slice(1008, 1050))   # round(850 x 0.05) = 42
    assert s.extra_parts(0.0001) == (slice(200, 1050), slice(1050, 1050))  # no whole row: no validation
    d = preset("default")
    assert (d.ft_val_fraction, d.ft_patience) == (0.05, 2)
    assert (preset("notebook").ft_val_fraction, preset("notebook").ft_patience) == (0.0, 0)  # the notebook's recipe
