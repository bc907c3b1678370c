"""Experiment tracking, off by default: MLflow or TensorBoard, behind one small interface.

A run calls, in order: `start(params=...)`, `log_epoch(row)` after every epoch (a history.jsonl row),
`log_metrics(metrics)` with the final metrics.json, `log_artifacts()` once the run directory is
written, `end()`. `track_run_dir()` replays a finished run directory through a tracker.

Tracking must never cost a run: every back-end call goes through `Tracker`'s guard, so the first
failure (server down, disk full, package missing) prints one warning and turns tracking off for the
rest of the run; training, models and reports carry on as if tracking had never been asked for.

MLflow: by default a SQLite store `sqlite:///<run dir>/mlflow.db` with the artifacts beside it in
`<run dir>/mlartifacts/` (MLflow 3 refuses its plain-file `mlruns/` store by default); a tracking URI
in MLFLOW_TRACKING_URI (a server, a shared database) wins. TensorBoard: event files in
`<run dir>/tensorboard/`: per-epoch scalars (`base/loss`, ...), final metrics (`final/adapted/roc_auc`,
...) and the ROC figure.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from higgs_lora.errors import UserError

KINDS = ("mlflow", "tensorboard")
EXPERIMENT = "higgs-lora"
# What a run directory holds that is not worth uploading: resumable state and the trackers' own files.
SKIP = {"checkpoints", "mlflow.db", "mlartifacts", "tensorboard", ".write-test", ".lock"}
EPOCH_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "samples_per_s")


def flatten(d: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists become JSON text (MLflow params are strings)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def final_scalars(metrics: dict) -> dict[str, float]:
    """The numbers of a metrics.json worth charting: per-model test metrics, the merge check, timings."""
    out = {}
    for key, value in flatten(metrics).items():
        if key.startswith(("data.", "distributed.")) or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and value == value:  # NaN (skipped phases) is left out
            out[key] = float(value)
    return out


class Tracker:
    """The interface, and the guard every back-end runs behind. The base class tracks nothing."""

    kind = "none"

    def __init__(self, run_dir, *, run_name: str | None = None):
        self.run_dir = Path(run_dir)
        self.run_name = run_name or self.run_dir.name
        self.active = True
        self.failed = False  # set when a back-end call failed and tracking turned itself off

    # Public calls: guarded. Back-ends implement the underscored ones.
    def start(self, *, params: dict) -> None:
        self._guard(self._start, flatten(params))

    def log_epoch(self, row: dict) -> None:
        """One history row: {'phase': 'base', 'epoch': 3, 'loss': ..., 'val_loss': ..., ...}."""
        values = {f"{row['phase']}/{k}": float(row[k]) for k in EPOCH_KEYS if row.get(k) is not None}
        self._guard(self._log_epoch, values, int(row["epoch"]))

    def log_metrics(self, metrics: dict) -> None:
        self._guard(self._log_metrics, final_scalars(metrics))

    def log_artifacts(self) -> None:
        self._guard(self._log_artifacts)

    def end(self, *, failed: bool = False) -> None:
        self._guard(self._end, failed)
        self.active = False

    def _guard(self, call, *args) -> None:
        if not self.active:
            return
        try:
            call(*args)
        except Exception as e:  # noqa: BLE001 - any failure of a tracker must leave the run alone
            self.active, self.failed = False, True
            warnings.warn(f"{self.kind} tracking failed and is off for the rest of this run "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                          f"the run itself continues", RuntimeWarning, stacklevel=3)

    def _start(self, params: dict) -> None: ...
    def _log_epoch(self, values: dict, step: int) -> None: ...
    def _log_metrics(self, values: dict) -> None: ...
    def _log_artifacts(self) -> None: ...
    def _end(self, failed: bool) -> None: ...

    def artifact_files(self) -> list[Path]:
        return sorted(p for p in self.run_dir.rglob("*")
                      if p.is_file() and not SKIP.intersection(p.relative_to(self.run_dir).parts)
                      and ".tmp" not in p.name)


class MLflowTracker(Tracker):
    kind = "mlflow"

    def _start(self, params: dict) -> None:
        from mlflow.tracking import MlflowClient
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        artifact_location = None
        if not uri:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{(self.run_dir / 'mlflow.db').resolve()}"
            artifact_location = (self.run_dir / "mlartifacts").resolve().as_uri()
        if uri.startswith("http"):
            # MLflow retries a dead server for minutes by default; a run should not wait that long to warn.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else self.client.create_experiment(EXPERIMENT, artifact_location=artifact_location))
        self.run_id = self.client.create_run(experiment_id, run_name=self.run_name).info.run_id
        from mlflow.entities import Param
        # MLflow params are strings of at most 6,000 characters; lists travel as JSON.
        batch = [Param(k, (json.dumps(v) if isinstance(v, (list, tuple)) else str(v))[:6000])
                 for k, v in params.items()]
        for i in range(0, len(batch), 100):  # MLflow's limit per batch
            self.client.log_batch(self.run_id, params=batch[i:i + 100])

    def _log_epoch(self, values: dict, step: int) -> None:
        self._log(values, step)

    def _log_metrics(self, values: dict) -> None:
        self._log(values, 0)

    def _log(self, values: dict, step: int) -> None:
        import time

        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def _log_artifacts(self) -> None:
        for path in self.artifact_files():
            folder = path.parent.relative_to(self.run_dir).as_posix()
            self.client.log_artifact(self.run_id, str(path), artifact_path=None if folder == "." else folder)

    def _end(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


class TensorBoardTracker(Tracker):
    kind = "tensorboard"

    def _start(self, params: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter
        self.log_dir = self.run_dir / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        table = "\n".join(f"| {k} | {v} |" for k, v in params.items())
        self.writer.add_text("params", "| setting | value |\n|---|---|\n" + table, 0)

    def _log_epoch(self, values: dict, step: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def _log_metrics(self, values: dict) -> None:
        for k, v in values.items():
            self.writer.add_scalar("final/" + k.replace(".", "/"), v, 0)
        self.writer.flush()

    def _log_artifacts(self) -> None:
        # TensorBoard keeps figures, not files: the ROC curves, drawn from the run's test predictions.
        from higgs_lora.io import read_json
        from higgs_lora.report.plots import read_predictions, roc_curves, roc_figure
        metrics = self.run_dir / "metrics.json"
        curves = roc_curves(read_predictions(self.run_dir / "test_predictions.npz"),
                            read_json(metrics) if metrics.exists() else {})
        figure = roc_figure(curves)
        if figure is not None:
            self.writer.add_figure("roc", figure, 0, close=False)
        self.writer.flush()

    def _end(self, failed: bool) -> None:
        self.writer.close()


def make_tracker(kind: str | None, run_dir, *, run_name: str | None = None) -> Tracker:
    """The tracker for `kind` (None: one that does nothing). Unknown kinds are the user's error;
    a missing package is a tracking failure: one warning, and the run goes on."""
    if kind in (None, "", "none"):
        tracker = Tracker(run_dir, run_name=run_name)
        tracker.active = False
        return tracker
    if kind not in KINDS:
        raise UserError(f"--track must be one of {', '.join(KINDS)}, got {kind!r}")
    return (MLflowTracker if kind == "mlflow" else TensorBoardTracker)(run_dir, run_name=run_name)


def track_run_dir(run_dir, *, kind: str, run_name: str | None = None) -> Tracker:
    """Log a finished run directory (config.json, history.jsonl, metrics.json, files) to a tracker."""
    from higgs_lora.io import read_json
    from higgs_lora.report.plots import read_history
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.json").exists():
        raise UserError(f"{run_dir}: no metrics.json, not a finished run directory")
    tracker = make_tracker(kind, run_dir, run_name=run_name)
    config = read_json(run_dir / "config.json") if (run_dir / "config.json").exists() else {}
    tracker.start(params={k: config[k] for k in ("train", "data") if k in config})
    for row in read_history(run_dir / "history.jsonl"):
        tracker.log_epoch(row)
    tracker.log_metrics(read_json(run_dir / "metrics.json"))
    tracker.log_artifacts()
    tracker.end()
    return tracker
