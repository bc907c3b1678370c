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
from typing import NoReturn

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

    Read top to bottom: _setup (optimizer, DDP, resume), then per epoch _train_epoch (its steps: _step),
    _end_epoch (sums, validation, best epoch, checkpoint), and _interrupt on Ctrl-C.
    """
    loop = _setup(model, data, recipe, checkpoint=checkpoint, progress=progress, verbose=verbose)
    # Fewer threads while other processes keep the cores busy (thread_governor.py); restored at the end.
    threads_at_start = torch.get_num_threads()
    governor = thread_governor(threads_at_start, set_threads=torch.set_num_threads,
                               enabled=loop.world == 1 and loop.device.type == "cpu" and machine.threads_governed(),
                               on_change=_thread_note(recipe.phase) if loop.verbose else None)
    previous_handler = _install_sigint(loop.interrupted)
    try:
        for epoch in range(loop.start_epoch, recipe.epochs):
            if loop.best["bad_epochs"] >= recipe.patience > 0:
                break
            sums = _train_epoch(loop, epoch, governor)
            _end_epoch(loop, epoch, sums, val)
            if on_epoch is not None and loop.main_rank:
                on_epoch(loop.result.history)
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        torch.set_num_threads(threads_at_start)
    result = loop.result
    result.thread_changes = list(governor.changes)
    result.seconds = sum(r["seconds"] for r in result.history)
    result.samples_seen = data.rows * len(result.history)
    if loop.best["state"] is not None and recipe.patience > 0:
        model.load_state_dict(loop.best["state"])
        result.best_epoch = loop.best["epoch"]
    return result


@dataclass
class _Loop:
    """What the phases of one fit() share: the model and how it trains, where it resumes, what it keeps."""
    model: torch.nn.Module
    step_model: torch.nn.Module      # the model as the step calls it: wrapped by DDP, torch.compile where asked
    opt: torch.optim.Optimizer
    data: object                     # the part trained on: rows, steps_per_epoch, batches(), exact_resume
    recipe: Recipe
    device: torch.device
    world: int
    main_rank: bool
    progress: bool
    verbose: bool
    checkpoint: Checkpoint | None
    result: FitResult = field(default_factory=FitResult)
    best: dict = field(default_factory=lambda: dict(loss=float("inf"), epoch=None, state=None, bad_epochs=0))
    start_epoch: int = 0
    start_step: int = 0
    carry: dict | None = None        # the interrupted epoch's sums, from the checkpoint resumed
    interrupted: dict = field(default_factory=lambda: dict(flag=False))  # set by Ctrl-C

    @property
    def path(self):
        return self.checkpoint.path if self.checkpoint is not None else None

    def save(self, *, epoch: int, step: int, carry: dict | None) -> None:
        if self.path is not None and self.main_rank:
            save_state(self.path, self.model, self.opt, phase=self.recipe.phase, epoch=epoch, step=step, carry=carry,
                       best=self.best, history=self.result.history, settings=self.checkpoint.settings)


def _setup(model, data, recipe: Recipe, *, checkpoint: Checkpoint | None, progress: bool, verbose: bool) -> _Loop:
    """Everything before the first step: the optimizer, the model as it trains, and the checkpoint's state."""
    if data.rows == 0:
        raise UserError(f"{recipe.phase}: no rows to train on")
    device = next(model.parameters()).device
    rank, world = distributed.world()
    opt = make_optimizer(param_groups(model), name=recipe.optimizer, lr=recipe.lr, weight_decay=recipe.weight_decay,
                         device=device)
    step_model = model
    if world > 1:
        # DDP averages the gradients of trainable parameters only: with adapters, only A and B travel.
        from torch.nn.parallel import DistributedDataParallel
        step_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if recipe.compile:
        step_model = torch.compile(step_model)
    loop = _Loop(model=model, step_model=step_model, opt=opt, data=data, recipe=recipe, device=device, world=world,
                 main_rank=rank == 0, progress=progress and rank == 0, verbose=verbose and rank == 0,
                 checkpoint=checkpoint)
    if checkpoint is not None and checkpoint.resume and checkpoint.path.exists():
        loop.start_epoch, loop.start_step, loop.carry, loop.best, loop.result.history, saved_world = load_state(
            checkpoint.path, model, opt, recipe.phase, settings=checkpoint.settings)
        if loop.verbose:
            print(f"[{recipe.phase}] resuming from {checkpoint.path} at epoch {loop.start_epoch + 1}, "
                  f"step {loop.start_step}")
        if loop.verbose and saved_world != world and not data.exact_resume:
            # A stream's order depends on how the rows are divided among ranks: still correct, not identical.
            print(f"[{recipe.phase}] note: the checkpoint was written by {saved_world} processes, this run has "
                  f"{world}; the rest of the epoch sees its rows in another order than an uninterrupted run would")
    return loop


