"""Experiment tracking, read back with each tool's own reader: MLflow's client (a SQLite store and a real
`mlflow server` on localhost) and TensorBoard's event accumulator; failures warn once, the run survives."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import pytest

from higgs_lora.cli import main
from higgs_lora.report.tracking import make_tracker, track_run_dir

SMALL = ["--preset", "notebook", "--sim-events", "4000", "--train-rows", "1500", "--test-rows", "500", "--epochs", "2",
         "--ft-epochs", "1", "--batch-size", "256", "--no-progress"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tracked") / "run"
    assert main(["run", "--out", str(out), *SMALL]) == 0
    return out


@pytest.fixture
def run_dir(finished_run, tmp_path):
    """A private copy of a finished run directory, so trackers write into it freely."""
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def history(run_dir):
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def check_mlflow_run(client, run_id, run_dir):
    """Parameters, per-epoch metrics, final metrics and files, as MLflow hands them back."""
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    config = json.loads((run_dir / "config.json").read_text())
    assert run.data.params["train.lr"] == str(config["train"]["lr"])
    assert run.data.params["train.model.width"] == "128"
    for phase in ("base", "finetune"):
        rows = [r for r in history(run_dir) if r["phase"] == phase]
        logged = client.get_metric_history(run_id, f"{phase}/loss")
        assert sorted((m.step, m.value) for m in logged) == [(r["epoch"], pytest.approx(r["loss"])) for r in rows]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for model in ("base", "adapted", "merged"):
        assert run.data.metrics[f"{model}.roc_auc"] == pytest.approx(metrics[model]["roc_auc"])
    assert run.data.metrics["merge_max_abs_diff"] == pytest.approx(metrics["merge_max_abs_diff"])
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"report.html", "metrics.json", "base.safetensors", "adapter.safetensors", "merged.safetensors",
            "plots"} <= top and "checkpoints" not in top and "mlflow.db" not in top
    assert {a.path for a in client.list_artifacts(run_id, "plots")} >= {"plots/roc.png", "plots/training.png"}
    local = client.download_artifacts(run_id, "merged.json", str(run_dir.parent / "download"))
    assert Path(local).read_bytes() == (run_dir / "merged.json").read_bytes()


def test_cli_run_tracks_to_a_sqlite_store_in_the_run_directory(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    from mlflow.tracking import MlflowClient
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    assert main(["run", "--out", str(run_dir), *SMALL, "--track", "mlflow"]) == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "higgs-lora"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "run"
    check_mlflow_run(client, run.info.run_id, run_dir)
    assert (run_dir / "mlartifacts").is_dir() and not (tmp_path / "mlruns").exists()  # nothing in the cwd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real tracking server on localhost (SQLite backend, proxied artifacts), stopped at the end."""
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    port = free_port()
    log = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("mlflow server did not start:\n" + (tmp_path / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield uri, tmp_path / "server-artifacts"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def test_api_run_tracks_to_a_tracking_server(tmp_path, mlflow_server, monkeypatch):
    import higgs_lora as hl
    from mlflow.tracking import MlflowClient
    uri, artifacts = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run_dir = tmp_path / "shared-server"
    hl.run(out=run_dir, events=4000, train_rows=1500, test_rows=500, track="mlflow", progress=False,
           recipe=hl.recipe("notebook", epochs=2, ft_epochs=1, batch_size=256))
    assert not (run_dir / "mlflow.db").exists()  # the server stores it all
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("higgs-lora").experiment_id])
    assert run.info.run_name == "shared-server"
    check_mlflow_run(client, run.info.run_id, run_dir)
    assert any(p.name == "report.html" for p in artifacts.rglob("*"))  # the server holds the files


def test_cli_run_writes_tensorboard_event_files(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run_dir = tmp_path / "run"
    assert main(["run", "--out", str(run_dir), *SMALL, "--track", "tensorboard"]) == 0
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    for phase in ("base", "finetune"):
        rows = [r for r in history(run_dir) if r["phase"] == phase]
        for key in ("loss", "accuracy", "lr"):
            logged = [(e.step, e.value) for e in events.Scalars(f"{phase}/{key}")]
            assert logged == [(r["epoch"], pytest.approx(r[key], rel=1e-6)) for r in rows]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert events.Scalars("final/adapted/roc_auc")[0].value == pytest.approx(metrics["adapted"]["roc_auc"], rel=1e-6)
    assert "roc" in tags["images"]
    (image,) = events.Images("roc")
    assert image.width > 400 and image.encoded_image_string.startswith(b"\x89PNG")


def test_a_finished_run_directory_can_be_tracked_afterwards(run_dir):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    shutil.rmtree(run_dir / "plots")  # the ROC figure is drawn from the test predictions, not copied
    assert not track_run_dir(run_dir, kind="tensorboard").failed
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert "roc" in events.Tags()["images"]
    assert [e.step for e in events.Scalars("base/loss")] == [1, 2]


def test_server_down_warns_once_quickly_and_the_run_goes_on(run_dir, monkeypatch, capsys):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nobody listens there
    before = sorted(p.name for p in run_dir.iterdir())
    t = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker = track_run_dir(run_dir, kind="mlflow")
    assert time.monotonic() - t < 60
    ours = [w for w in caught if "tracking failed" in str(w.message)]
    assert len(ours) == 1 and "mlflow" in str(ours[0].message)
    assert tracker.failed and sorted(p.name for p in run_dir.iterdir()) == before
    # The same through the command line: the training finishes and writes its model.
    out = run_dir.parent / "trained"
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--sim-events", "4000", "--epochs", "1", "--batch-size", "256",
                 "--no-progress", "--track", "mlflow"]) == 0
    err = capsys.readouterr().err
    assert err.count("higgs-lora: warning: mlflow tracking failed") == 1 and "Traceback" not in err
    assert (out / "base.safetensors").exists() and (out / "history.jsonl").exists()


def test_unwritable_event_directory_warns_once(run_dir):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    (run_dir / "tensorboard").write_text("a file where the event folder should go")
    with pytest.warns(RuntimeWarning, match="tensorboard tracking failed") as caught:
        tracker = make_tracker("tensorboard", run_dir)
        tracker.start(params={"lr": 1e-3})
        tracker.log_epoch(dict(phase="base", epoch=1, loss=0.5))
        tracker.end()
    assert len([w for w in caught if "tracking failed" in str(w.message)]) == 1 and tracker.failed


def test_missing_package_is_a_warning_not_an_error(run_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.warns(RuntimeWarning, match="mlflow tracking failed.*ImportError|ModuleNotFoundError"):
        tracker = track_run_dir(run_dir, kind="mlflow")
    assert tracker.failed


def test_tracking_is_off_by_default_and_unknown_kinds_are_refused(tmp_path):
    from higgs_lora.errors import UserError
    tracker = make_tracker(None, tmp_path)
    tracker.start(params={"a": 1})
    tracker.end()
    assert not any(tmp_path.iterdir())
    with pytest.raises(UserError, match="--track must be one of mlflow, tensorboard"):
        make_tracker("wandb", tmp_path)
