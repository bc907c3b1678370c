"""The training loop, written out: used for base training, adapter fine-tuning and the strategies alike.

fit() asks a data source's part for the batches of an epoch (sources.py, stream.py) and keeps its state
in a checkpoint (checkpoint.py); the learning rate is a pure function of the global step (optim.py), so
a run killed and resumed ends with the weights of one never interrupted.
"""
from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from higgs_lora.hardware import distributed, machine
from higgs_lora.config import Recipe
from higgs_lora.errors import Interrupted, TrainingDiverged, UserError
from higgs_lora.adapters.lora import param_groups
from higgs_lora.hardware.runtime import autocast
from higgs_lora.hardware.governor import thread_governor
from higgs_lora.train.checkpoint import Checkpoint, load_state, save_state
from higgs_lora.train.optim import learning_rate, make_optimizer


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    samples_seen: int = 0
    best_epoch: int | None = None
    thread_changes: list = field(default_factory=list)   # (threads before, after, others' load in cores)

    @property
    def samples_per_s(self) -> float:
        return self.samples_seen / self.seconds if self.seconds > 0 else float("nan")


def fit(model: torch.nn.Module, data, recipe: Recipe, *, val=None, checkpoint: Checkpoint | None = None,
        on_epoch=None, progress: bool = True, verbose: bool = True) -> FitResult:
    """Train `model` in place by `recipe` on a data source's part (TensorData, ShardStream: standardized
    rows on the model's device, cut into batches by the source, which owns the batch size, each a
    sources.Batch (x, y, w): with training weights w the loss is the weighted BCE, without the plain mean);
    `val` is a part to validate on after each epoch.

    `checkpoint` keeps the state after every epoch and on Ctrl-C (then Interrupted is raised), and
    with resume=True continues from it. `progress` draws the per-step bar; `verbose` prints the one-line
    epoch summaries. Returns the per-epoch history. With a validation part and patience > 0, keeps the
    weights of the epoch with the lowest validation loss and stops after `patience` epochs without
    improvement.
    """
    epochs, lr, seed, phase, precision = recipe.epochs, recipe.lr, recipe.seed, recipe.phase, recipe.precision
    patience, smoothing = recipe.patience, recipe.label_smoothing
    n = data.rows
    if n == 0:
        raise UserError(f"{phase}: no rows to train on")
    device = next(model.parameters()).device
    rank, world = distributed.world()
    main_rank = rank == 0
    progress, verbose = progress and main_rank, verbose and main_rank
    steps_per_epoch = data.steps_per_epoch
    total_steps = steps_per_epoch * epochs
    opt = make_optimizer(param_groups(model), name=recipe.optimizer, lr=lr, weight_decay=recipe.weight_decay,
                         device=device)
    loss_fn = torch.nn.BCEWithLogitsLoss()  # on logits: numerically stable, unlike sigmoid + BCE
    train_step_model = model
    if world > 1:
        # DDP averages the gradients of trainable parameters only: with adapters, only A and B travel.
        from torch.nn.parallel import DistributedDataParallel
        train_step_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if recipe.compile:
        train_step_model = torch.compile(train_step_model)

    result = FitResult()
    start_epoch, start_step, carry = 0, 0, None
    best = dict(loss=float("inf"), epoch=None, state=None, bad_epochs=0)
    path = checkpoint.path if checkpoint is not None else None
    if checkpoint is not None and checkpoint.resume and path.exists():
        start_epoch, start_step, carry, best, result.history, saved_world = load_state(
            path, model, opt, phase, settings=checkpoint.settings)
        if verbose:
            print(f"[{phase}] resuming from {path} at epoch {start_epoch + 1}, step {start_step}")
        if verbose and saved_world != world and not data.exact_resume:
            # A stream's order depends on how the rows are divided among ranks: still correct, not identical.
            print(f"[{phase}] note: the checkpoint was written by {saved_world} processes, this run has {world}; "
                  "the rest of the epoch sees its rows in another order than an uninterrupted run would")

    # Fewer threads while other processes keep the cores busy (thread_governor.py); restored at the end.
    threads_at_start = torch.get_num_threads()
    governor = thread_governor(threads_at_start, set_threads=torch.set_num_threads,
                               enabled=world == 1 and device.type == "cpu" and machine.threads_governed(),
                               on_change=_thread_note(phase) if verbose else None)
    interrupted = {"flag": False}
    previous_handler = _install_sigint(interrupted)
    try:
        for epoch in range(start_epoch, epochs):
            if best["bad_epochs"] >= patience > 0:
                break
            model.train()
            # Running sums stay on the device: no host sync per step.
            loss_sum = torch.zeros((), device=device, dtype=torch.float64)
            # correct: rows classified right, or with weights (mean 1 over the part) their weighted sum
            correct = torch.zeros((), device=device, dtype=torch.float64)
            seen, t_epoch, elapsed_before = 0, time.perf_counter(), 0.0
            nonfinite_at = torch.full((), -1, device=device, dtype=torch.int64)  # first step with a NaN/inf loss
            first_step = start_step if epoch == start_epoch else 0
            if carry is not None and epoch == start_epoch:
                if main_rank:  # the carried sums are global; add them once
                    loss_sum += carry["loss_sum"]
                    correct += carry["correct"]
                    seen = carry["seen"]
                elapsed_before = carry["seconds"]
            bar = tqdm(total=n, initial=seen, unit="ev", unit_scale=True, disable=not progress, leave=False,
                       desc=f"{phase} {epoch + 1}/{epochs}", dynamic_ncols=True)
            with contextlib.closing(data.batches(seed=seed, phase=phase, epoch=epoch, first_step=first_step)) as steps:
                for step, (xb, yb, wb) in enumerate(steps, start=first_step):
                    governor.poll()
                    stop = interrupted["flag"]
                    if world > 1 and step % 8 == 0:  # ranks agree on where to stop: same step everywhere
                        stop = distributed.any_rank(stop, device)
                    elif world > 1:
                        stop = False
                    if stop:
                        sums = distributed.all_reduce_(torch.stack([
                            loss_sum, correct, torch.tensor(float(seen), device=device, dtype=torch.float64)]))
                        _refuse_nonfinite(sums[0].item(), nonfinite_at, phase=phase, epoch=epoch, path=path)
                        state = dict(loss_sum=sums[0].item(), correct=sums[1].item(), seen=int(sums[2].item()),
                                     seconds=elapsed_before + time.perf_counter() - t_epoch)
                        if path is not None and main_rank:
                            save_state(path, model, opt, phase=phase, epoch=epoch, step=step, carry=state, best=best,
                                       history=result.history, settings=checkpoint.settings)
                        bar.close()
                        where = f"a checkpoint was written to {path}" if path else "no checkpoint was kept"
                        raise Interrupted(f"{phase} training stopped at epoch {epoch + 1}, step {step}; {where}")
                    step_lr = learning_rate(epoch * steps_per_epoch + step, total_steps=total_steps, lr=lr,
                                            schedule=recipe.schedule, warmup_frac=recipe.warmup_frac)
                    for group in opt.param_groups:
                        group["lr"] = step_lr * group.get("lr_scale", 1.0)   # LoRA+ groups (lora.param_groups)
                    with autocast(device, precision):
                        logits = train_step_model(xb).float()
                    # Label smoothing: targets pulled toward 1/2 by label_smoothing/2 (0 = the plain loss).
                    target = yb if not smoothing else yb * (1 - smoothing) + 0.5 * smoothing
                    if wb is None:
                        loss = loss_fn(logits, target)
                    else:
                        # Per-event weighted BCE. The weights come scaled to mean 1 over the whole part
                        # (weighting.py), so this is Σ w·loss / (rows × the part's mean weight): normalised by a
                        # constant, never by this batch's Σw, which negative weights can bring to ~0.
                        loss = (torch.nn.functional.binary_cross_entropy_with_logits(
                            logits, target, reduction="none") * wb).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    loss_sum += loss.detach() * yb.shape[0]
                    # Marked on the device (no host sync per step); checked before anything is saved.
                    nonfinite_at = torch.where((nonfinite_at < 0) & ~torch.isfinite(loss.detach()), step, nonfinite_at)
                    hit = (logits.detach() > 0) == (yb > 0.5)
                    correct += hit.sum() if wb is None else (hit * wb).sum()
                    seen += yb.shape[0]
                    bar.update(yb.shape[0] * world)  # the bar counts the rows of all ranks
                    if step % 50 == 0 and progress:
                        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            bar.close()
            sums = distributed.all_reduce_(torch.stack([loss_sum, correct,
                                                        torch.tensor(float(seen), device=device, dtype=torch.float64)]))
            loss_total, correct_total, seen = sums[0].item(), sums[1].item(), int(sums[2].item())
            _refuse_nonfinite(loss_total, nonfinite_at, phase=phase, epoch=epoch, path=path)
            seconds = elapsed_before + time.perf_counter() - t_epoch
            row = dict(phase=phase, epoch=epoch + 1, loss=loss_total / seen, accuracy=correct_total / seen,
                       val_loss=None, val_accuracy=None, lr=opt.param_groups[0]["lr"], seconds=seconds,
                       samples_per_s=(seen - (carry["seen"] if carry is not None and epoch == start_epoch else 0))
                       / max(1e-9, seconds - elapsed_before))
            carry = None
            if val is not None and val.rows:
                row["val_loss"], row["val_accuracy"] = val.loss_and_accuracy(model, precision=precision)
                if row["val_loss"] < best["loss"]:
                    best.update(loss=row["val_loss"], epoch=epoch + 1, bad_epochs=0,
                                state={k: v.detach().clone() for k, v in model.state_dict().items()})
                else:
                    best["bad_epochs"] += 1
            result.history.append(row)
            if path is not None and main_rank:
                save_state(path, model, opt, phase=phase, epoch=epoch + 1, step=0, carry=None, best=best,
                           history=result.history, settings=checkpoint.settings)
            if verbose:
                val_text = "" if row["val_loss"] is None else \
                    f"  val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.4f}"
                print(f"[{phase}] epoch {epoch + 1}/{epochs}  loss {row['loss']:.4f}  acc {row['accuracy']:.4f}{val_text}  "
                      f"{row['seconds']:.1f}s  {row['samples_per_s']:,.0f} ev/s", flush=True)
            if on_epoch is not None and main_rank:
                on_epoch(result.history)
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        torch.set_num_threads(threads_at_start)
    result.thread_changes = list(governor.changes)
    result.seconds = sum(r["seconds"] for r in result.history)
    result.samples_seen = n * len(result.history)
    if best["state"] is not None and patience > 0:
        model.load_state_dict(best["state"])
        result.best_epoch = best["epoch"]
    return result


