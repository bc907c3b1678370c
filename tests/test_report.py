"""Plots and run report, on a synthetic run directory laid out like `higgs-lora run` leaves it.

Reference implementations: sklearn for the ROC and for the metrics of the synthetic run, PIL for
decoding PNGs, a plain regex for reading the tables back."""
from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image
from sklearn import metrics as skm

from higgs_lora.errors import UserError
from higgs_lora.report.figures_of_merit import figures_of_merit
from higgs_lora.report.metrics import ROC_POINTS, roc_auc, roc_curve
from higgs_lora.report.document import METRICS, comparison_table, write_report

REPO = Path(__file__).resolve().parents[1]
N_TEST = 2000


def _metrics(labels: np.ndarray, probs: np.ndarray) -> dict:
    pred = (probs >= 0.5).astype(np.uint8)
    return dict(
        accuracy=skm.accuracy_score(labels, pred), precision=skm.precision_score(labels, pred),
        recall=skm.recall_score(labels, pred), f1=skm.f1_score(labels, pred),
        balanced_accuracy=skm.balanced_accuracy_score(labels, pred),
        specificity=skm.recall_score(labels, pred, pos_label=0), sensitivity=skm.recall_score(labels, pred),
        roc_auc=skm.roc_auc_score(labels, probs), log_loss=skm.log_loss(labels, probs.astype(np.float64)),
        confusion=skm.confusion_matrix(labels, pred).tolist())


def _balance(labels: np.ndarray) -> dict:
    signal = int(labels.sum())
    return dict(rows=int(labels.size), signal=signal, background=int(labels.size - signal),
                signal_fraction=signal / labels.size)


