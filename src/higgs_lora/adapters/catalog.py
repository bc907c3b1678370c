"""`higgs-lora adapters DIR`: the adapters kept in a directory, one line each.

Many adapters can share one base (one per target condition, say); each adapter's JSON names it, its
base (by fingerprint), its rank and variant, what it adapts to and how it did. This module only reads
those files: loading an adapter onto a base still goes through adapter_file.load_adapter, which refuses a base
the adapter was not trained on.
"""
from __future__ import annotations

import json
from pathlib import Path

from higgs_lora.model import model_file
from higgs_lora.errors import UserError
from higgs_lora.adapters.lora import variant_name

COLUMNS = ("name", "base", "rank", "variant", "bytes", "condition", "metrics", "path")


def _metrics_text(metrics: dict | None) -> str:
    if not metrics:
        return "–"
    keys = [k for k in ("roc_auc", "accuracy", "log_loss") if isinstance(metrics.get(k), (int, float))]
    return " ".join(f"{k} {metrics[k]:.4f}" for k in keys) or "–"


def list_adapters(directory) -> list[dict]:
    """Every higgs-lora adapter under `directory` (recursively), sorted by base then name."""
    root = Path(directory)
    if not root.is_dir():
        raise UserError(f"{root}: not a directory")
    found = []
    for js in sorted(root.rglob("*.json")):
        try:
            meta = json.loads(js.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue                      # not ours (or not JSON): other files may live beside adapters
        if not isinstance(meta, dict) or meta.get("format") != model_file.ADAPTER_FORMAT:
            continue
        st_path, _ = model_file.model_paths(js)
        provenance = meta.get("provenance") or {}
        found.append(dict(name=meta.get("name") or js.stem, base=meta.get("base_fingerprint"), rank=meta.get("rank"),
                          variant=variant_name(meta), bytes=st_path.stat().st_size if st_path.exists() else None,
                          condition=meta.get("target_condition") or provenance.get("data"),
                          metrics=meta.get("metrics"), path=str(st_path.relative_to(root)),
                          trainable_params=meta.get("trainable_params")))
    return sorted(found, key=lambda a: (str(a["base"]), str(a["name"])))


def table(rows: list[dict]) -> str:
    """A plain-text table, one adapter a line."""
    cells = [list(COLUMNS)] + [[str(r["name"]), str(r["base"])[:16], str(r["rank"]), r["variant"],
                                "–" if r["bytes"] is None else f"{r['bytes']:,}", str(r["condition"] or "–"),
                                _metrics_text(r["metrics"]), r["path"]] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c[i].ljust(widths[i]) for i in range(len(COLUMNS))).rstrip() for c in cells)
