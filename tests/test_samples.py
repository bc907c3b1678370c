"""Samples per process: SPEC parsing, assembly into one table, the per-sample split, the balance lines,
the errors, and a whole `run` on ROOT samples; and that no flag is ever abbreviated."""
import dataclasses
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_root

from higgs_lora.cli import main
from higgs_lora.data.samples import BACKGROUND, SIGNAL, balance_lines, load_samples, parse_spec
from higgs_lora.errors import UserError


pytestmark = pytest.mark.usefixtures("no_stray_caches")  # conftest.py: caches in tmp_path, never in ~


def write_parquet(path, n, *, start, mu=0.0, seed=0, weight=None):
    """Column `id` numbers the rows (start, start+1, ...), so a test can follow each row."""
    rng = np.random.default_rng(seed)
    cols = dict(id=np.arange(start, start + n, dtype=np.float64), x=rng.normal(mu, 1, n))
    cols["w"] = rng.uniform(0.5, 1.5, n) if weight is None else weight
    pq.write_table(pa.table(cols), path)
    return path


@pytest.fixture
def samples(tmp_path):
    (tmp_path / "bkg").mkdir()
    write_parquet(tmp_path / "sig.parquet", 1100, start=0, mu=1)
    write_parquet(tmp_path / "bkg" / "a.parquet", 2200, start=10_000, seed=1)
    write_parquet(tmp_path / "bkg" / "b.parquet", 330, start=20_000, seed=2)
    return [parse_spec(str(tmp_path / "sig.parquet*0.5"), flag="--signal", label=SIGNAL),
            parse_spec(str(tmp_path / "bkg" / "*.parquet"), flag="--background", label=BACKGROUND)]


def test_parse_spec(tmp_path):
    (tmp_path / "ttbar").mkdir()
    for name in ("b.root", "a.root", "notes.txt"):
        (tmp_path / "ttbar" / name).write_bytes(b"root")
    s = parse_spec(f"{tmp_path}/ttbar/*.root:events*0.83", flag="--background", label=0)
    assert (s.name, s.tree, s.scale, s.label) == ("ttbar", "events", 0.83, 0)
    assert [f.name for f in s.files] == ["a.root", "b.root"]
    d = parse_spec(str(tmp_path / "ttbar"))  # a directory: its data files, sorted
    assert [f.name for f in d.files] == ["a.root", "b.root"] and d.name == "ttbar" and d.tree is None and d.scale == 1
    f = parse_spec(f"{tmp_path}/ttbar/a.root:t")
    assert f.name == "a" and f.tree == "t" and len(f.files) == 1
    with pytest.raises(UserError, match=r"--signal .*nope/\*.root: matches no file"):
        parse_spec(f"{tmp_path}/nope/*.root")
    with pytest.raises(UserError, match=r"the scale -2 must be a positive number"):
        parse_spec(f"{tmp_path}/ttbar*-2")


def test_assembly_split_per_sample_reproducible_and_keeping_fractions(samples):
    table, split = load_samples(samples, weight="w", seed=7)
    again, _ = load_samples(samples, weight="w", seed=7)
    np.testing.assert_array_equal(table.features, again.features)  # reproducible
    other, _ = load_samples(samples, weight="w", seed=8)
    assert not np.array_equal(table.features, other.features)
    ids = table.features[:, table.feature_names.index("id")]
    assert sorted(ids.tolist()) == list(range(1100)) + list(range(10_000, 12_200)) + list(range(20_000, 20_330))
    # each sample keeps the notebook's fractions: 2/11 train, 0.5/11 test
    sizes = {"sig": 1100, "bkg": 2530}
    parts = {"train": slice(0, split.train_rows), "test": slice(table.rows - split.test_rows, table.rows)}
    for i, info in enumerate(table.samples):
        n = sizes[info.name]
        assert info.extra["rows"] == n
        assert int(np.sum(table.sample[parts["train"]] == i)) == (2 * n + 5) // 11 == info.extra["train"]
        assert int(np.sum(table.sample[parts["test"]] == i)) == (n + 11) // 22 == info.extra["test"]
    assert table.labels.tolist() == (table.sample == 0).astype(np.uint8).tolist()
    # weights: the column times the sample's scale (signal *0.5)
    sig = table.sample == 0
    w_sig = pq.read_table(samples[0].files[0]).column("w").to_numpy()
    order = ids[sig].astype(int)
    np.testing.assert_array_equal(table.weights[sig], (w_sig[order] * 0.5).astype(np.float32))
    assert table.samples[0].extra["sum_weights"] == pytest.approx(0.5 * w_sig.sum())
    # the last rows of train (where validation is carved) mix both samples
    tail = table.sample[split.train_rows - 100:split.train_rows]
    assert 0 < np.sum(tail == 0) < 100


def test_row_counts_as_totals_are_shared_out_exactly(samples):
    table, split = load_samples(samples, train_rows=1000, test_rows=301)
    assert (split.train_rows, split.test_rows) == (1000, 301)
    train = [info.extra["train"] for info in table.samples]
    assert sum(train) == 1000 and abs(train[0] - 1000 * 1100 / 3630) < 1


def test_balance_lines_raw_and_weighted_by_hand(samples):
    table, split = load_samples(samples, weight="w")
    parts = {"test": slice(table.rows - split.test_rows, table.rows)}
    lines = balance_lines(table, parts)
    w = table.weights[parts["test"]].astype(np.float64)
    s = table.sample[parts["test"]] == 1
    sw, neff = w[s].sum(), w[s].sum() ** 2 / (w[s] ** 2).sum()
    bkg = next(line for line in lines if line.strip().startswith("bkg"))
    assert f"{int(s.sum()):,} rows" in bkg and f"{sw:.6g}" in bkg and f"{neff:,.1f}" in bkg


