"""Event weights in training: the policies (class balance, negative weights), the weighted loss against
hand computations and an independent path (integer weights = repeated rows), all-ones weights bit-identical
to none, shards with weights.npy, and the flags."""
import numpy as np
import pytest
import torch

from conftest import synthetic_xy
from higgs_lora.config import Recipe, TrainConfig
from higgs_lora.data import Standardizer
from higgs_lora.data.cache import write_arrays
from higgs_lora.data.table import Table
from higgs_lora.errors import UserError
from higgs_lora.model.network import ResidualMLP
from higgs_lora.hardware.runtime import predict_logits
from higgs_lora.data.sources import TableSource, TensorData
from higgs_lora.train import fit
from higgs_lora.data.weighting import AS_READ, Policy, make_plan

CPU = torch.device("cpu")


def _table(rows=1200, weights=None, seed=0):
    x, y = synthetic_xy(rows, seed=seed)
    return Table(features=x, labels=y, feature_names=[f"f{i}" for i in range(28)], source="test", fingerprint="t",
                 weights=weights)


def _train(table, *, policy=AS_READ, epochs=2, batch_size=128, val=True):
    source = TableSource(table, CPU)
    train, val_rows = slice(0, 1000), slice(1000, table.rows)
    std = source.fit_standardizer(train)
    torch.manual_seed(5)
    model = ResidualMLP(width=16, head_width=8, n_blocks=1)
    result = fit(model, source.part(train, std, batch_size=batch_size, policy=policy),
                 Recipe(epochs=epochs, lr=3e-3, seed=1),
                 val=source.part(val_rows, std, batch_size=batch_size, policy=policy) if val else None,
                 progress=False, verbose=False)
    return model, result


