"""The run report: report.md (plots referenced as plots/*.png) and a self-contained report.html
(plots embedded as base64 data URIs, inline CSS, nothing fetched from anywhere).

Both are rendered from one list of sections, so they always say the same thing.
"""
from __future__ import annotations

import base64
import html
import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path

from higgs_lora.config import MERGE_TOLERANCE
from higgs_lora.errors import UserError
from higgs_lora.io import atomic_path, read_json
from higgs_lora.report.figures_of_merit import EFF_B_POINTS, EFF_S_POINTS
from higgs_lora.report.metrics import ONE_CLASS, format_value
from higgs_lora.report.plots import PLOT_FILES, make_plots, read_history

# The notebook's comparison table (accuracy, balanced accuracy, F1, precision, recall) plus the rest.
METRICS = (
    ("accuracy", "Accuracy"),
    ("balanced_accuracy", "Balanced accuracy"),
    ("f1", "F1-score"),
    ("precision", "Precision"),
    ("recall", "Recall"),
    ("specificity", "Specificity"),
    ("sensitivity", "Sensitivity"),
    ("roc_auc", "ROC AUC"),
    ("log_loss", "Log loss (lower is better)"),
)

NO_ADAPTED = "No adapted model in this run (fine-tuning skipped, e.g. --ft-epochs 0)."
PLOT_CAPTIONS = {
    "training.png": "Training curves: loss and accuracy per epoch, base training and LoRA fine-tuning.",
    "roc.png": "ROC curves on the test set, and background rejection 1/ε_B against signal efficiency ε_S.",
    "rejection.png": "Background rejection 1/ε_B vs signal efficiency ε_S (log scale) with ±1σ binomial bands "
                     "from N_eff; the points are the working points of the table above.",
    "scores.png": "Distribution of the predicted signal probability for signal and background test rows.",
    "overtraining.png": "Overtraining check: weighted score distributions of the rows each model trained on and of "
                        "the test rows, per class, with the Kolmogorov–Smirnov p-value of train vs test.",
    "efficiency_vs.png": "Signal and background efficiency at the best-AMS cut in bins of the --eff-vs feature.",
    "confusion.png": "Confusion matrices on the test set at threshold 0.5: counts and row percentages.",
}


# ---------------------------------------------------------------- document model

@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    right: set[int] = field(default_factory=set)  # columns aligned right (numbers)


@dataclass
class Note:
    text: str


@dataclass
class Code:
    text: str


@dataclass
class Image:
    path: Path      # the PNG on disk
    relative: str   # as report.md refers to it
    caption: str


# ---------------------------------------------------------------- formatting

def _num(value, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}"


def _signed(value: float) -> str:
    text = f"{value:+.4f}"
    return "+0.0000" if text == "-0.0000" else text


def _int(value) -> str:
    return "—" if value is None else f"{int(value):,}"


def _seconds(value) -> str:
    return "—" if value is None else f"{value:.2f}"


def _metric(model: dict, key: str) -> str:
    """A model's metric: '—' where the model or the metric is missing, 'n/a (one class)' where undefined."""
    if key not in model:
        return "—"
    return format_value(model[key], one_class=bool(model.get("one_class")))


def comparison_rows(metrics: dict) -> list[list[str]]:
    """[label, base, adapted, adapted − base] per metric, 4 decimals; '—' where a value is missing,
    'n/a (one class)' where it is undefined."""
    base, adapted = metrics.get("base") or {}, metrics.get("adapted") or {}
    rows = []
    for key, label in METRICS:
        b, a = base.get(key), adapted.get(key)
        diff = _signed(a - b) if a is not None and b is not None else "—"
        rows.append([label, _metric(base, key), _metric(adapted, key), diff])
    return rows