@dataclass
class _Sums:
    """One epoch's running sums. The tensors stay on the device: no host sync per step."""
    loss_sum: torch.Tensor
    correct: torch.Tensor            # rows classified right, or with weights (mean 1 over the part) their weighted sum
    nonfinite_at: torch.Tensor       # the first step with a NaN/inf loss; -1 while none
    seen: int = 0
    carried_seen: int = 0            # rows of all ranks this epoch had seen before it was interrupted
    seconds_before: float = 0.0      # and the seconds it had taken
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def start(cls, device: torch.device, *, carry: dict | None, main_rank: bool) -> "_Sums":
        zero = dict(device=device, dtype=torch.float64)
        sums = cls(torch.zeros((), **zero), torch.zeros((), **zero),
                   torch.full((), -1, device=device, dtype=torch.int64))
        if carry is not None:
            if main_rank:  # the carried sums are global; add them once
                sums.loss_sum += carry["loss_sum"]
                sums.correct += carry["correct"]
                sums.seen = carry["seen"]
            sums.carried_seen, sums.seconds_before = carry["seen"], carry["seconds"]
        return sums

    def add(self, step: int, loss: torch.Tensor, logits: torch.Tensor, yb: torch.Tensor, wb) -> None:
        self.loss_sum += loss.detach() * yb.shape[0]
        # Marked on the device (no host sync per step); checked before anything is saved.
        self.nonfinite_at = torch.where((self.nonfinite_at < 0) & ~torch.isfinite(loss.detach()), step,
                                        self.nonfinite_at)
        hit = (logits.detach() > 0) == (yb > 0.5)
        self.correct += hit.sum() if wb is None else (hit * wb).sum()
        self.seen += yb.shape[0]

    def totals(self) -> tuple[float, float, int]:
        """(loss sum, correct, rows) over all ranks: the epoch's one host sync."""
        sums = distributed.all_reduce_(torch.stack([self.loss_sum, self.correct, torch.tensor(
            float(self.seen), device=self.loss_sum.device, dtype=torch.float64)]))
        return sums[0].item(), sums[1].item(), int(sums[2].item())

    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started


def _train_epoch(loop: _Loop, epoch: int, governor) -> _Sums:
    """The steps of one epoch (from the checkpoint's step where it resumes), stopping at Ctrl-C."""
    recipe, resumed = loop.recipe, epoch == loop.start_epoch
    loop.model.train()
    sums = _Sums.start(loop.device, carry=loop.carry if resumed else None, main_rank=loop.main_rank)
    first_step = loop.start_step if resumed else 0
    bar = tqdm(total=loop.data.rows, initial=sums.seen, unit="ev", unit_scale=True, disable=not loop.progress,
               leave=False, desc=f"{recipe.phase} {epoch + 1}/{recipe.epochs}", dynamic_ncols=True)
    with contextlib.closing(loop.data.batches(seed=recipe.seed, phase=recipe.phase, epoch=epoch,
                                              first_step=first_step)) as steps:
        for step, (xb, yb, wb) in enumerate(steps, start=first_step):
            governor.poll()
            if _stop_here(loop, step):
                bar.close()
                _interrupt(loop, epoch, step, sums)
            loss, logits = _step(loop, epoch * loop.data.steps_per_epoch + step, xb, yb, wb)
            sums.add(step, loss, logits, yb, wb)
            bar.update(yb.shape[0] * loop.world)  # the bar counts the rows of all ranks
            if step % 50 == 0 and loop.progress:
                bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    bar.close()
    return sums


