"""machine.py: usable cores from affinity and cgroup quotas (fake cgroup trees), the OpenMP environment,
and the precision choice with the capability and the probe replaced both ways."""
from __future__ import annotations

import json

import pytest
import torch

from higgs_lora.hardware import machine
from higgs_lora.hardware.machine import Cores, PrecisionChoice, choose_precision, scaled_epochs, usable_cores
from higgs_lora.model.network import ResidualMLP


# ---------------------------------------------------------------- cores

def fake_cgroup(tmp_path, proc_line: str, files: dict[str, str]):
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text(proc_line)
    return dict(cgroup_root=root, proc_cgroup=proc)


def test_cores_from_affinity_without_quota(tmp_path):
    paths = fake_cgroup(tmp_path, "0::/user.slice/job\n", {"user.slice/job/cpu.max": "max 100000\n"})
    cores = usable_cores(affinity={0, 3, 5}, **paths)
    assert cores.n == 3
    assert "3 CPUs in the affinity mask" in cores.reason and "no cgroup CPU quota" in cores.reason


def test_cgroup_v2_quota_caps_and_rounds_up(tmp_path):
    paths = fake_cgroup(tmp_path, "0::/kubepods/pod1/ctr\n", {"kubepods/pod1/ctr/cpu.max": "150000 100000\n"})
    cores = usable_cores(affinity=set(range(16)), **paths)
    assert cores.n == 2
    assert "cgroup quota 1.5 CPUs" in cores.reason and "cpu.max" in cores.reason


def test_cgroup_v2_tightest_ancestor_wins(tmp_path):
    paths = fake_cgroup(tmp_path, "0::/slurm/job7/step0\n", {
        "slurm/job7/step0/cpu.max": "max 100000\n",
        "slurm/job7/cpu.max": "300000 100000\n",
        "slurm/cpu.max": "800000 100000\n"})
    assert usable_cores(affinity=set(range(8)), **paths).n == 3


def test_cgroup_v2_container_root_mount(tmp_path):
    # Inside a container /proc/self/cgroup names a host path that is not mounted; its own cgroup is the root.
    paths = fake_cgroup(tmp_path, "0::/../../docker/abc\n", {"cpu.max": "100000 100000\n"})
    assert usable_cores(affinity={0, 1}, **paths).n == 1


def test_cgroup_v1_quota(tmp_path):
    paths = fake_cgroup(tmp_path, "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n", {
        "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "200000\n",
        "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"})
    cores = usable_cores(affinity=set(range(4)), **paths)
    assert cores.n == 2 and "cpu.cfs_quota_us" in cores.reason


def test_cgroup_v1_no_quota_and_tiny_quota(tmp_path):
    unlimited = fake_cgroup(tmp_path / "a", "3:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"})
    assert usable_cores(affinity={0, 1}, **unlimited).n == 2
    tiny = fake_cgroup(tmp_path / "b", "3:cpu:/\n", {"cpu/cpu.cfs_quota_us": "20000\n", "cpu/cpu.cfs_period_us": "100000\n"})
    assert usable_cores(affinity={0, 1}, **tiny).n == 1  # a fifth of a CPU still gets one thread


def test_no_cgroup_files_at_all(tmp_path):
    assert usable_cores(affinity={0, 1}, cgroup_root=tmp_path / "none", proc_cgroup=tmp_path / "none2").n == 2


def test_configure_threads_sets_omp_environment():
    env = {"PATH": "/bin"}
    setting = machine.configure_threads(env, cores=Cores(3, "3 CPUs in the affinity mask"))
    assert "3 CPUs in the affinity mask" in setting.reason and "fewer while other processes" in setting.reason
    # the wait policy stays OpenMP's (the fastest when quiet): the governor handles contention
    assert env["OMP_NUM_THREADS"] == "3" and "OMP_WAIT_POLICY" not in env
    assert setting.threads == 3 and setting.environment == {"OMP_NUM_THREADS": "3"}