def _text_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
             for r in [headers, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def comparison_table(metrics: dict) -> str:
    """The base/adapted/difference table, then the figures of merit, as aligned plain text for the terminal."""
    lines = _text_table(["Metric", "Base", "Adapted", "Difference"], comparison_rows(metrics))
    if not metrics.get("adapted"):
        lines.append(NO_ADAPTED)
    headers, rows = figures_rows(metrics)
    if rows:
        lines += ["", *_text_table(headers, rows)]
    return "\n".join(lines).replace("—", "-")  # plain ASCII: terminals need not speak UTF-8


FIGURE_MODELS = (("base", "Base"), ("adapted", "Adapted"), ("merged", "Merged"))


def _pm(value, sigma, digits: int) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}" + (f" +- {sigma:.{digits}f}" if sigma is not None else "")


def figures_rows(metrics: dict, models=FIGURE_MODELS) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of the working points, the best-cut AMS and the KS p-values of every model whose
    metrics carry a figures_of_merit block (plain ASCII labels); no rows when none does."""
    present = [(k, name) for k, name in models if isinstance((metrics.get(k) or {}).get("figures_of_merit"), dict)]
    if not present:
        return [], []
    foms = [metrics[k]["figures_of_merit"] for k, _ in present]
    if all("undefined" in f for f in foms):
        return ["Figure of merit", *(n for _, n in present)], [["all", *(ONE_CLASS for _ in present)]]
    rows = []
    for i, eff_b in enumerate(EFF_B_POINTS):
        rows.append([f"eff_S at eff_B = {eff_b:g}",
                     *(ONE_CLASS if "undefined" in f else _pm(f["eff_s_at_eff_b"][i]["eff_s"], f["eff_s_at_eff_b"][i]["sigma"], 4)
                       for f in foms)])
    for i, eff_s in enumerate(EFF_S_POINTS):
        rows.append([f"1/eff_B at eff_S = {eff_s:g}",
                     *(ONE_CLASS if "undefined" in f else _pm(f["rejection_at_eff_s"][i]["rejection"],
                                                              f["rejection_at_eff_s"][i]["sigma"], 2) for f in foms)])
    best = [f.get("best_ams") or {} for f in foms]
    rows.append(["best AMS (b_reg = 10)", *(_num(b.get("ams"), 3) if b.get("ams") is not None else "n/a" for b in best)])
    rows.append(["  at cut: score >=", *(_num(b.get("cut"), 4) if b.get("cut") is not None else "n/a" for b in best)])
    rows.append(["  s, b (full sample)", *(f"{b['s']:.4g}, {b['b']:.4g}" if b.get("s") is not None else "n/a"
                                           for b in best)])
    for cls in ("signal", "background"):
        rows.append([f"KS p train vs test, {cls}",
                     *("n/a" if (f.get("ks") or {}).get(cls, {}).get("p_value") is None else f"{f['ks'][cls]['p_value']:.3g}"
                       for f in foms)])
    return ["Figure of merit", *(n for _, n in present)], rows


def format_figures(fom: dict) -> str:
    """One model's figures of merit as an aligned plain-text table (the evaluate command prints it)."""
    headers, rows = figures_rows(dict(model=dict(figures_of_merit=fom)), models=(("model", "Value"),))
    return "\n".join(_text_table(headers, rows)) if rows else ""


# ---------------------------------------------------------------- sections

def _data_section(metrics: dict, config: dict) -> list:
    data = metrics.get("data")
    if not data:
        return [Note("No data summary in metrics.json.")]
    label_column = (config.get("data") or {}).get("label_column")
    lines = [f"Source: {data.get('source', '—')}; file: {data.get('path') or '—'}; "
             f"rows: {_int(data.get('rows'))}; label column: {label_column if label_column is not None else '—'}."]
    names = data.get("feature_names") or []
    if names:
        lines.append(f"{len(names)} features: {', '.join(map(str, names))}.")
    blocks: list = list(lines)
    balance = data.get("balance") or {}
    rows = []
    for part in ("train", "val", "extra", "test"):
        b = balance.get(part)
        if b:
            rows.append([part, _int(b.get("rows")), _int(b.get("signal")), _int(b.get("background")),
                         _num(b.get("signal_fraction"))])
    if rows:
        blocks.append(Table(["Part", "Rows", "Signal", "Background", "Signal fraction"], rows, right={1, 2, 3, 4}))
    return blocks