def build_run_dir(path: Path, *, adapted: bool = True) -> Path:
    """A run directory with exactly the files of the `higgs-lora run` contract, consistent throughout."""
    rng = np.random.default_rng(7)
    path.mkdir(parents=True, exist_ok=True)
    labels = (rng.random(N_TEST) < 0.53).astype(np.uint8)
    sign = 2.0 * labels - 1.0
    base = (1 / (1 + np.exp(-(1.1 * sign + rng.normal(0, 1.3, N_TEST))))).astype(np.float32)
    arrays = dict(labels=labels, base=base)
    train_labels = (rng.random(8000) < 0.53).astype(np.uint8)
    metrics = dict(
        data=dict(path="/data/HIGGS.csv.gz", source="csv", rows=20000, train_rows=7200, val_rows=800,
                  extra_rows=10000, test_rows=N_TEST, feature_names=[f"f{i}" for i in range(28)],
                  balance=dict(train=_balance(train_labels[:7200]), val=_balance(train_labels[7200:]),
                               extra=_balance((rng.random(10000) < 0.53).astype(np.uint8)), test=_balance(labels))),
        base=_metrics(labels, base),
        timings_s=dict(load=1.5, train=30.25, finetune=8.0 if adapted else 0.0, evaluate=0.5, merge=0.01, total=40.3),
        throughput=dict(train_samples_per_s=95000.0, finetune_samples_per_s=120000.0, inference_rows_per_s=2.5e6))
    history = [dict(phase="base", epoch=e, loss=0.66 - 0.03 * e, accuracy=0.6 + 0.02 * e, val_loss=0.65 - 0.025 * e,
                    val_accuracy=0.61 + 0.018 * e, lr=1e-3, seconds=7.5, samples_per_s=96000.0) for e in range(1, 5)]
    if adapted:
        adapted_probs = (1 / (1 + np.exp(-(1.25 * sign + rng.normal(0, 1.25, N_TEST))))).astype(np.float32)
        arrays["adapted"] = adapted_probs
        metrics["adapted"] = _metrics(labels, adapted_probs)
        metrics["merged"] = {k: (v + 1e-8 if isinstance(v, float) else v) for k, v in metrics["adapted"].items()}
        metrics["lora"] = dict(rank=4, scale=0.1, lora_alpha=0.4, targets=["input", "hidden"], trainable_params=5748,
                               frozen_params=78081)
        metrics["merge_max_abs_diff"] = 1.1920929e-07
        history += [dict(phase="finetune", epoch=e, loss=0.55 - 0.01 * e, accuracy=0.72 + 0.004 * e, val_loss=None,
                         val_accuracy=None, lr=5e-4, seconds=4.0, samples_per_s=125000.0) for e in (1, 2)]
    config = dict(
        train=dict(preset="notebook", model=dict(n_features=28, width=128, n_blocks=2, head_width=64), epochs=4,
                   batch_size=4096, lr=1e-3, optimizer="adam", weight_decay=0.0, schedule="constant", warmup_frac=0.0,
                   val_fraction=0.1, patience=0, ft_epochs=2 if adapted else 0, ft_lr=5e-4, rank=4, scale=0.1,
                   targets=["all"], seed=1234, device="cpu", precision="fp32", compile=False),
        data=dict(path="/data/HIGGS.csv.gz", source="csv", label_column=0),
        command="higgs-lora run /data/HIGGS.csv.gz --epochs 4", versions=dict(higgs_lora="0.1.0", torch="2.13"),
        machine=dict(cpu="test cpu", threads=2, device="cpu"))
    # figures of merit and the overtraining check's train-side scores, as the run writes them
    arrays["weights"] = rng.uniform(0.5, 1.5, N_TEST).astype(np.float32)
    arrays["eff_vs"] = rng.normal(size=N_TEST).astype(np.float32)
    metrics["eff_vs"] = "f0"
    for key in ("base", "adapted") if adapted else ("base",):
        n_train = 3000
        train_labels = (rng.random(n_train) < 0.53).astype(np.uint8)
        train_scores = (1 / (1 + np.exp(-(1.2 * (2.0 * train_labels - 1) + rng.normal(0, 1.3, n_train))))).astype(np.float32)
        arrays |= {f"train_{key}": train_scores, f"train_{key}_labels": train_labels}
        metrics[key]["figures_of_merit"] = figures_of_merit(
            labels=labels, scores=arrays[key], weights=arrays["weights"], totals=(5000.0, 4000.0),
            train=(train_labels, train_scores, None))
        metrics[key]["weighting"] = dict(weighted=True, weight_expr="w", class_balance="none", negative_weights="keep",
                                         parts=dict(test=dict(signal=dict(rows=1, sum_w=1.0, n_eff=1.0))))
    (path / "config.json").write_text(json.dumps(config, indent=2))
    (path / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (path / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    np.savez(path / "test_predictions.npz", **arrays)
    return path


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    run = build_run_dir(tmp_path_factory.mktemp("run") / "run-001")
    md, html = write_report(run)
    return run, md, html


def _decode_png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()  # raises on a truncated or corrupt file
    return image


# ---------------------------------------------------------------- ROC against sklearn
# The curve is ours (metrics.roc_curve, float64 inside): equal to sklearn's within rounding.

@pytest.mark.parametrize("ties", [False, True])
def test_roc_matches_sklearn(ties):
    rng = np.random.default_rng(3)
    labels = (rng.random(3000) < 0.4).astype(np.uint8)
    scores = (rng.random(3000) + 0.3 * labels) / 1.3
    if ties:
        scores = np.round(scores, 1)  # many tied scores, and ties across classes
    fpr, tpr, thresholds = roc_curve(labels=labels, scores=scores)
    ref_fpr, ref_tpr, ref_thr = skm.roc_curve(labels, scores, drop_intermediate=False)
    assert fpr.shape == ref_fpr.shape  # one point per distinct score, nothing dropped
    np.testing.assert_allclose(fpr, ref_fpr, rtol=0, atol=1e-7)
    np.testing.assert_allclose(tpr, ref_tpr, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(thresholds[1:], ref_thr[1:])
    assert roc_auc(labels=labels, scores=scores) == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 6)), min_size=2, max_size=40)
       .filter(lambda rows: len({r[0] for r in rows}) == 2))
def test_roc_matches_sklearn_on_small_tied_inputs(rows):
    labels = np.array([r[0] for r in rows], dtype=np.uint8)
    scores = np.array([r[1] for r in rows], dtype=np.float32) / 6
    fpr, tpr, _ = roc_curve(labels=labels, scores=scores)
    ref_fpr, ref_tpr, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr, rtol=0, atol=1e-7)
    np.testing.assert_allclose(tpr, ref_tpr, rtol=0, atol=1e-7)
    assert roc_auc(labels=labels, scores=scores) == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-6)


