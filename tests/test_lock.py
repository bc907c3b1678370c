"""A run directory is locked while a process writes it (an OS lock, released by the kernel when the process
ends): a second run, --force or --resume into it is refused naming the live process; once that process is
gone, even killed, the directory is free again."""
import os
import signal
import subprocess
import sys
import time

from conftest import cli, write_higgs_csv


def test_second_process_is_refused_while_the_first_writes(tmp_path):
    data = write_higgs_csv(tmp_path / "h.csv", 20000, seed=3)
    args = ["--data", data, "--preset", "notebook", "--train-rows", "15000", "--test-rows", "1000",
            "--batch-size", "128", "--no-progress"]
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "higgs_lora", "train", *map(str, args), "--epochs", "200",
                              "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        deadline = time.time() + 120
        while not (out / "checkpoints" / "base.safetensors").exists() and first.poll() is None \
                and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, first.stderr.read()
        assert (out / ".lock").read_text().strip() == str(first.pid)
        for extra in (["--force"], ["--resume"], []):
            p = cli("train", *args, "--epochs", "200", "--out", out, *extra, check=False)
            lines = p.stderr.strip().splitlines()
            assert p.returncode == 1 and len(lines) == 1, p.stderr
            assert f"in use by process {first.pid}" in lines[0] and str(out) in lines[0]
        p = cli("run", *args, "--out", out, "--force", check=False)
        assert p.returncode == 1 and f"in use by process {first.pid}" in p.stderr
        p = cli("strategies", *args, "--out", out, "--force", check=False)
        assert p.returncode == 1 and f"in use by process {first.pid}" in p.stderr
        assert first.poll() is None  # the refusals left the first process alone
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # Killed: the kernel released its lock, and the directory can be taken over.
    p = cli("train", *args, "--epochs", "1", "--out", out, "--force")
    assert (out / "base.safetensors").exists() and (out / ".lock").read_text().strip() != str(first.pid)