def _settings_section(config: dict) -> list:
    if not config:
        return [Note("No config.json in this run directory.")]
    blocks: list = []
    if config.get("command"):
        blocks.append(Code(str(config["command"])))
    rows = []
    for key, value in (config.get("train") or {}).items():
        if isinstance(value, dict):
            rows += [[f"{key}.{k}", _plain(v)] for k, v in value.items()]
        else:
            rows.append([key, _plain(value)])
    for key, value in (config.get("data") or {}).items():
        rows.append([f"data.{key}", _plain(value)])
    if rows:
        blocks.append(Table(["Setting", "Value"], rows))
    env = [[f"machine.{k}", _plain(v)] for k, v in (config.get("machine") or {}).items()]
    env += [[f"version.{k}", _plain(v)] for k, v in (config.get("versions") or {}).items()]
    if env:
        blocks.append(Table(["Environment", "Value"], env))
    return blocks


def _plain(value) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return "—" if value is None else str(value)


def _training_section(history: list[dict]) -> list:
    if not history:
        return [Note("No history.jsonl in this run directory.")]
    blocks: list = []
    for phase, title in (("base", "Base training"), ("finetune", "LoRA fine-tuning")):
        rows = sorted((r for r in history if r["phase"] == phase), key=lambda r: r["epoch"])
        if not rows:
            blocks.append(Note(f"{title}: no epochs." if phase == "base" else NO_ADAPTED))
            continue
        blocks.append(f"{title}: {len(rows)} epoch(s), {sum(r.get('seconds') or 0 for r in rows):.2f} s.")
        blocks.append(Table(
            ["Epoch", "Train loss", "Train accuracy", "Val loss", "Val accuracy", "Learning rate", "Time (s)", "Samples/s"],
            [[str(r["epoch"]), _num(r.get("loss")), _num(r.get("accuracy")), _num(r.get("val_loss")),
              _num(r.get("val_accuracy")), "—" if r.get("lr") is None else f"{r['lr']:.3g}",
              _seconds(r.get("seconds")), _int(r.get("samples_per_s"))] for r in rows],
            right=set(range(8))))
    return blocks


def _results_section(metrics: dict) -> list:
    blocks: list = []
    if not metrics.get("base") and not metrics.get("adapted"):
        return [Note("No test metrics in metrics.json.")]
    if not metrics.get("adapted"):
        blocks.append(Note(NO_ADAPTED))
    blocks.append("Test-set metrics at threshold 0.5. Difference = adapted − base.")
    blocks.append(Table(["Metric", "Base", "Adapted", "Difference"], comparison_rows(metrics), right={1, 2, 3}))
    rows = []
    for key, name in (("base", "Base"), ("adapted", "Adapted"), ("merged", "Merged")):
        confusion = (metrics.get(key) or {}).get("confusion")
        if confusion:
            (tn, fp), (fn, tp) = confusion
            rows.append([name, _int(tn), _int(fp), _int(fn), _int(tp)])
    if rows:
        blocks.append("Confusion counts (rows: true class; 0 = background, 1 = signal):")
        blocks.append(Table(["Model", "TN", "FP", "FN", "TP"], rows, right={1, 2, 3, 4}))
    return blocks


def _figures_section(metrics: dict) -> list:
    headers, rows = figures_rows(metrics)
    if not rows:
        return [Note("No figures of merit in metrics.json (a run written before they existed).")]
    blocks: list = ["Working points on the test set, interpolated on the weighted ROC, ± the binomial uncertainty "
                    "from the class's effective size N_eff = (Σw)²/Σw²; the Approximate Median Significance of the "
                    "best cut on the score with s and b scaled to the full sample; the Kolmogorov–Smirnov p-value of "
                    "train vs test scores per class (overtraining check). Formulas: docs/metrics.md."]
    blocks.append(Table(headers, [[r[0].replace("eff_", "ε_").replace("+-", "±"), *(c.replace("+-", "±") for c in r[1:])]
                                  for r in rows], right=set(range(1, len(headers)))))
    weighting = next((metrics[k]["weighting"] for k, _ in FIGURE_MODELS if "weighting" in (metrics.get(k) or {})), None)
    if weighting:
        how = (f"weighted by {weighting.get('weight_expr') or 'event weights'}" if weighting.get("weighted")
               else "unweighted (every event weighs 1)")
        blocks.append(f"Metrics {how}; class balance in training: {weighting.get('class_balance', 'none')}; "
                      f"negative weights: {weighting.get('negative_weights', 'keep')}.")
        wrows = [[part, cls, _int(v.get("rows")), _num(v.get("sum_w"), 4), _num(v.get("n_eff"), 1)]
                 for part, classes in (weighting.get("parts") or {}).items() for cls, v in classes.items()]
        if wrows:
            blocks.append(Table(["Part", "Class", "Rows", "Σw", "N_eff"], wrows, right={2, 3, 4}))
    return blocks


