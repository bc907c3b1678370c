"""Fewer training threads while other processes keep this process's cores busy; all of them again when
they leave.

OpenMP threads meet at a barrier after every parallel region, so when another busy process takes one of
two cores, every step waits for the descheduled thread: 2 threads then ran at ~0.28x their quiet speed
on a 2-core machine, where 1 thread kept ~0.6x (benchmarks/bench_contention.py). Making idle threads
sleep (OMP_WAIT_POLICY=PASSIVE) instead only reached ~0.5x, and cost 5-14 % of the quiet speed. So the
threads stay as fast as OpenMP makes them, and the governor measures, once a second of training (EVERY_S),
how much CPU time *other* processes took on this process's CPUs (/proc/stat minus /proc/self/stat) and
sets PyTorch's threads to the cores left free (at least 1, at most the configured count). Lowering
happens on the first check that calls for it; raising needs two checks in a row, so a short burst
elsewhere does not make the count flap.

Linux only (elsewhere, or where a cgroup quota rather than the affinity mask limits the cores, it does
nothing: other containers' load on the host's CPUs says nothing about this one's share).
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Callable

from higgs_lora.hardware.machine import cpu_ticks, others_between, own_ticks

FIRST_CHECK_S = 0.5      # the first look, soon after training starts
EVERY_S = 1.0            # then once a second: a /proc read costs ~0.1 ms


class ThreadGovernor:
    """Call `poll()` once per training step; it reads the clock and, when a check is due, /proc."""

    def __init__(self, threads: int, *, cpus: set[int], set_threads: Callable[[int], None],
                 clock: Callable[[], float] = time.monotonic, busy: Callable[[], int] | None = None,
                 own: Callable[[], int] | None = None, hz: int | None = None, on_change=None):
        self.max_threads = self.threads = threads
        self.n_cpus = len(cpus)
        self._set, self._clock, self._on_change = set_threads, clock, on_change
        self._busy = busy or (lambda: cpu_ticks(cpus))
        self._own = own or own_ticks
        self._hz = hz or os.sysconf("SC_CLK_TCK")
        self._last = (clock(), self._busy(), self._own())
        self._due = self._last[0] + FIRST_CHECK_S
        self._raise_votes = 0
        self.changes: list[tuple[int, int, float]] = []   # (from, to, others' load in cores)

    def poll(self) -> None:
        now = self._clock()
        if now < self._due:
            return
        self._due = now + EVERY_S
        sample = (now, self._busy(), self._own())
        others = others_between(self._last, sample, hz=self._hz)
        self._last = sample
        target = min(self.max_threads, max(1, math.floor(self.n_cpus - others + 0.5)))
        if target < self.threads:
            self._apply(target, others)
        elif target > self.threads:
            self._raise_votes += 1
            if self._raise_votes >= 2:
                self._apply(target, others)
        else:
            self._raise_votes = 0

    def _apply(self, target: int, others: float) -> None:
        self.changes.append((self.threads, target, others))
        self._raise_votes = 0
        self.threads = target
        self._set(target)
        if self._on_change is not None:
            self._on_change(self.changes[-1])


class _Idle:
    threads = None
    changes: list = []

    def poll(self) -> None:
        pass


def thread_governor(threads: int, *, set_threads: Callable[[int], None], enabled: bool, on_change=None):
    """A ThreadGovernor over the CPUs of the affinity mask, or one that does nothing where it cannot help:
    `enabled` False (hardware.threads_governed: the user chose the threads, a cgroup quota limits them;
    several processes train together), one thread, or no /proc."""
    if not enabled or threads < 2 or not Path("/proc/stat").exists() or not hasattr(os, "sched_getaffinity"):
        return _Idle()
    cpus = os.sched_getaffinity(0)
    try:
        return ThreadGovernor(threads, cpus=cpus, set_threads=set_threads, on_change=on_change)
    except (OSError, ValueError, IndexError):
        return _Idle()
