"""What adapters buy, measured against the alternatives on the same base and rows.

On one base network and the same extra rows, five ways to use those rows:

    lora     adapters (LoRA) on the frozen base: the recipe's rank, scale, targets, ft_lr, ft_epochs
    full     every weight of the base fine-tuned, same epochs, lr FULL_FT_LR
    head     only the head after the residual trunk (model.HEAD_LAYERS) fine-tuned, lr HEAD_FT_LR
    scratch  a fresh network trained on train + extra rows with the recipe, for as many samples as
             training the base and then adapting it took (epochs x train rows + ft_epochs x extra rows)
    base     the base network untouched

For each: test metrics, trainable parameters, wall time of its training, samples/s, and memory.
Memory is measured two ways. `train_state_bytes` (any device) counts the tensors one training step
holds: every parameter, the gradients of the trainable ones, the optimizer's state after a step, and the
activations autograd saves for the backward pass of one batch (counted with saved_tensors_hooks, each
storage once). On CUDA, `cuda_peak_bytes` is torch.cuda.max_memory_allocated during the training minus
what was allocated before it (the data tensors already sit on the device). Process RSS is not used: on
this network it is dominated by the interpreter and the data and does not tell the strategies apart.

FULL_FT_LR and HEAD_FT_LR were chosen by the sweep in benchmarks/bench_presets.py (docs/presets.md).
"""
from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path

import torch

from higgs_lora import io
from higgs_lora.config import DEFAULT_PRECISION, AdapterConfig, TrainConfig
from higgs_lora.adapters.lora import add_adapters
from higgs_lora.report.metrics import binary_metrics
from higgs_lora.model.network import ResidualMLP, head_only_copy
from higgs_lora.report.plots import new_figure, save_figure
from higgs_lora.hardware.runtime import autocast, predict_logits
from higgs_lora.data.sources import TensorData
from higgs_lora.train import fit, make_optimizer

STRATEGIES = ("lora", "full", "head", "scratch", "base")
TITLES = {"lora": "adapters (LoRA)", "full": "full fine-tuning", "head": "head only",
          "scratch": "from scratch on train+extra", "base": "base untouched"}
FULL_FT_LR = 3e-4  # best of {1e-4, 3e-4} on held-out extra rows, both data sets
HEAD_FT_LR = 3e-3  # best of {1e-3, 3e-3}
OUTPUT_FILES = ("strategies.json", "strategies.md", "strategies.png")


# ---------------------------------------------------------------- memory

def training_state_bytes(model: torch.nn.Module, x_batch: torch.Tensor, y_batch: torch.Tensor, *,
                         optimizer: str = "adam", precision: str = DEFAULT_PRECISION) -> dict:
    """Bytes one training step of `model` holds on a batch: parameters, gradients, optimizer state and
    the activations saved for backward. Measured on a copy (the model is untouched)."""
    model = copy.deepcopy(model).train()
    saved: dict[tuple, int] = {}

    def pack(t: torch.Tensor):
        if t.device.type != "meta":
            st = t.untyped_storage()
            saved[(st.data_ptr(), t.device.type)] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast(x_batch.device, precision):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x_batch).float(), y_batch)
    # Parameters are counted once, below; the data batch and labels would be there without training.
    for t in [*model.parameters(), x_batch, y_batch]:
        saved.pop((t.untyped_storage().data_ptr(), t.device.type), None)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(trainable, name=optimizer, lr=1e-9, weight_decay=0.0, device=x_batch.device)
    loss.backward()
    opt.step()
    opt_bytes = sum(v.numel() * v.element_size() for st in opt.state.values() for v in st.values() if torch.is_tensor(v))
    out = dict(parameters=sum(p.numel() * p.element_size() for p in model.parameters()),
               gradients=sum(p.grad.numel() * p.grad.element_size() for p in trainable if p.grad is not None),
               optimizer=opt_bytes, activations=sum(saved.values()))
    out["total"] = sum(out.values())
    return out


# ---------------------------------------------------------------- the strategies