def test_errors(samples, tmp_path):
    sig, bkg = samples
    with pytest.raises(UserError, match=r"--background: not given"):
        load_samples([sig])
    data = parse_spec(str(tmp_path / "sig.parquet"), flag="--data", label=-1)
    with pytest.raises(UserError, match=r"--data and --signal/--background exclude each other"):
        load_samples([data, sig, bkg])
    write_parquet(tmp_path / "neg.parquet", 50, start=0, weight=np.full(50, -1.0))
    neg = parse_spec(str(tmp_path / "neg.parquet"), flag="--background", label=0)
    with pytest.raises(UserError, match=r"--background .*neg.parquet: the weights of sample 'neg' sum to -50"):
        load_samples([sig, neg], weight="w")
    write_parquet(tmp_path / "tiny.parquet", 3, start=0)
    tiny = parse_spec(str(tmp_path / "tiny.parquet"), flag="--signal", label=1)
    with pytest.raises(UserError, match=r"samples: no signal rows in the test part"):
        load_samples([tiny, bkg])


def test_cli_refuses_abbreviated_flags(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--weight-dec", "0.1"])  # once a prefix of --weight-decay; now an error
    assert e.value.code == 2 and "unrecognized arguments: --weight-dec" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--out", "x", "--wei", "1.0"])


def test_run_on_root_samples_end_to_end(tmp_path):
    pytest.importorskip("uproot")
    rng = np.random.default_rng(0)

    def sample(n, mu):
        w = rng.normal(1, 0.4, n)
        return {"events": dict(x=rng.normal(mu, 1, n), y=rng.normal(size=n), njet=rng.integers(0, 5, n).astype(np.int32),
                               weight=w)}
    write_root(tmp_path / "sig.root", sample(2000, 1.0))
    (tmp_path / "bkg").mkdir()
    write_root(tmp_path / "bkg" / "a.root", sample(1500, 0.0))
    write_root(tmp_path / "bkg" / "b.root", sample(1500, -0.5))
    out = tmp_path / "run"
    code = main(["run", "--signal", f"{tmp_path}/sig.root*0.01", "--background", f"{tmp_path}/bkg/*.root:events",
                 "--weight", "weight", "--out", str(out), "--preset", "notebook", "--epochs", "1", "--ft-epochs", "1",
                 "--batch-size", "256", "--no-progress", "--no-report"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    data = metrics["data"]
    assert data["weight_expr"] == "weight" and [s["name"] for s in data["samples"]] == ["sig", "bkg"]
    assert data["feature_names"] == ["x", "y"]  # njet is an integer branch, weight the weight
    # predict with samples: one file per input file, rows in input order, the sample's label and weight
    preds = tmp_path / "preds"
    assert main(["predict", str(out / "base.safetensors"), "--signal", f"{tmp_path}/sig.root*0.01",
                 "--background", f"{tmp_path}/bkg", "--weight", "weight", "--out", str(preds)]) == 0
    assert sorted(p.name for p in preds.iterdir()) == ["bkg-a.parquet", "bkg-b.parquet", "sig-sig.parquet"]
    sig = pq.read_table(preds / "sig-sig.parquet")
    assert sig.num_rows == 2000 and set(sig.column("label").to_pylist()) == {1}
    import uproot
    w = uproot.open(tmp_path / "sig.root")["events"]["weight"].array(library="np")
    np.testing.assert_array_equal(sig.column("weight").to_numpy(), (w * 0.01).astype(np.float32))  # input order
    assert set(pq.read_table(preds / "bkg-b.parquet").column("label").to_pylist()) == {0}


@pytest.mark.parametrize("fmt", ["parquet", "root"])
def test_simulate_samples_one_weighted_file_per_process(tmp_path, fmt):
    if fmt == "root":
        pytest.importorskip("uproot")
    from higgs_lora.data.read import load_table
    from higgs_lora.data.sim_samples import LUMINOSITY_PB, PROCESSES, write_samples
    from higgs_lora.data.simulate import NOMINAL, simulate
    paths = write_samples(tmp_path / "mc", events=2000, seed=3, fmt=fmt)
    assert [p.name for p in paths] == [f"signal.{fmt}", f"ttbar.{fmt}"]
    for p, proc in zip(paths, PROCESSES):
        t = load_table(p, label_column=None, label_value=proc.label, weight="weight", use_cache=False)
        assert t.feature_names[:3] == ["lepton_pT", "lepton_eta", "lepton_phi"] and t.n_features == 28  # no event
        # sum of weights = sigma x L: sum(gen x sf) / sum(gen), sf ~ N(1, 0.03): 5 sigma is 0.4% at 2000 events
        assert t.weights.astype(np.float64).sum() == pytest.approx(proc.cross_section_pb * LUMINOSITY_PB, rel=0.004)
        negative = float(np.mean(t.weights < 0))
        assert abs(negative - proc.negative_fraction) < 5 * np.sqrt(proc.negative_fraction / 2000)
        # the physics is the simulator's: the events of a simulation with only this process
        only = dataclasses.replace(NOMINAL, signal_fraction=float(proc.label))
        ref, _ = simulate(2000, seed=3 + PROCESSES.index(proc), conditions=only)
        np.testing.assert_array_equal(t.features, ref)
    with pytest.raises(UserError, match="exists; choose a new directory"):
        write_samples(tmp_path / "mc", events=10, seed=3, fmt=fmt)