@pytest.mark.parametrize("user", [{"OMP_NUM_THREADS": "1"}, {"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "0"}])
def test_configure_threads_never_overrides_the_user(user):
    env = dict(user)
    setting = machine.configure_threads(env, cores=Cores(4, "4 CPUs"))
    assert env == user and setting.environment == {}
    assert "set by the environment" in setting.reason
    assert setting.threads == (1 if "OMP_NUM_THREADS" in user else 4)


# ---------------------------------------------------------------- native bf16

def test_native_bf16_needs_the_flag_and_an_uncapped_isa():
    assert machine.native_bf16("cpu", flags=frozenset({"avx2", "fma"}), isa="AVX2")[0] is False
    ok, why = machine.native_bf16("cpu", flags=frozenset({"avx512f", "avx512_bf16", "amx_bf16"}), isa="AVX512")
    assert ok and "avx512_bf16" in why
    capped, why = machine.native_bf16("cpu", flags=frozenset({"avx512_bf16"}), isa="AVX2")
    assert not capped and "AVX2" in why


def test_cpu_model_and_flags_from_cpuinfo_text():
    text = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2 fma\n"
    assert machine.cpu_model(cpuinfo=text) == "AMD EPYC 7B13"
    assert machine.cpu_flags(cpuinfo=text) == {"fpu", "avx2", "fma"}


# ---------------------------------------------------------------- precision

def make_model():
    return ResidualMLP(n_features=5, width=8, n_blocks=1, head_width=4)


def choose(requested, *, native, speedup):
    calls = []

    def probe(**kw):
        calls.append(kw)
        return speedup
    choice = choose_precision(requested, device="cpu", make_model=make_model, n_features=5, batch_size=64,
                              probe=probe, native=native)
    return choice, calls


NATIVE = (True, "avx512_bf16 at AVX512")
EMULATED = (False, "no native bf16 on this CPU (no avx512_bf16/amx_bf16 flag)")


def test_auto_picks_bf16_where_native_and_measured_faster():
    choice, calls = choose("auto", native=NATIVE, speedup=1.9)
    assert choice.precision == "bf16" and choice.bf16_speedup == 1.9 and choice.warning is None
    assert "1.90x" in choice.reason and len(calls) == 1 and calls[0]["batch_size"] == 64


def test_auto_keeps_fp32_where_native_but_not_faster():
    choice, _ = choose("auto", native=NATIVE, speedup=1.03)
    assert choice.precision == "fp32" and choice.bf16_speedup == 1.03 and "1.03x" in choice.reason


def test_auto_keeps_fp32_without_native_bf16_and_does_not_probe():
    choice, calls = choose("auto", native=EMULATED, speedup=99.0)
    assert choice.precision == "fp32" and calls == [] and "no native bf16" in choice.reason


def test_explicit_bf16_where_emulated_obeys_with_the_measured_slowdown():
    choice, calls = choose("bf16", native=EMULATED, speedup=1 / 8.5)
    assert choice.precision == "bf16" and len(calls) == 1
    assert choice.warning.startswith("warning:") and "8.5x slowdown" in choice.warning and "\n" not in choice.warning


def test_explicit_bf16_where_native_and_fp32_do_not_probe():
    expected = PrecisionChoice("bf16", "requested; native bf16: " + NATIVE[1], None)
    assert choose("bf16", native=NATIVE, speedup=0.1) == (expected, [])
    assert choose("fp32", native=NATIVE, speedup=9.0)[0].precision == "fp32"


def test_unknown_precision_fails_loudly():
    with pytest.raises(ValueError, match="auto, fp32 or bf16"):
        choose("fp16", native=NATIVE, speedup=1.0)


def test_epochs_scale_with_the_measured_speed():
    bf16 = PrecisionChoice("bf16", "auto", 1.87)
    assert scaled_epochs(10, bf16) == 18
    assert scaled_epochs(10, PrecisionChoice("fp32", "auto", 1.05)) == 10
    assert scaled_epochs(10, PrecisionChoice("bf16", "requested", None)) == 10
    assert scaled_epochs(1, PrecisionChoice("bf16", "auto", 0.5)) == 1


@pytest.fixture
def quiet(monkeypatch):
    """No other process busy during a probe (whatever this machine is doing meanwhile)."""
    monkeypatch.setattr(machine, "others_cores", lambda since: 0.0)


def test_probe_is_cached_per_machine_and_model(tmp_path, monkeypatch, quiet):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    measured = []

    def fake_measure(model, **kw):
        measured.append(kw)
        return 1.5
    monkeypatch.setattr(machine, "measure_speedup", fake_measure)
    args = dict(device="cpu", make_model=make_model, n_features=5, batch_size=64)
    assert machine.cached_probe(**args) == 1.5
    assert machine.cached_probe(**args) == 1.5
    assert len(measured) == 1  # the second came from the cache
    machine.cached_probe(**{**args, "batch_size": 128})  # another batch is another measurement
    assert len(measured) == 2
    cache = json.loads((tmp_path / "higgs-lora" / "hardware.json").read_text())
    key = json.loads(next(iter(cache)))
    assert key["threads"] == torch.get_num_threads() and key["device"] == machine.cpu_model()
    assert "ResidualMLP" in key["model"] and key["torch"] == torch.__version__


def test_damaged_cache_is_measured_again(tmp_path, monkeypatch, quiet):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    (tmp_path / "higgs-lora").mkdir()
    (tmp_path / "higgs-lora" / "hardware.json").write_text("{not json")
    monkeypatch.setattr(machine, "measure_speedup", lambda model, **kw: 2.0)
    assert machine.cached_probe(device="cpu", make_model=make_model, n_features=5, batch_size=64) == 2.0
    assert len(json.loads((tmp_path / "higgs-lora" / "hardware.json").read_text())) == 1


def test_real_probe_measures_both_precisions_briefly():
    times = machine.step_times(make_model(), device="cpu", n_features=5, batch_size=64, kind="train",
                                seconds=0.05)
    assert set(times) == {"fp32", "bf16"} and all(len(t) >= machine.PROBE_MIN_STEPS for t in times.values())
    assert machine.measure_speedup(make_model(), device="cpu", n_features=5, batch_size=64, kind="infer",
                                    seconds=0.05) > 0


def test_refresh_measures_again_and_replaces_the_cached_probe(tmp_path, monkeypatch, quiet):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    answers = iter([0.9, 1.7])
    monkeypatch.setattr(machine, "measure_speedup", lambda model, **kw: next(answers))
    args = dict(device="cpu", make_model=make_model, n_features=5, batch_size=64)
    assert machine.cached_probe(**args) == 0.9
    assert machine.cached_probe(**args, refresh=True) == 1.7
    assert machine.cached_probe(**args) == 1.7


def test_doctor_reports_machine_choice_and_rates(tmp_path, monkeypatch):
    from higgs_lora.pipeline import diagnosis
    from higgs_lora.config import ModelConfig

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    d = diagnosis.diagnose(model_config=ModelConfig(n_features=5, width=8, n_blocks=1, head_width=4), batch_size=64,
                        seconds=0.05)
    json.dumps(d)  # what --json prints
    assert d["cpu"]["isa"] == torch.backends.cpu.get_cpu_capability() and d["cpu"]["model"] == machine.cpu_model()
    assert d["cores"]["usable"] == machine.usable_cores().n and d["cores"]["torch_threads"] == torch.get_num_threads()
    assert d["cores"]["threads_reason"]
    assert d["auto"]["precision"] in ("fp32", "bf16") and d["auto"]["reason"].startswith("auto: ")
    for kind in ("train_samples_per_s", "inference_rows_per_s"):
        rates = d["probe"][kind]
        assert rates["fp32"] > 0 and rates["bf16"] > 0
        assert rates["bf16_speedup"] > 0  # the median of neighbouring steps' ratios, not rates' ratio
    text = diagnosis.format_report(d)
    assert d["cpu"]["model"] in text and f"ISA level:  {d['cpu']['isa']}" in text
    assert f"auto:       {d['auto']['precision']}" in text and "native bf16: " in text


def test_speedup_is_the_median_of_neighbouring_step_ratios(monkeypatch):
    # A busy spell slows both precisions' steps at once: their ratio stays, the medians apart would not.
    times = {"fp32": [0.02, 0.02, 0.06, 0.06, 0.06], "bf16": [0.01, 0.01, 0.01, 0.03, 0.03]}  # medians: 6x
    monkeypatch.setattr(machine, "step_times", lambda *a, **kw: times)
    assert machine.measure_speedup(make_model(), device="cpu", n_features=5, batch_size=64) == 2.0


def test_a_probe_taken_while_other_processes_are_busy_is_neither_used_nor_cached(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    answers = iter([2.4, 1.3, 1.25])
    monkeypatch.setattr(machine, "measure_speedup", lambda model, **kw: next(answers))
    load = iter([1.2, 0.1])   # a busy neighbour during the first probe, gone for the second
    monkeypatch.setattr(machine, "others_cores", lambda since: next(load))
    args = dict(device="cpu", make_model=make_model, n_features=5, batch_size=64)
    assert machine.cached_probe(**args) is None     # no quiet probe to fall back on: the caller runs fp32
    err = capsys.readouterr().err
    assert "used 1.2 cores" in err and "(2.40x) is neither used nor cached" in err and "fp32 and its budget" in err
    assert not (tmp_path / "higgs-lora" / "hardware.json").exists()
    assert machine.cached_probe(**args) == 1.3      # measured again, quiet this time: kept
    assert machine.cached_probe(**args) == 1.3
    cached = json.loads((tmp_path / "higgs-lora" / "hardware.json").read_text())
    assert [v["others_cores"] for v in cached.values()] == [0.1]


def test_a_busy_refresh_falls_back_on_the_cached_quiet_probe(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    answers = iter([1.3, 2.9])
    monkeypatch.setattr(machine, "measure_speedup", lambda model, **kw: next(answers))
    load = iter([0.0, 1.8])
    monkeypatch.setattr(machine, "others_cores", lambda since: next(load))
    args = dict(device="cpu", make_model=make_model, n_features=5, batch_size=64)
    assert machine.cached_probe(**args) == 1.3                  # quiet: cached
    before = (tmp_path / "higgs-lora" / "hardware.json").read_text()
    assert machine.cached_probe(**args, refresh=True) == 1.3    # busy: the quiet one, not 2.9
    assert "quiet probe cached on" in capsys.readouterr().err
    assert (tmp_path / "higgs-lora" / "hardware.json").read_text() == before


def test_auto_without_a_trustworthy_probe_runs_fp32():
    choice = machine.choose_precision("auto", device="cpu", make_model=make_model, n_features=5, batch_size=64,
                                       probe=lambda **kw: None, native=(True, "mocked"))
    assert choice.precision == "fp32" and choice.bf16_speedup is None and "busy" in choice.reason
    choice = machine.choose_precision("bf16", device="cpu", make_model=make_model, n_features=5, batch_size=64,
                                       probe=lambda **kw: None, native=(False, "emulated"))
    assert choice.precision == "bf16" and "could not be measured" in choice.warning


def test_others_load_is_measured_from_proc():
    import os
    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc on this system")
    before = machine.load_sample()
    others = machine.others_cores(before)
    assert others is not None and 0.0 <= others <= len(os.sched_getaffinity(0)) + 0.5


def test_others_load_over_a_few_ticks_never_exceeds_the_cpus_sampled():
    # Two samples 0.1 ms apart that straddle one tick of each CPU: 2 ticks / 100 Hz / 1e-4 s would be 200 cores.
    before, after = (0.0, 0, 0, {0, 1}), (1e-4, 2, 0, {0, 1})
    assert machine.others_between(before, after, hz=100) == 2.0
    assert machine.others_between((0.0, 0, 0, {0, 1}), (1.0, 150, 50, {0, 1}), hz=100) == 1.0