def test_roc_thinned_keeps_the_ends_and_the_shape():
    rng = np.random.default_rng(4)
    labels = (rng.random(50_000) < 0.5).astype(np.uint8)
    scores = rng.random(50_000) * 0.5 + 0.4 * labels
    full = roc_curve(labels=labels, scores=scores)
    thin = roc_curve(labels=labels, scores=scores, max_points=ROC_POINTS)
    assert full[0].size > 40_000 and ROC_POINTS <= thin[0].size <= ROC_POINTS + 1
    for f, t in zip(full[:2], thin[:2]):
        assert t[0] == f[0] and t[-1] == f[-1]
    # every kept point lies on the full curve
    index = {(a, b) for a, b in zip(full[0].tolist(), full[1].tolist())}
    assert all((a, b) in index for a, b in zip(thin[0].tolist(), thin[1].tolist()))


def test_roc_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        roc_curve(labels=np.ones(5, np.uint8), scores=np.linspace(0, 1, 5))


# ---------------------------------------------------------------- the full report

ALL_PLOTS = ["confusion.png", "efficiency_vs.png", "overtraining.png", "rejection.png", "roc.png", "scores.png",
             "training.png"]


def test_plots_exist_and_decode(full_run):
    run, _, _ = full_run
    pngs = sorted((run / "plots").glob("*.png"))
    assert [p.name for p in pngs] == ALL_PLOTS
    for p in pngs:
        image = _decode_png(p.read_bytes())
        assert image.width >= 600 and image.height >= 300, p.name