def _equal_models(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("negative", ["keep", "zero", "drop-in-training"])
def test_all_ones_weights_are_bit_identical_to_none(negative):
    plain, r0 = _train(_table(), policy=Policy(negative_weights=negative))
    ones, r1 = _train(_table(weights=np.ones(1200, dtype=np.float32)), policy=Policy(negative_weights=negative))
    assert _equal_models(plain, ones)
    assert [(h["loss"], h["val_loss"], h["val_accuracy"]) for h in r0.history] == \
        [(h["loss"], h["val_loss"], h["val_accuracy"]) for h in r1.history]
    # and weights do change the model: the comparison above can fail
    w = np.random.default_rng(0).uniform(0.2, 3.0, 1200).astype(np.float32)
    assert not _equal_models(plain, _train(_table(weights=w), policy=Policy(negative_weights=negative))[0])


def test_all_ones_weights_enter_training_as_none():
    ones = np.ones(50, dtype=np.float32)
    labels = np.arange(50) % 2
    assert make_plan(ones, labels, Policy()) is None
    assert make_plan(None, labels, Policy()) is None
    assert make_plan(ones * 3, labels, Policy()) is None   # all alike: after the mean, the plain loss
    assert make_plan(ones, labels, Policy(class_balance="equal")) is None   # balanced classes already


def test_auto_balances_weighted_data_only():
    y = np.array([1, 0, 0, 0], dtype=np.uint8)
    auto = Policy(class_balance="auto")
    assert make_plan(None, y, auto) is None and make_plan(np.ones(4, np.float32), y, auto) is None
    w = np.array([1.0, 1.0, 2.0, 1.0], dtype=np.float32)
    assert make_plan(w, y, auto) == make_plan(w, y, Policy(class_balance="equal"))


def test_plan_by_hand():
    w = np.array([2.0, -1.0, 1.0, 4.0, 3.0, 1.0], dtype=np.float32)
    y = np.array([1, 1, 0, 0, 0, 0], dtype=np.uint8)
    # keep, no balance: w / mean(w); mean = 10/6
    np.testing.assert_allclose(make_plan(w, y, Policy()).apply(w, y), w / (10 / 6), rtol=1e-6)
    # zero: negatives 0, the mean over all 6 rows (11/6); drop-in-training: over the 5 rows that remain
    zero = np.array([2.0, 0.0, 1.0, 4.0, 3.0, 1.0])
    np.testing.assert_allclose(make_plan(w, y, Policy(negative_weights="zero")).apply(w, y), zero / (11 / 6),
                               rtol=1e-6)
    np.testing.assert_allclose(make_plan(w, y, Policy(negative_weights="drop-in-training")).apply(w, y),
                               zero / (11 / 5), rtol=1e-6)
    # equal: signal sums 1 (keep), background 9 -> each class 5, then the mean over 6 rows (10/6)
    got = make_plan(w, y, Policy(class_balance="equal")).apply(w, y)
    np.testing.assert_allclose(got, np.array([10, -5, 5 / 9, 20 / 9, 15 / 9, 5 / 9]) / (10 / 6), rtol=1e-6)
    assert got[y == 1].sum() == pytest.approx(got[y == 0].sum(), rel=1e-6)
    assert got.mean() == pytest.approx(1.0, rel=1e-6)
    # unweighted data with class balance: 2 signal, 4 background rows
    np.testing.assert_allclose(make_plan(None, y, Policy(class_balance="equal")).apply(None, y),
                               [1.5, 1.5, 0.75, 0.75, 0.75, 0.75], rtol=1e-6)


def test_plan_refuses_classes_or_parts_without_positive_weight():
    y = np.array([1, 1, 0, 0], dtype=np.uint8)
    with pytest.raises(UserError, match="signal weights sum to"):
        make_plan(np.array([1.0, -1.0, 2.0, 1.0], dtype=np.float32), y, Policy(class_balance="equal"))
    with pytest.raises(UserError, match="training weights sum to"):
        make_plan(np.array([1.0, -1.0, 0.5, -0.5], dtype=np.float32), y, Policy())
    with pytest.raises(UserError, match="--negative-weights"):
        Policy(negative_weights="ignore")


def test_integer_weights_train_as_repeated_rows():
    """Full-batch steps: weights w (mean-normalised) give Σ w·loss / Σ w, the mean loss of the table in which
    each row appears w times. An independent path: no weights at all, the rows repeated."""
    x, y = synthetic_xy(300, seed=3)
    x = Standardizer.fit(x).transform(x)
    w = np.random.default_rng(1).integers(1, 4, 300)
    plan = make_plan(w.astype(np.float32), y, Policy())
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))

    def trained(part):
        torch.manual_seed(2)
        model = ResidualMLP(width=16, head_width=8, n_blocks=1)
        return model, fit(model, part, Recipe(epochs=3, lr=1e-3, seed=0), progress=False, verbose=False)
    weighted, rw = trained(TensorData(xt, yt, batch_size=300, weights=torch.from_numpy(plan.apply(w, y))))
    rx, ry = torch.from_numpy(np.repeat(x, w, axis=0)), torch.from_numpy(np.repeat(y, w).astype(np.float32))
    repeated, rr = trained(TensorData(rx, ry, batch_size=len(ry)))
    # float32 sums in another order: ~1e-7 relative on the loss; Adam's step is lr·g/|g|, insensitive to that
    for a, b in zip(rw.history, rr.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    for p, q in zip(weighted.state_dict().values(), repeated.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-5)


def test_weighted_validation_loss_by_hand():
    x, y = synthetic_xy(200, seed=4)
    x = Standardizer.fit(x).transform(x)
    w = np.random.default_rng(2).uniform(-0.5, 2.0, 200).astype(np.float32)
    torch.manual_seed(0)
    model = ResidualMLP(width=8, head_width=4, n_blocks=1)
    part = TensorData(torch.from_numpy(x), torch.from_numpy(y.astype(np.float32)), batch_size=64,
                      weights=torch.from_numpy(w))
    loss, acc = part.loss_and_accuracy(model, precision="fp32")
    with torch.no_grad():
        z = model(torch.from_numpy(x)).double().numpy()
    ell = np.logaddexp(0, z) - y * z     # BCE on logits
    assert loss == pytest.approx(np.sum(w * ell) / np.sum(w), rel=1e-5)
    assert acc == pytest.approx(np.sum(w * ((z > 0) == (y == 1))) / np.sum(w), rel=1e-5)


def _write_shards(root, x, y, w, rows_per_shard):
    root.mkdir()
    for i, a in enumerate(range(0, len(y), rows_per_shard)):
        folder = root / f"part-{i:05d}"
        folder.mkdir()
        write_arrays(folder, features=x[a:a + rows_per_shard], labels=y[a:a + rows_per_shard],
                     meta=dict(feature_names=[f"f{j}" for j in range(x.shape[1])]))
        if w is not None:
            np.save(folder / "weights.npy", w[a:a + rows_per_shard])
    return root


def test_shards_carry_weights_into_batches_and_validation(tmp_path):
    from higgs_lora.data.shards import open_shards
    from higgs_lora.data.stream import ShardSource
    x, y = synthetic_xy(3000, seed=5)
    x[:, 0] = np.arange(3000)   # row id, to find each batch row's weight
    w = np.random.default_rng(3).uniform(-0.3, 2.0, 3000).astype(np.float32)
    shards = open_shards(_write_shards(tmp_path / "s", x, y, w, 700))
    np.testing.assert_array_equal(shards.weights, w)
    np.testing.assert_array_equal(shards.read(650, 1500).weights, w[650:1500])
    source, rows = ShardSource(shards, CPU), slice(100, 2900)
    std = Standardizer(mean=np.zeros(28, np.float32), std=np.ones(28, np.float32))
    policy = Policy(class_balance="equal", negative_weights="zero")
    stream = source.part(rows, std, batch_size=256, policy=policy)
    expected = make_plan(w[rows], y[rows], policy).apply(w, y)
    seen = 0
    for batch in stream.batches(seed=0, phase="base", epoch=0):
        ids = batch.x[:, 0].long().numpy()
        np.testing.assert_array_equal(batch.w.numpy(), expected[ids])
        seen += len(ids)
    assert seen == rows.stop - rows.start
    # the streamed validation loss = the in-memory one on the same rows and weights
    table = TableSource(Table(features=x, labels=y, feature_names=shards.feature_names, source="t", fingerprint="t",
                              weights=w), CPU)
    torch.manual_seed(0)
    model = ResidualMLP(width=8, head_width=4, n_blocks=1)
    got = stream.loss_and_accuracy(model, precision="fp32")
    want = table.part(rows, std, batch_size=256, policy=policy).loss_and_accuracy(model, precision="fp32")
    assert got == pytest.approx(want, rel=1e-5)


def test_shards_with_and_without_weights_refused(tmp_path):
    from higgs_lora.data.shards import open_shards
    x, y = synthetic_xy(200)
    root = _write_shards(tmp_path / "s", x, y, np.ones(200, np.float32), 100)
    (root / "part-00001" / "weights.npy").unlink()
    with pytest.raises(UserError, match="part-00001: has no weights.npy, but part-00000 has one"):
        open_shards(root)


def test_shard_weights_checked(tmp_path):
    from higgs_lora.data.shards import open_shards
    x, y = synthetic_xy(200)
    w = np.ones(200, np.float32)
    w[130] = np.nan
    shards = open_shards(_write_shards(tmp_path / "s", x, y, w, 100))
    with pytest.raises(UserError, match=r"part-00001/weights.npy: row 31: weight is nan"):
        shards.read(0, 200)
    np.save(tmp_path / "s" / "part-00001" / "weights.npy", np.ones(99, np.float32))
    with pytest.raises(UserError, match="weights.npy has 99 rows, features.npy 100"):
        open_shards(tmp_path / "s")


def test_flags_reach_the_config():
    from higgs_lora.cli import build_parser
    from higgs_lora.commands.args import train_config
    for command in ("run", "train", "finetune"):
        extra = ["m.safetensors"] if command == "finetune" else []
        args = build_parser()[0].parse_args([command, *extra, "--out", "o", "--class-balance", "equal",
                                          "--negative-weights", "drop-in-training"])
        cfg = train_config(args)
        assert (cfg.class_balance, cfg.negative_weights) == ("equal", "drop-in-training")
        assert cfg.to_dict()["negative_weights"] == "drop-in-training"   # config.json, a model's provenance
    assert TrainConfig().class_balance == "auto"


# ------------------------------------------------------------------ the estimator

def test_estimator_sample_weight():
    pytest.importorskip("sklearn")
    from sklearn.metrics import accuracy_score
    from higgs_lora.sklearn import ResidualMLPClassifier
    x, y = synthetic_xy(1500, seed=6)
    w = np.random.default_rng(4).uniform(-0.2, 2.0, 1500)
    settings = dict(preset="notebook", epochs=2, batch_size=256, random_state=3)
    plain = ResidualMLPClassifier(**settings).fit(x, y)
    ones = ResidualMLPClassifier(**settings).fit(x, y, sample_weight=np.ones(1500))
    np.testing.assert_array_equal(plain.decision_function(x), ones.decision_function(x))   # bit-identical
    weighted = ResidualMLPClassifier(**settings, class_balance="equal").fit(x, y, sample_weight=w)
    # the reference: the library's loop by hand with the plan of these weights
    std = Standardizer.fit(x)
    torch.manual_seed(3)
    model = ResidualMLP(n_features=28)
    xt = torch.from_numpy(std.transform(x))
    plan = make_plan(w.astype(np.float32), y, Policy(class_balance="equal",
                                                     negative_weights=TrainConfig().negative_weights))
    fit(model, TensorData(xt, torch.from_numpy(y.astype(np.float32)), batch_size=256,
                          weights=torch.from_numpy(plan.apply(w.astype(np.float32), y))),
        Recipe(epochs=2, lr=1e-3, seed=3), progress=False, verbose=False)
    np.testing.assert_allclose(weighted.decision_function(x), predict_logits(model, xt).numpy(), rtol=1e-4, atol=1e-4)
    assert not np.allclose(weighted.decision_function(x), plain.decision_function(x), atol=1e-3)
    # score honours sample_weight as scikit-learn's scorers pass it
    assert weighted.score(x, y, sample_weight=w) == pytest.approx(accuracy_score(y, weighted.predict(x), sample_weight=w))
    weighted.adapt(x[:500], y[:500], sample_weight=w[:500], epochs=1)
    with pytest.raises(ValueError, match="sample_weight"):
        ResidualMLPClassifier(**settings).fit(x, y, sample_weight=w[:10])


# ------------------------------------------------------------------ the Python API

def test_api_sample_weight(tmp_path):
    import higgs_lora as hl
    data = hl.load_data(events=4400, device="cpu", progress=False)
    recipe = hl.recipe("notebook", epochs=1, ft_epochs=1, batch_size=256, width=16, n_blocks=1, head_width=8)
    plain = hl.fit(data, recipe=recipe, progress=False)
    ones = hl.fit(data, recipe=recipe, sample_weight=np.ones(data.rows), progress=False)
    assert _equal_models(plain.network, ones.network)
    w = np.random.default_rng(5).uniform(-0.2, 2.0, data.rows)
    weighted = hl.fit(data, recipe=hl.recipe("notebook", epochs=1, batch_size=256, width=16, n_blocks=1, head_width=8,
                                            class_balance="equal"), sample_weight=w, progress=False)
    assert weighted.provenance["train"]["class_balance"] == "equal"
    assert not _equal_models(plain.network, weighted.network)
    def adapt():   # A starts random: the same draw for each
        torch.manual_seed(0)
        return hl.adapt(plain, recipe=recipe)
    adapted_plain = hl.finetune(adapt(), data, recipe=recipe, progress=False)
    adapted_ones = hl.finetune(adapt(), data, recipe=recipe, sample_weight=np.ones(data.rows), progress=False)
    assert _equal_models(adapted_plain.network, adapted_ones.network)
    adapted_w = hl.finetune(adapt(), data, recipe=recipe, sample_weight=w, progress=False)
    assert not _equal_models(adapted_plain.network, adapted_w.network)
    assert hl.evaluate(plain, data, sample_weight=np.ones(data.rows)) == hl.evaluate(plain, data)
    with pytest.raises(UserError, match=r"one weight per row of the data, \(4400,\)"):
        hl.fit(data, recipe=recipe, sample_weight=w[:10], progress=False)


# ------------------------------------------------------------------ DDP

def test_two_processes_train_weighted_shards_as_one(tmp_path):
    """torchrun with 2 processes on shards with weights.npy: each rank streams its rows with their weights
    under the plan of the whole part; the result matches one process as closely as the unweighted DDP test
    asks (tests/test_distributed.py), and the policy is recorded."""
    import json
    from conftest import torchrun
    x, y = synthetic_xy(8000, seed=3)
    rng = np.random.default_rng(6)
    w = np.where(y == 1, 0.05, 1.0) * rng.uniform(0.5, 1.5, 8000)       # signal 1/20 of the background
    w = np.where(rng.random(8000) < 0.05, -w, w).astype(np.float32)     # 5% negative
    shards = _write_shards(tmp_path / "shards", x, y, w, 1500)
    args = ["--preset", "notebook", "--train-rows", "4000", "--test-rows", "1000", "--batch-size", "256",
            "--epochs", "3", "--ft-epochs", "1", "--class-balance", "equal", "--negative-weights", "zero",
            "--no-progress", "--no-report"]
    for n in (1, 2):
        torchrun(n, "run", "--data", shards, "--cache-dir", tmp_path / f"cache{n}", "--out", tmp_path / f"w{n}", *args)
    one, two = (json.loads((tmp_path / f"w{n}" / "metrics.json").read_text()) for n in (1, 2))
    assert two["distributed"]["world_size"] == 2
    fps = two["distributed"]["merged_fingerprints"]
    assert len(fps) == 2 and fps[0] == fps[1]
    for part in ("base", "adapted"):
        assert abs(one[part]["roc_auc"] - two[part]["roc_auc"]) < 0.02, (part, one[part], two[part])
    config = json.loads((tmp_path / "w2" / "config.json").read_text())
    assert json.dumps(config).count('"negative_weights": "zero"') >= 1


def test_write_shards_keeps_the_readers_weights(tmp_path, monkeypatch):
    """`higgs-lora shard`: where the reader gives Rows with weights, every shard gets its weights.npy."""
    from higgs_lora.data import shards as shards_module
    from higgs_lora.data.rows import Rows
    x, y = synthetic_xy(500)
    w = np.linspace(-1, 2, 500).astype(np.float32)
    monkeypatch.setattr(shards_module, "feature_names", lambda path, **kw: [f"f{j}" for j in range(28)])
    monkeypatch.setattr(shards_module, "iter_chunks", lambda path, **kw: iter(
        [Rows(x[:170], y[:170], w[:170]), Rows(x[170:], y[170:], w[170:])]))
    shards_module.write_shards("any.root", tmp_path / "out", rows_per_shard=200)
    opened = shards_module.open_shards(tmp_path / "out")
    assert [s.rows for s in opened.shards] == [200, 200, 100]
    np.testing.assert_array_equal(opened.weights, w)
    np.testing.assert_array_equal(opened.read(0, 500).features, x)