def _lora_section(metrics: dict) -> list:
    lora = metrics.get("lora")
    if not lora:
        return [Note("No adapter in this run.")]
    trainable, frozen = lora.get("trainable_params"), lora.get("frozen_params")
    share = f"{100 * trainable / (trainable + frozen):.2f} %" if trainable is not None and frozen else "—"
    return [Table(["Adapter setting", "Value"], [
        ["rank", _plain(lora.get("rank"))], ["scale", _plain(lora.get("scale"))],
        ["lora_alpha (scale × rank)", _plain(lora.get("lora_alpha"))], ["targets", _plain(lora.get("targets"))],
        ["trainable parameters", _int(trainable)], ["frozen parameters", _int(frozen)],
        ["trainable share", share]])]


def _merge_section(metrics: dict) -> list:
    diff = metrics.get("merge_max_abs_diff")
    if diff is None:
        return [Note("No merge check in this run (no adapted model to merge).")]
    verdict = "PASS" if diff <= MERGE_TOLERANCE else "FAIL"
    blocks: list = [f"Merge check: {verdict}. Largest absolute difference between the adapted model's and the "
                    f"merged model's test probabilities: {diff:.3e} (tolerance {MERGE_TOLERANCE:.0e})."]
    merged, adapted = metrics.get("merged") or {}, metrics.get("adapted") or {}
    shared = [k for k, _ in METRICS if isinstance(merged.get(k), (int, float)) and isinstance(adapted.get(k), (int, float))]
    if shared:
        worst = max(abs(merged[k] - adapted[k]) for k in shared)
        blocks.append(f"Merged vs adapted test metrics: largest difference {worst:.3e} over {len(shared)} metrics.")
    return blocks


def _performance_section(metrics: dict) -> list:
    blocks: list = []
    timings = metrics.get("timings_s") or {}
    if timings:
        total = timings.get("total")
        rows = [[stage, _seconds(seconds),
                 f"{100 * seconds / total:.1f} %" if total and seconds is not None and stage != "total" else ""]
                for stage, seconds in timings.items()]
        blocks.append(Table(["Stage", "Seconds", "Share of total"], rows, right={1, 2}))
    throughput = metrics.get("throughput") or {}
    labels = {"train_samples_per_s": "base training (samples/s)", "finetune_samples_per_s": "fine-tuning (samples/s)",
              "inference_rows_per_s": "inference (rows/s)"}
    if throughput:
        blocks.append(Table(["Throughput", "Value"],
                            [[labels.get(k, k), _int(v)] for k, v in throughput.items()], right={1}))
    return blocks or [Note("No timings in metrics.json.")]


def _plots_section(run_dir: Path) -> list:
    if importlib.util.find_spec("matplotlib") is None:
        return [Note("Plots skipped: matplotlib is not installed (pip install matplotlib).")]
    plots = run_dir / "plots"
    existing = [plots / n for n in PLOT_FILES if (plots / n).exists()]
    inputs = [run_dir / n for n in ("metrics.json", "history.jsonl", "test_predictions.npz") if (run_dir / n).exists()]
    newest_input = max((p.stat().st_mtime for p in inputs), default=0)
    if not existing or newest_input > min(p.stat().st_mtime for p in existing):
        existing = make_plots(run_dir)
    if not existing:
        return [Note("Nothing to plot: no history.jsonl, test_predictions.npz or confusion matrices.")]
    return [Image(p, f"plots/{p.name}", PLOT_CAPTIONS.get(p.name, p.name)) for p in existing]