def test_html_is_self_contained_and_embeds_every_plot(full_run):
    run, _, html_path = full_run
    text = html_path.read_text(encoding="utf-8")
    sources = re.findall(r'<img [^>]*src="([^"]+)"', text)
    assert len(sources) == len(ALL_PLOTS)
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        _decode_png(base64.b64decode(src.split(",", 1)[1], validate=True))
    embedded = sorted(base64.b64decode(s.split(",", 1)[1]) for s in sources)
    assert embedded == sorted(p.read_bytes() for p in (run / "plots").glob("*.png"))
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!data:)""", text), "refers to an outside resource"
    assert "<link" not in text and "@import" not in text and "url(" not in text
    for _, label in METRICS:
        assert re.search(rf"<td>{re.escape(label)}</td>(<td class=num>[^<]+</td>){{3}}", text), label


def _md_table_rows(markdown: str, first_header: str) -> dict[str, list[str]]:
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_markdown_numbers_equal_metrics_rounded(full_run):
    run, md_path, _ = full_run
    metrics = json.loads((run / "metrics.json").read_text())
    rows = _md_table_rows(md_path.read_text(encoding="utf-8"), "Metric")
    assert len(rows) == len(METRICS)
    for key, label in METRICS:
        base, adapted, diff = rows[label]
        b, a = metrics["base"][key], metrics["adapted"][key]
        assert re.fullmatch(r"\d+\.\d{4}", base) and re.fullmatch(r"\d+\.\d{4}", adapted), (label, base, adapted)
        assert float(base) == pytest.approx(b, abs=5e-5 + 1e-12)
        assert float(adapted) == pytest.approx(a, abs=5e-5 + 1e-12)
        assert float(diff) == pytest.approx(a - b, abs=5e-5 + 1e-12)
    balance = _md_table_rows(md_path.read_text(encoding="utf-8"), "Part")
    for part, values in metrics["data"]["balance"].items():
        assert [int(v.replace(",", "")) for v in balance[part][:3]] == [values["rows"], values["signal"], values["background"]]
    confusion = _md_table_rows(md_path.read_text(encoding="utf-8"), "Model")
    (tn, fp), (fn, tp) = metrics["adapted"]["confusion"]
    assert [int(v.replace(",", "")) for v in confusion["Adapted"]] == [tn, fp, fn, tp]


def test_markdown_references_plots_and_sections(full_run):
    run, md_path, _ = full_run
    text = md_path.read_text(encoding="utf-8")
    refs = re.findall(r"!\[[^\]]*\]\((plots/[^)]+\.png)\)", text)
    assert sorted(refs) == [f"plots/{name}" for name in ALL_PLOTS]
    assert all((run / r).is_file() for r in refs)
    assert "Merge check: PASS" in text and "1.192e-07" in text
    epochs = _md_table_rows(text, "Epoch")  # the first per-epoch table: base training
    assert list(epochs) == ["1", "2", "3", "4"]
    assert float(epochs["3"][0]) == pytest.approx(0.66 - 0.09, abs=5e-5)
    assert "higgs-lora run /data/HIGGS.csv.gz --epochs 4" in text


def test_comparison_table_for_terminal(full_run):
    run, _, _ = full_run
    metrics = json.loads((run / "metrics.json").read_text())
    lines = comparison_table(metrics).split("\n\n")[0].splitlines()
    assert lines[0].split() == ["Metric", "Base", "Adapted", "Difference"]
    assert len({len(line) for line in lines}) == 1, "columns are not aligned"
    accuracy = next(line for line in lines if line.startswith("Accuracy "))
    values = [float(v) for v in accuracy.split()[1:]]
    b, a = metrics["base"]["accuracy"], metrics["adapted"]["accuracy"]
    assert values == pytest.approx([b, a, a - b], abs=5e-5 + 1e-12)


def test_merge_failure_is_reported(tmp_path):
    run = build_run_dir(tmp_path / "run")
    (run / "test_predictions.npz").unlink()  # fewer plots to draw: keeps the test fast
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["merge_max_abs_diff"] = 3e-4
    (run / "metrics.json").write_text(json.dumps(metrics))
    md, _ = write_report(run)
    assert "Merge check: FAIL" in md.read_text(encoding="utf-8")


# ---------------------------------------------------------------- runs without an adapted model, or with parts missing

def test_report_without_adapted_model(tmp_path):
    run = build_run_dir(tmp_path / "run", adapted=False)
    md_path, html_path = write_report(run)
    md = md_path.read_text(encoding="utf-8")
    assert "No adapted model" in md and "No merge check" in md and "No adapter in this run" in md
    rows = _md_table_rows(md, "Metric")
    metrics = json.loads((run / "metrics.json").read_text())
    assert rows["Accuracy"][1:] == ["—", "—"]
    assert float(rows["Accuracy"][0]) == pytest.approx(metrics["base"]["accuracy"], abs=5e-5 + 1e-12)
    assert "No adapted model" in html_path.read_text(encoding="utf-8")
    assert "No adapted model" in comparison_table(metrics)
    assert sorted(p.name for p in (run / "plots").glob("*.png")) == ALL_PLOTS  # the base alone has every kind


def test_report_with_only_metrics(tmp_path):
    run = build_run_dir(tmp_path / "run")
    for name in ("config.json", "history.jsonl", "test_predictions.npz"):
        (run / name).unlink()
    md_path, _ = write_report(run)
    md = md_path.read_text(encoding="utf-8")
    assert "No config.json" in md and "No history.jsonl" in md
    assert [p.name for p in (run / "plots").glob("*.png")] == ["confusion.png"]


def test_plots_drawn_when_missing_redrawn_when_stale(tmp_path):
    run = build_run_dir(tmp_path / "run")
    write_report(run)  # no plots/ yet: write_report draws them
    assert len(list((run / "plots").glob("*.png"))) == len(ALL_PLOTS)
    (run / "history.jsonl").unlink()
    (run / "test_predictions.npz").unlink()
    for png in (run / "plots").glob("*.png"):
        os.utime(png, (1e9, 1e9))  # older than metrics.json: stale
    md_path, _ = write_report(run)
    assert [p.name for p in (run / "plots").glob("*.png")] == ["confusion.png"], "stale plots survived"
    assert (run / "plots" / "confusion.png").stat().st_mtime > 1e9
    assert re.findall(r"\]\((plots/[^)]+)\)", md_path.read_text(encoding="utf-8")) == ["plots/confusion.png"]


def test_bad_inputs_name_the_file_and_line(tmp_path):
    run = build_run_dir(tmp_path / "run")
    with open(run / "history.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(UserError, match=r"history\.jsonl: line 7 "):
        write_report(run)
    (run / "history.jsonl").unlink()
    np.savez(run / "test_predictions.npz", labels=np.zeros(3, np.uint8), base=np.zeros(4, np.float32))
    with pytest.raises(UserError, match=r"test_predictions\.npz: array 'base' has shape \(4,\)"):
        write_report(run)
    (run / "test_predictions.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match=r"test_predictions\.npz: not a readable \.npz file"):
        write_report(run)
    with pytest.raises(UserError, match="no metrics.json"):
        write_report(tmp_path)
    with pytest.raises(UserError, match="not a directory"):
        write_report(tmp_path / "missing")


# ---------------------------------------------------------------- in a real browser

@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(),
                    reason="/usr/bin/chromium not installed (Debian: apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(full_run, tmp_path):
    run, _, _ = full_run
    shot = tmp_path / "shot.png"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "check_report_browser.py"), str(run),
                           "--screenshot", str(shot)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "images: 4" in done.stdout
    image = _decode_png(shot.read_bytes())
    assert image.size == (1200, 3000)


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(),
                    reason="/usr/bin/chromium not installed (Debian: apt-get install -y chromium)")
def test_browser_check_catches_an_undecodable_image(full_run, tmp_path):
    run, _, html_path = full_run
    broken = tmp_path / "broken"
    broken.mkdir()
    junk = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"not a png" * 40).decode()
    text = re.sub(r"data:image/png;base64,[^\"]+", "data:image/png;base64," + junk, html_path.read_text(encoding="utf-8"),
                  count=1)
    (broken / "report.html").write_text(text, encoding="utf-8")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "check_report_browser.py"), str(broken),
                           "--screenshot", str(tmp_path / "shot.png")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "images that did not decode" in done.stderr


def test_figures_of_merit_in_markdown_and_terminal_equal_metrics(full_run):
    run, md_path, _ = full_run
    metrics = json.loads((run / "metrics.json").read_text())
    rows = _md_table_rows(md_path.read_text(encoding="utf-8"), "Figure of merit")
    for key, column in (("base", 0), ("adapted", 1)):
        fom = metrics[key]["figures_of_merit"]
        point = fom["eff_s_at_eff_b"][2]  # eff_B = 0.1
        value, sigma = (float(v) for v in rows["ε_S at ε_B = 0.1"][column].split(" ± "))
        assert value == pytest.approx(point["eff_s"], abs=5e-5) and sigma == pytest.approx(point["sigma"], abs=5e-5)
        rejection = fom["rejection_at_eff_s"][1]  # eff_S = 0.5
        assert float(rows["1/ε_B at ε_S = 0.5"][column].split(" ± ")[0]) == pytest.approx(rejection["rejection"], abs=5e-3)
        assert float(rows["best AMS (b_reg = 10)"][column]) == pytest.approx(fom["best_ams"]["ams"], abs=5e-4)
        assert float(rows["KS p train vs test, signal"][column]) == pytest.approx(fom["ks"]["signal"]["p_value"], rel=5e-3)
    terminal = comparison_table(metrics).split("\n\n")[1]
    assert "best AMS" in terminal and "eff_S at eff_B = 0.001" in terminal and terminal.isascii()


def test_one_class_metrics_print_as_not_available(tmp_path):
    run = build_run_dir(tmp_path / "run", adapted=False)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["base"].update(roc_auc=None, specificity=None, balanced_accuracy=None, one_class=True,
                           figures_of_merit=dict(undefined="one class"))
    (run / "metrics.json").write_text(json.dumps(metrics))
    md, _ = write_report(run)
    rows = _md_table_rows(md.read_text(encoding="utf-8"), "Metric")
    assert rows["ROC AUC"][0] == "n/a (one class)" and rows["Specificity"][0] == "n/a (one class)"
    assert rows["ROC AUC"][2] == "—"
    table = comparison_table(metrics)
    assert "n/a (one class)" in table and "0.0000" not in next(line for line in table.splitlines() if "ROC AUC" in line)
