"""Two processes on this CPU with torchrun and gloo: the same work as one process, files written once."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import TORCHRUN, torchrun, write_higgs_csv

ARGS = ["--preset", "notebook", "--train-rows", "4000", "--test-rows", "1000", "--batch-size", "256", "--no-progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_higgs_csv(tmp_path_factory.mktemp("ddp") / "higgs.csv", 8000, seed=3)


def test_two_processes_match_one(data, tmp_path):
    for n in (1, 2):
        torchrun(n, "run", "--data", data, "--out", tmp_path / f"w{n}", "--epochs", "3", "--ft-epochs", "1",
                 "--no-report", *ARGS)
    one, two = (json.loads((tmp_path / f"w{n}" / "metrics.json").read_text()) for n in (1, 2))
    assert two["distributed"]["world_size"] == 2
    fps = two["distributed"]["merged_fingerprints"]
    assert len(fps) == 2 and fps[0] == fps[1]  # both ranks merged to the same weights
    for part in ("base", "adapted"):
        assert abs(one[part]["accuracy"] - two[part]["accuracy"]) < 0.02, (part, one[part], two[part])
        assert abs(one[part]["roc_auc"] - two[part]["roc_auc"]) < 0.01
    # one set of files, no leftovers from the second rank
    names = sorted(p.name for p in (tmp_path / "w2").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "w1").iterdir())
    assert not any(n.endswith(".tmp") for n in names)


def test_two_process_failure_exits_nonzero(data, tmp_path):
    p = torchrun(2, "run", "--data", data, "--out", tmp_path / "x", "--train-rows", "9000", check=False)
    assert p.returncode != 0 and "more than the 8,000 rows" in p.stderr


def test_two_processes_on_a_shard_directory(data, tmp_path):
    # Parquet shards: each rank parses (caches) half of them, then reads only the rows it trains on.
    import pyarrow as pa
    import pyarrow.parquet as pq
    from higgs_lora.data.read import load_table
    table = load_table(data, use_cache=False)
    (tmp_path / "shards").mkdir()
    for i, start in enumerate(range(0, table.rows, 1500)):
        cols = {"label": table.labels[start:start + 1500]}
        cols |= {f"f{j}": table.features[start:start + 1500, j] for j in range(28)}
        pq.write_table(pa.table(cols), tmp_path / "shards" / f"part-{i}.parquet")
    for n in (1, 2):
        p = torchrun(n, "run", "--data", tmp_path / "shards", "--cache-dir", tmp_path / f"cache{n}", "--out",
                     tmp_path / f"w{n}", "--epochs", "3", "--ft-epochs", "1", "--no-report", *ARGS)
    assert len(list((tmp_path / "cache2").iterdir())) == 6  # every shard cached once
    # Each rank reads its own half of each part: train rows 0..3,999 and extra rows 4,000..6,999.
    assert "rank 0: rows 0..1,999 (2,000) from 2 shards part-0.parquet..part-1.parquet" in p.stdout
    assert "rank 1: rows 2,000..3,999 (2,000) from 2 shards part-1.parquet..part-2.parquet" in p.stdout
    assert "rank 0: rows 4,000..5,499 (1,500) from 2 shards part-2.parquet..part-3.parquet" in p.stdout
    assert "rank 1: rows 5,500..6,999 (1,500) from 2 shards part-3.parquet..part-4.parquet" in p.stdout
    one, two = (json.loads((tmp_path / f"w{n}" / "metrics.json").read_text()) for n in (1, 2))
    fps = two["distributed"]["merged_fingerprints"]
    assert two["distributed"]["world_size"] == 2 and len(fps) == 2 and fps[0] == fps[1]
    for part in ("base", "adapted"):
        assert abs(one[part]["roc_auc"] - two[part]["roc_auc"]) < 0.02, (part, one[part], two[part])
    assert sorted(p.name for p in (tmp_path / "w2").iterdir()) == sorted(p.name for p in (tmp_path / "w1").iterdir())


@pytest.mark.parametrize("layout", ["file", "shards"])
def test_two_process_kill_and_resume_equals_uninterrupted(tmp_path, layout):
    data = write_higgs_csv(tmp_path / "big.csv", 30000, seed=4)
    if layout == "shards":
        subprocess.run([sys.executable, "-m", "higgs_lora", "shard", str(data), "--out", str(tmp_path / "shards"),
                        "--rows-per-shard", "4000"], check=True, capture_output=True)
        data = tmp_path / "shards"
    args = ["train", "--data", data, "--preset", "notebook", "--train-rows", "20000", "--test-rows", "1000", "--epochs", "4",
            "--batch-size", "128", "--no-progress"]
    torchrun(2, *args, "--out", tmp_path / "ref")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([*TORCHRUN, "--nproc_per_node=2", "-m", "higgs_lora", *map(str, args), "--out",
                             str(tmp_path / "killed")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    checkpoint = tmp_path / "killed" / "checkpoints" / "base.safetensors"
    deadline = time.time() + 300
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert proc.poll() is None, "finished before the kill; make the data bigger"
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers, at once
    proc.wait()
    assert not (tmp_path / "killed" / "base.safetensors").exists()
    torchrun(2, *args, "--out", tmp_path / "killed", "--resume")
    ref, resumed = (load_file(tmp_path / d / "base.safetensors") for d in ("ref", "killed"))
    assert all(torch.equal(ref[k], resumed[k]) for k in ref)