def prepare(strategy: str, base: ResidualMLP, *, seed: int, adapter: AdapterConfig | None = None) -> ResidualMLP:
    """The network a fine-tuning strategy trains, built from (a copy of) `base`, which is never touched:
    lora: `adapter`'s adapters on the frozen base; full: every weight; head: the head only; scratch: a
    fresh network of the base's shape; base: the base, frozen. `seed` draws what is new (A, or the fresh
    network). The one switch of this study and of adapt_study's."""
    if strategy == "lora":
        if adapter is None:
            raise ValueError("strategy 'lora' needs adapter=AdapterConfig(...)")
        torch.manual_seed(seed)  # A's initialization
        return add_adapters(copy.deepcopy(base), adapter)
    if strategy == "full":
        return copy.deepcopy(base).requires_grad_(True)
    if strategy == "head":
        return head_only_copy(base)
    if strategy == "scratch":
        torch.manual_seed(seed)
        return ResidualMLP.from_config(base.config).to(next(base.parameters()).device)
    if strategy == "base":
        return copy.deepcopy(base).requires_grad_(False)
    raise ValueError(f"unknown strategy {strategy!r}; choose from {STRATEGIES}")


def scratch_epochs(cfg: TrainConfig, *, train_rows: int, extra_rows: int) -> int:
    """Epochs over train+extra that see as many samples as base training plus adapting did."""
    budget = cfg.epochs * train_rows + cfg.ft_epochs * extra_rows
    return max(1, round(budget / (train_rows + extra_rows)))


def run_one(strategy: str, base: ResidualMLP, cfg: TrainConfig, data: dict, *, progress: bool = False,
            verbose: bool = False) -> dict:
    """Train one strategy and measure it. `data` holds standardized tensors on one device:
    train, val (may be None), extra, test, each an (x, y) pair."""
    model = prepare(strategy, base, seed=cfg.seed, adapter=cfg.adapter_config())
    x_extra, y_extra = data["extra"]
    device = x_extra.device
    val = None
    if strategy == "scratch":
        x = torch.cat([data["train"][0], x_extra])
        y = torch.cat([data["train"][1], y_extra])
        epochs = scratch_epochs(cfg, train_rows=data["train"][0].shape[0], extra_rows=x_extra.shape[0])
        recipe = dataclasses.replace(cfg.base_recipe(), epochs=epochs, phase=f"strategy-{strategy}")
        if data.get("val") is not None:
            val = TensorData(*data["val"], batch_size=cfg.batch_size)
    else:
        x, y = x_extra, y_extra
        lr = {"lora": cfg.ft_lr, "full": FULL_FT_LR, "head": HEAD_FT_LR}.get(strategy, cfg.ft_lr)
        epochs = cfg.ft_epochs if strategy != "base" else 0
        recipe = cfg.finetune_recipe(phase=f"strategy-{strategy}", epochs=epochs, lr=lr)
    trainable = model.n_params(trainable_only=True)
    memory = training_state_bytes(model, x[:cfg.batch_size], y[:cfg.batch_size], optimizer=recipe.optimizer,
                                  precision=cfg.precision) if trainable else None
    cuda_peak = None
    seconds, samples, best_epoch = 0.0, 0, None
    if trainable and epochs:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        t = time.perf_counter()
        result = fit(model, TensorData(x, y, batch_size=cfg.batch_size), recipe, val=val, progress=progress,
                     verbose=verbose)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            cuda_peak = torch.cuda.max_memory_allocated(device) - before
        seconds, samples, best_epoch = time.perf_counter() - t, result.samples_seen, result.best_epoch
    del x, y
    metrics = binary_metrics(predict_logits(model, data["test"][0]).cpu(), data["test"][1].cpu())
    return dict(strategy=strategy, title=TITLES[strategy], test=metrics, trainable_params=trainable,
                total_params=model.n_params(), epochs=epochs, best_epoch=best_epoch,
                lr=None if strategy == "base" else recipe.lr, wall_s=seconds, samples=samples,
                samples_per_s=samples / seconds if seconds > 0 else None,
                train_state_bytes=memory, cuda_peak_bytes=cuda_peak)


def run_all(base: ResidualMLP, cfg: TrainConfig, data: dict, *, strategies=STRATEGIES, progress: bool = False,
            log=print) -> list[dict]:
    rows = []
    for s in strategies:
        log(f"strategy {s}: {TITLES[s]} ...")
        row = run_one(s, base, cfg, data, progress=progress)
        log(f"  test AUC {row['test']['roc_auc']:.4f}  accuracy {row['test']['accuracy']:.4f}  "
            f"trainable {row['trainable_params']:,}  {row['wall_s']:.1f}s")
        rows.append(row)
    return rows


