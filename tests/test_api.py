"""The Python API against its references: the CLI (same functions, same numbers, same error messages),
scikit-learn's metrics, ONNX Runtime, Keras' own predictions, and the trackers' readers."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import higgs_lora as hl
from higgs_lora.cli import main
from conftest import synthetic_xy, write_higgs_csv
from higgs_lora.errors import UserError

DATA = Path(__file__).parent / "data"
SMALL = dict(epochs=2, ft_epochs=1, batch_size=256)
CLI_SMALL = ["--preset", "notebook", "--epochs", "2", "--batch-size", "256", "--no-progress", "--train-rows", "1500",
             "--test-rows", "500"]


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    return write_higgs_csv(tmp_path_factory.mktemp("api") / "higgs.csv", 4000)


@pytest.fixture(scope="module")
def data(csv):
    return hl.load_data(csv, train_rows=1500, test_rows=500, device="cpu", progress=False)


@pytest.fixture(scope="module")
def trained(data):
    recipe = hl.recipe("notebook", **SMALL)
    base = hl.fit(data, recipe=recipe, progress=False)
    adapted = hl.finetune(hl.adapt(base, recipe=recipe), data, recipe=recipe, progress=False)
    return base, adapted


def test_import_stays_light():
    code = ("import sys, higgs_lora as hl; hl.__version__; "
            "print('torch' in sys.modules, 'higgs_lora.api' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_public_names_are_the_api_even_after_every_module_is_imported():
    import importlib
    import pkgutil
    for m in pkgutil.walk_packages(hl.__path__, "higgs_lora."):
        if not m.name.endswith("__main__"):
            importlib.import_module(m.name)  # a submodule named like an API function must not shadow it
    from higgs_lora import api
    for name in api.__all__:
        assert getattr(hl, name) is getattr(api, name), name


def test_data_parts_and_split(data, csv):
    assert data.split.to_dict() == dict(rows=4000, train_rows=1500, val_rows=0, extra_rows=2000, test_rows=500)
    x, y = data.part("test")
    raw = np.loadtxt(csv, delimiter=",", dtype=np.float32)[-500:]
    np.testing.assert_array_equal(x, raw[:, 1:])
    np.testing.assert_array_equal(y, raw[:, 0].astype(np.uint8))
    xs, _ = data.part("train", standardized=True)
    np.testing.assert_allclose(xs.mean(axis=0), 0, atol=1e-4)
    again = hl.split(data, train_rows=1000, test_rows=1000, val_fraction=0.1)
    assert (again.split.train_rows, again.split.val_rows, again.split.test_rows) == (1000, 100, 1000)
    np.testing.assert_allclose(again.standardizer.mean, data.source.table.features[:900].mean(axis=0), rtol=1e-5)
    assert "4,000 rows x 28 features" in repr(data)


def test_same_numbers_as_the_cli(csv, data, tmp_path):
    """Train and evaluate through the API and through the CLI: identical weights and metrics."""
    recipe = hl.recipe("notebook", **SMALL)
    base = hl.fit(data, recipe=recipe, out=tmp_path / "api", progress=False)
    ours = hl.evaluate(base, data)
    assert main(["train", "--data", str(csv), "--out", str(tmp_path / "cli"), *CLI_SMALL]) == 0
    assert main(["evaluate", str(tmp_path / "cli" / "base.safetensors"), "--data", str(csv),
                 "--json", str(tmp_path / "cli.json")]) == 0
    theirs = json.loads((tmp_path / "cli.json").read_text())["metrics"]
    assert ours.to_dict() | {"part": None, "rows": None} == theirs | {"part": None, "rows": None}
    assert (tmp_path / "api" / "base.safetensors").read_bytes() == (tmp_path / "cli" / "base.safetensors").read_bytes()


def test_errors_carry_the_cli_messages(tmp_path, capsys):
    with pytest.raises(UserError) as caught:
        hl.load_data(tmp_path / "missing.csv", progress=False)
    assert main(["train", "--data", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "out")]) != 0
    assert str(caught.value) in capsys.readouterr().err
    with pytest.raises(UserError, match="unknown preset 'fast'"):
        hl.recipe("fast")
    with pytest.raises(UserError, match="--epochs must be >= 0"):
        hl.recipe("notebook", epochs=-1)


def test_metrics_match_scikit_learn(trained, data):
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, log_loss, roc_auc_score
    _, adapted = trained
    m = hl.evaluate(adapted, data)
    x, y = data.part("test")
    p = hl.predict(adapted, x)
    assert m.rows == 500 and m.part == "test"
    assert m.accuracy == pytest.approx(accuracy_score(y, p > 0.5))
    assert m.balanced_accuracy == pytest.approx(balanced_accuracy_score(y, p > 0.5))
    assert m.f1 == pytest.approx(f1_score(y, p > 0.5))
    assert m.roc_auc == pytest.approx(roc_auc_score(y, p), abs=1e-6)
    assert m.log_loss == pytest.approx(log_loss(y, p.astype(np.float64)), rel=1e-4)


def test_results_print_and_convert(trained, data):
    pd = pytest.importorskip("pandas", reason="pandas is not installed")
    base, adapted = trained
    mb, ma = hl.evaluate(base, data), hl.evaluate(adapted, data)
    table = hl.compare(base=mb, adapted=ma)
    frame = table.to_frame()
    assert list(frame.columns) == ["base", "adapted", "difference"]
    assert frame.loc["roc_auc", "difference"] == pytest.approx(ma.roc_auc - mb.roc_auc)
    assert table.to_dict()["adapted"]["accuracy"] == ma.accuracy
    assert "ROC AUC" in repr(table) and "<table>" in table._repr_html_()
    assert mb.to_frame().set_index("metric").loc["f1", "value"] == mb.f1
    assert "roc_auc" in repr(mb) and "<td>ROC AUC</td>" in mb._repr_html_()
    history = adapted.history
    assert [(r["phase"], r["epoch"]) for r in history.rows] == [("base", 1), ("base", 2), ("finetune", 1)]
    assert isinstance(history.to_frame(), pd.DataFrame) and history.to_dict()["epoch"] == [1, 2, 1]
    assert "finetune" in repr(history) and "<table>" in history._repr_html_()
    assert history.plot() is not None and hl.plot_roc(data, base=base, adapted=adapted) is not None
    with pytest.raises(TypeError, match="takes Metrics"):
        hl.compare(base=mb.to_dict())


def test_adapt_finetune_merge(trained, data):
    base, adapted = trained
    assert (adapted.trainable_params, adapted.frozen_params) == (5748, 78081)
    assert base.adapters == [] and len(adapted.adapters) == 7 and base.trainable_params == 78081  # base untouched
    assert not np.allclose(hl.predict(base, data.part("test")[0]), hl.predict(adapted, data.part("test")[0]))
    merged = hl.merge(adapted, data=data)
    assert merged.adapters == [] and merged.network.n_params() == 78081 and merged.kind == "merged"
    assert 0 <= merged.merge_max_abs_diff <= 1e-5
    shown = adapted._repr_html_()   # what a notebook shows for a model
    assert "<td>5,748 / 78,081</td>" in shown and "adapters on 7 layers" in shown
    assert adapted.fingerprint[:16] in shown and adapted.base_fingerprint[:16] in shown
    assert "<td>merge max |diff|</td>" in merged._repr_html_() and "<td>merged</td>" in merged._repr_html_()
    x, _ = data.part("test")
    np.testing.assert_allclose(hl.predict(merged, x), hl.predict(adapted, x), atol=1e-5)
    with pytest.raises(UserError, match="no adapters to merge"):
        hl.merge(base)
    with pytest.raises(UserError, match="already has adapters"):
        hl.adapt(adapted)


def test_fine_tuning_validates_on_the_end_of_the_extra_rows_and_keeps_its_best_epoch(trained, data):
    """ft_val_fraction / ft_patience (the default preset's 0.05 / 2): the last rows of the extra part
    validate, the epoch of the lowest validation loss is what the adapted network holds at the end. A
    learning rate high enough to diverge makes the best epoch an early one."""
    base, _ = trained
    recipe = hl.recipe("notebook", **{**SMALL, "ft_epochs": 8}, ft_lr=0.2, ft_val_fraction=0.25, ft_patience=2)
    adapted = hl.finetune(hl.adapt(base, recipe=recipe), data, recipe=recipe, progress=False)
    losses = [r["val_loss"] for r in adapted.history.rows if r["phase"] == "finetune"]
    best = losses.index(min(losses))
    assert len(losses) == best + 1 + 2 < 8            # stopped 2 epochs after its best, before the last
    assert losses[-1] > 1.5 * losses[best]             # and the last epoch was much worse
    fit_rows, val_rows = data.split.extra_parts(0.25)
    assert (fit_rows.start, fit_rows.stop, val_rows.stop) == (1500, 3000, 3500) and val_rows.start == 3000
    held = data.source.part(val_rows, adapted.standardizer, batch_size=256)
    kept_loss, _ = held.loss_and_accuracy(adapted.network, precision="fp32")
    assert kept_loss == pytest.approx(losses[best], rel=1e-6)


def test_save_and_load_models_and_adapters(trained, data, tmp_path):
    base, adapted = trained
    x, _ = data.part("test")
    hl.save_model(base, tmp_path / "base")
    hl.save_adapter(adapted, tmp_path / "adapter")
    loaded = hl.load_model(tmp_path / "base", adapter=tmp_path / "adapter")
    np.testing.assert_array_equal(hl.predict(loaded, x), hl.predict(adapted, x))
    assert loaded.base_fingerprint == base.fingerprint == adapted.base_fingerprint
    with pytest.raises(UserError, match="file exists"):
        hl.save_model(base, tmp_path / "base")
    with pytest.raises(UserError, match="merge the adapters first"):
        hl.save_model(adapted, tmp_path / "other")
    other = hl.fit(data, recipe=hl.recipe("notebook", epochs=1, seed=9), progress=False)
    hl.save_model(other, tmp_path / "other")
    with pytest.raises(UserError, match="trained on another base"):
        hl.load_model(tmp_path / "other", adapter=tmp_path / "adapter")


def test_predict_file_streams_like_the_cli(trained, csv, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    base, _ = trained
    hl.save_model(base, tmp_path / "base")
    rows = hl.predict_file(base, data=csv, out=tmp_path / "p.parquet", chunk_rows=1000)
    assert main(["predict", str(tmp_path / "base.safetensors"), "--data", str(csv), "--out",
                 str(tmp_path / "cli.parquet"), "--precision", "fp32"]) == 0  # the default of both, said out loud
    ours, theirs = pq.read_table(tmp_path / "p.parquet"), pq.read_table(tmp_path / "cli.parquet")
    assert rows == 4000 and ours.equals(theirs)
    x, _ = synthetic_xy(4000)
    np.testing.assert_allclose(ours["probability"].to_numpy(), hl.predict(base, x), atol=1e-6)


def test_export_onnx_matches_onnx_runtime(trained, data, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    _, adapted = trained
    path = hl.export_onnx(adapted, out=tmp_path / "deploy", include_standardization=True)
    x, _ = data.part("test")
    got = ort.InferenceSession(str(path)).run(["probability"], {"features": x})[0][:, 0]
    np.testing.assert_allclose(got, hl.predict(adapted, x), atol=1e-6)


def test_import_keras_matches_keras(tmp_path):
    pytest.importorskip("h5py")
    model = hl.import_keras(DATA / "notebook_model" / "model.keras", stats=DATA / "notebook_model" / "stats.json")
    features = np.loadtxt(DATA / "higgs_real_sample.csv", delimiter=",", dtype=np.float32)[:, 1:]
    keras = np.loadtxt(DATA / "notebook_model" / "keras_predictions.txt")
    np.testing.assert_allclose(hl.predict(model, features), keras, atol=1e-6)
    assert hl.save_model(model, tmp_path / "imported").exists()
    assert json.loads((tmp_path / "imported.json").read_text())["kind"] == "imported"
    assert hl.load_model(tmp_path / "imported").kind == "imported"


def test_train_with_tracking(data, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    with pytest.raises(UserError, match="needs out="):
        hl.fit(data, recipe="notebook", track="tensorboard")
    model = hl.fit(data, recipe=hl.recipe("notebook", **SMALL), out=tmp_path / "tb", track="tensorboard",
                     progress=False)
    events = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    events.Reload()
    assert [(e.step, pytest.approx(e.value)) for e in events.Scalars("base/loss")] == \
        [(r["epoch"], r["loss"]) for r in model.history.rows]
    lines = (tmp_path / "tb" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_run_is_the_cli_run(csv, tmp_path):
    metrics = hl.run(csv, out=tmp_path / "run", recipe=hl.recipe("notebook", **SMALL), train_rows=1500,
                     test_rows=500, report=False, progress=False)
    assert metrics["lora"]["trainable_params"] == 5748 and metrics["merge_max_abs_diff"] <= 1e-5
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["adapted"]["roc_auc"] == metrics["adapted"]["roc_auc"]


def test_simulated_data_like_the_cli():
    data = hl.load_data(events=3000, progress=False)
    assert data.source.source.startswith("simulated:") and data.rows == 3000
    assert torch.from_numpy(data.part("train")[0]).shape == (545, 28)


def test_a_shard_directory_works_like_its_file(csv, data, tmp_path):
    assert main(["shard", str(csv), "--out", str(tmp_path / "shards"), "--rows-per-shard", "1000"]) == 0
    shards = hl.load_data(tmp_path / "shards", train_rows=1500, test_rows=500, progress=False)
    assert shards.split == data.split
    np.testing.assert_array_equal(shards.part("test")[0], data.part("test")[0])
    np.testing.assert_allclose(shards.standardizer.mean, data.standardizer.mean, rtol=1e-6)
    model = hl.fit(shards, recipe=hl.recipe("notebook", epochs=1, batch_size=256), progress=False)
    assert hl.evaluate(model, shards) == hl.evaluate(model, data)  # streamed or in memory: the same numbers