def _refuse_nonfinite(loss_total: float, nonfinite_at: torch.Tensor, *, phase: str, epoch: int, path) -> None:
    """Stop, naming where, once the loss is NaN or infinite: the weights are then garbage, and the
    checkpoint of the last good epoch (if any) must stay as it is. All ranks see the same summed loss."""
    if math.isfinite(loss_total):
        return
    step = int(nonfinite_at.item())
    where = f"epoch {epoch + 1}, step {step}" if step >= 0 else f"epoch {epoch + 1} (on another process)"
    kept = f"the checkpoint {path} of the last good epoch is kept" if path is not None and path.exists() else \
        "no checkpoint was written"
    raise TrainingDiverged(f"{phase}: the training loss became non-finite ({loss_total}) at {where}; training "
                           f"stopped and nothing was saved ({kept}). Check the data, or try a lower learning rate "
                           "or --precision fp32")


def _thread_note(phase: str):
    def note(change):
        before, after, others = change
        tqdm.write(f"[{phase}] threads {before} -> {after}: other processes use {others:.1f} of this process's cores")
    return note


def _install_sigint(flag: dict):
    def handler(signum, frame):
        if flag["flag"]:  # second Ctrl-C: stop at once
            raise KeyboardInterrupt
        flag["flag"] = True
        print("\nCtrl-C: stopping at the next step and writing a checkpoint (press again to abort now)", flush=True)
    try:
        return signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: leave signals alone
        return signal.getsignal(signal.SIGINT)