def build_sections(run_dir: Path) -> list[tuple[str, list]]:
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.exists():
        raise UserError(f"{run_dir}: no metrics.json (is it a finished `higgs-lora run` directory?)")
    metrics = read_json(metrics_path)
    config = read_json(run_dir / "config.json") if (run_dir / "config.json").exists() else {}
    history = read_history(run_dir / "history.jsonl")
    return [
        ("Data", _data_section(metrics, config)),
        ("Results: base vs adapted", _results_section(metrics)),
        ("Figures of merit", _figures_section(metrics)),
        ("Merge check", _merge_section(metrics)),
        ("Plots", _plots_section(run_dir)),
        ("Training", _training_section(history)),
        ("Adapter (LoRA)", _lora_section(metrics)),
        ("Timings and throughput", _performance_section(metrics)),
        ("Settings", _settings_section(config)),
    ]


# ---------------------------------------------------------------- rendering

def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(title: str, sections: list[tuple[str, list]]) -> str:
    out = [f"# {title}", ""]
    for heading, blocks in sections:
        out += [f"## {heading}", ""]
        for block in blocks:
            if isinstance(block, Table):
                out.append("| " + " | ".join(map(_md_cell, block.headers)) + " |")
                out.append("|" + "|".join("---:" if i in block.right else "---" for i in range(len(block.headers))) + "|")
                out += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in block.rows]
            elif isinstance(block, Note):
                out.append(f"> **Note:** {block.text}")
            elif isinstance(block, Code):
                out += ["```", block.text, "```"]
            elif isinstance(block, Image):
                out += [f"![{block.caption}]({block.relative})", "", f"*{block.caption}*"]
            else:
                out.append(block)
            out.append("")
    return "\n".join(out)


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 1180px; margin: 2em auto;
       padding: 0 1em; color: #1b1f24; line-height: 1.45; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .93em; }
th, td { border: 1px solid #d0d7de; padding: .3em .7em; }
th { background: #f3f5f7; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafbfc; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: .5em .9em; }
pre { background: #f3f5f7; padding: .7em; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e7eb; }
figcaption { color: #57606a; font-size: .9em; }
"""


def _html_table(block: Table) -> str:
    def cells(tag: str, row: list[str]) -> str:
        return "".join(f'<{tag}{" class=num" if i in block.right else ""}>{html.escape(c)}</{tag}>'
                       for i, c in enumerate(row))
    body = "\n".join(f"<tr>{cells('td', r)}</tr>" for r in block.rows)
    return f"<table>\n<thead><tr>{cells('th', block.headers)}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def render_html(title: str, sections: list[tuple[str, list]]) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{html.escape(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
           f"<h1>{html.escape(title)}</h1>"]
    for heading, blocks in sections:
        out.append(f"<h2>{html.escape(heading)}</h2>")
        for block in blocks:
            if isinstance(block, Table):
                out.append(_html_table(block))
            elif isinstance(block, Note):
                out.append(f'<p class="note"><strong>Note:</strong> {html.escape(block.text)}</p>')
            elif isinstance(block, Code):
                out.append(f"<pre><code>{html.escape(block.text)}</code></pre>")
            elif isinstance(block, Image):
                data = base64.b64encode(block.path.read_bytes()).decode("ascii")
                out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.caption)}">'
                           f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
            else:
                out.append(f"<p>{html.escape(block)}</p>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def write_report(run_dir) -> tuple[Path, Path]:
    """Write run_dir/report.md and run_dir/report.html (drawing the plots first if they are missing or
    older than the run's results). Returns (markdown path, html path)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a directory")
    sections = build_sections(run_dir)
    title = f"higgs-lora run report: {run_dir.resolve().name}"
    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    with atomic_path(md_path) as tmp:
        tmp.write_text(render_markdown(title, sections), encoding="utf-8")
    with atomic_path(html_path) as tmp:
        tmp.write_text(render_html(title, sections), encoding="utf-8")
    return md_path, html_path
