"""The thread governor on a made-up clock and made-up /proc counters: fewer threads while other processes
take the cores, all of them again (after two agreeing checks) when they leave; and the /proc parsers
against files written here in the kernel's format."""
import pytest

from higgs_lora.hardware import machine
from higgs_lora.hardware import governor as tg

HZ = 100


class FakeMachine:
    """A clock and the busy ticks of the CPUs: `run(seconds, mine=cores, others=cores)` advances both."""

    def __init__(self):
        self.now, self.busy, self.own = 0.0, 0, 0

    def run(self, seconds, *, mine, others):
        self.now += seconds
        self.own += round(mine * seconds * HZ)
        self.busy += round((mine + others) * seconds * HZ)


def governor(machine, threads=2, cpus=2):
    seen = []
    g = tg.ThreadGovernor(threads, cpus=set(range(cpus)), set_threads=seen.append, clock=lambda: machine.now,
                          busy=lambda: machine.busy, own=lambda: machine.own, hz=HZ)
    return g, seen


def test_quiet_machine_keeps_every_thread():
    m = FakeMachine()
    g, seen = governor(m)
    for _ in range(20):
        m.run(0.3, mine=2.0, others=0.05)
        g.poll()
    assert g.threads == 2 and seen == [] and g.changes == []


def test_a_busy_neighbour_lowers_the_threads_at_the_first_check_and_its_departure_raises_them_after_two():
    m = FakeMachine()
    g, seen = governor(m)
    m.run(0.6, mine=1.33, others=0.67)   # one busy process beside two spinning threads: 2/3 of a core each
    g.poll()
    assert seen == [1] and g.threads == 1 and g.changes[0][:2] == (2, 1)
    assert g.changes[0][2] == pytest.approx(0.67, abs=0.02)
    for _ in range(5):                   # still there: stays at 1
        m.run(1.1, mine=1.0, others=1.0)
        g.poll()
    assert seen == [1]
    m.run(1.1, mine=1.0, others=0.0)     # gone: one check is not enough ...
    g.poll()
    assert g.threads == 1
    m.run(1.1, mine=1.0, others=0.0)     # ... two in a row are
    g.poll()
    assert seen == [1, 2] and g.threads == 2


def test_a_short_burst_elsewhere_does_not_raise_and_lower_in_turn():
    m = FakeMachine()
    g, seen = governor(m)
    m.run(0.6, mine=1.0, others=1.0)
    g.poll()
    assert seen == [1]
    for others in (0.0, 1.0, 0.0, 1.0):  # free, busy, free, busy: never two free checks in a row
        m.run(1.1, mine=1.0, others=others)
        g.poll()
    assert seen == [1]


def test_checks_wait_for_their_time_and_never_leave_the_bounds():
    m = FakeMachine()
    g, seen = governor(m, threads=4, cpus=8)
    m.run(0.2, mine=4, others=7.9)       # too early for the first check
    g.poll()
    assert seen == []
    m.run(0.5, mine=0.1, others=7.9)     # 8 CPUs all taken: one thread, never zero
    g.poll()
    assert seen == [1]
    for _ in range(3):                   # all free: back to the configured 4, never the 8 CPUs
        m.run(1.1, mine=1, others=0)
        g.poll()
    assert g.threads == 4 and seen == [1, 4]


def test_the_governor_stays_idle_where_it_cannot_help():
    calls = []
    assert tg.thread_governor(1, set_threads=calls.append, enabled=True).threads is None
    assert tg.thread_governor(4, set_threads=calls.append, enabled=False).threads is None


def test_proc_parsers_read_the_kernel_format(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  400 0 200 9000 10 5 5 0 0 0\n"
                    "cpu0 100 0 50 4500 5 2 3 1 0 0\n"
                    "cpu1 300 0 150 4500 5 3 2 4 0 0\n"
                    "intr 123\nctxt 456\n")
    assert machine.cpu_ticks({0}, stat=stat) == 100 + 50 + 2 + 3 + 1
    assert machine.cpu_ticks({0, 1}, stat=stat) == 156 + 300 + 150 + 3 + 2 + 4
    self_stat = tmp_path / "self"
    self_stat.write_text("1234 (python (a) b) R 1 1234 1234 0 -1 4194304 100 0 0 0 250 30 0 0 20 0 3 0 55 0 0\n")
    assert machine.own_ticks(stat=self_stat) == 280


def test_real_proc_files_parse_here():
    import os
    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc on this system")
    busy, own = machine.cpu_ticks(os.sched_getaffinity(0)), machine.own_ticks()
    assert busy >= own >= 0 and busy > 0