def _step(loop: _Loop, global_step: int, xb: torch.Tensor, yb: torch.Tensor, wb) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step at the learning rate of `global_step`; returns the loss and the logits (on the device)."""
    recipe = loop.recipe
    step_lr = learning_rate(global_step, total_steps=loop.data.steps_per_epoch * recipe.epochs, lr=recipe.lr,
                            schedule=recipe.schedule, warmup_frac=recipe.warmup_frac)
    for group in loop.opt.param_groups:
        group["lr"] = step_lr * group.get("lr_scale", 1.0)   # LoRA+ groups (lora.param_groups)
    with autocast(loop.device, recipe.precision):
        logits = loop.step_model(xb).float()
    # Label smoothing: targets pulled toward 1/2 by label_smoothing/2 (0 = the plain loss).
    smoothing = recipe.label_smoothing
    target = yb if not smoothing else yb * (1 - smoothing) + 0.5 * smoothing
    if wb is None:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)  # stable, unlike sigmoid + BCE
    else:
        # Per-event weighted BCE. The weights come scaled to mean 1 over the whole part (weighting.py), so
        # this is Σ w·loss / (rows × the part's mean weight): normalised by a constant, never by this
        # batch's Σw, which negative weights can bring to ~0.
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none") * wb).mean()
    loop.opt.zero_grad(set_to_none=True)
    loss.backward()
    loop.opt.step()
    return loss, logits


def _end_epoch(loop: _Loop, epoch: int, sums: _Sums, val) -> None:
    """The epoch's history row (refused if the loss went non-finite), its validation and the best epoch so
    far, the checkpoint, and the one-line summary."""
    phase = loop.recipe.phase
    loss_total, correct_total, seen = sums.totals()
    _refuse_nonfinite(loss_total, sums.nonfinite_at, phase=phase, epoch=epoch, path=loop.path)
    seconds = sums.seconds()
    row = dict(phase=phase, epoch=epoch + 1, loss=loss_total / seen, accuracy=correct_total / seen,
               val_loss=None, val_accuracy=None, lr=loop.opt.param_groups[0]["lr"], seconds=seconds,
               samples_per_s=(seen - sums.carried_seen) / max(1e-9, seconds - sums.seconds_before))
    loop.carry = None
    if val is not None and val.rows:
        row["val_loss"], row["val_accuracy"] = val.loss_and_accuracy(loop.model, precision=loop.recipe.precision)
        if row["val_loss"] < loop.best["loss"]:
            loop.best.update(loss=row["val_loss"], epoch=epoch + 1, bad_epochs=0,
                             state={k: v.detach().clone() for k, v in loop.model.state_dict().items()})
        else:
            loop.best["bad_epochs"] += 1
    loop.result.history.append(row)
    loop.save(epoch=epoch + 1, step=0, carry=None)
    if loop.verbose:
        val_text = "" if row["val_loss"] is None else \
            f"  val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.4f}"
        print(f"[{phase}] epoch {epoch + 1}/{loop.recipe.epochs}  loss {row['loss']:.4f}  acc {row['accuracy']:.4f}"
              f"{val_text}  {row['seconds']:.1f}s  {row['samples_per_s']:,.0f} ev/s", flush=True)


def _stop_here(loop: _Loop, step: int) -> bool:
    """Whether Ctrl-C stops training at this step. Ranks agree on where to stop: the same step everywhere."""
    if loop.world == 1:
        return loop.interrupted["flag"]
    return step % 8 == 0 and distributed.any_rank(loop.interrupted["flag"], loop.device)


def _interrupt(loop: _Loop, epoch: int, step: int, sums: _Sums) -> NoReturn:
    """Ctrl-C: keep the state at this step (with the epoch's sums so far, unless they went non-finite) and
    raise Interrupted."""
    loss_total, correct_total, seen = sums.totals()
    _refuse_nonfinite(loss_total, sums.nonfinite_at, phase=loop.recipe.phase, epoch=epoch, path=loop.path)
    loop.save(epoch=epoch, step=step, carry=dict(loss_sum=loss_total, correct=correct_total, seen=seen,
                                                 seconds=sums.seconds()))
    where = f"a checkpoint was written to {loop.path}" if loop.path else "no checkpoint was kept"
    raise Interrupted(f"{loop.recipe.phase} training stopped at epoch {epoch + 1}, step {step}; {where}")


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