# ---------------------------------------------------------------- outputs

def _mib(n) -> str:
    return "–" if n is None else f"{n / 2**20:.2f}"


def markdown_table(result: dict) -> str:
    lines = ["| strategy | test ROC AUC | test accuracy | test log loss | trainable params | epochs | samples "
             "| wall s | samples/s | train-state MiB | CUDA peak MiB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["strategies"]:
        m = r["test"]
        rate = "–" if r["samples_per_s"] is None else f"{r['samples_per_s']:,.0f}"
        mem = None if r["train_state_bytes"] is None else r["train_state_bytes"]["total"]
        lines.append(f"| {r['title']} | {m['roc_auc']:.4f} | {100 * m['accuracy']:.2f}% | {m['log_loss']:.4f} "
                     f"| {r['trainable_params']:,} | {r['epochs']} | {r['samples']:,} | {r['wall_s']:.1f} | {rate} "
                     f"| {_mib(mem)} | {_mib(r['cuda_peak_bytes'])} |")
    return "\n".join(lines)


def write_outputs(out: Path, result: dict) -> list[Path]:
    out = Path(out)
    io.write_json(out / "strategies.json", result)
    d = result["data"]
    md = [f"# Ways to use the extra rows: {d['source']}", "",
          f"Same base network and the same {d['extra_rows']:,} extra rows for every strategy; metrics on the "
          f"{d['test_rows']:,} test rows. Recipe: preset `{result['config']['preset']}`, seed {result['config']['seed']}, "
          f"device {result['device']}, {result['threads']} thread(s).", "",
          markdown_table(result), "",
          "train-state MiB: parameters + gradients + optimizer state + activations saved for backward of one "
          f"batch of {result['config']['batch_size']:,} rows, counted tensor by tensor. CUDA peak: "
          "max_memory_allocated during training above what was allocated before (GPU only).", ""]
    if result.get("base_training"):
        b = result["base_training"]
        md.append(f"The base itself was trained here: {b['epochs_run']} epochs on {b['train_rows']:,} rows, "
                  f"{b['wall_s']:.1f}s, {b['samples']:,} samples.")
    with io.atomic_path(out / "strategies.md") as tmp:
        tmp.write_text("\n".join(md) + "\n")
    return [out / "strategies.json", out / "strategies.md", plot(result, out / "strategies.png")]


def plot(result: dict, path: Path) -> Path:
    rows = result["strategies"]
    names = [r["strategy"] for r in rows]
    colors = {"lora": "tab:orange", "full": "tab:red", "head": "tab:green", "scratch": "tab:purple",
              "base": "tab:blue"}
    fig = new_figure(width=13, height=3.8)
    ax_auc, ax_time, ax_params = fig.subplots(1, 3)
    aucs = [r["test"]["roc_auc"] for r in rows]
    ax_auc.bar(names, aucs, color=[colors[n] for n in names])
    lo, hi = min(aucs), max(aucs)
    ax_auc.set_ylim(lo - 0.5 * (hi - lo + 1e-3), hi + 0.25 * (hi - lo + 1e-3))
    for i, a in enumerate(aucs):
        ax_auc.text(i, a, f"{a:.4f}", ha="center", va="bottom", fontsize=8)
    ax_auc.set_title("test ROC AUC")
    ax_time.bar(names, [r["wall_s"] for r in rows], color=[colors[n] for n in names])
    ax_time.set_title("training wall time (s)")
    for r in rows:
        ax_params.scatter(max(r["trainable_params"], 1), r["test"]["roc_auc"], s=60, color=colors[r["strategy"]],
                          label=r["strategy"])
    ax_params.set_xscale("log")
    ax_params.set_xlabel("trainable parameters (base: plotted at 1)")
    ax_params.set_ylabel("test ROC AUC")
    ax_params.set_title("accuracy vs trainable parameters")
    ax_params.legend(fontsize=8)
    for ax in (ax_auc, ax_time, ax_params):
        ax.grid(alpha=0.3)
    return save_figure(fig, path)
