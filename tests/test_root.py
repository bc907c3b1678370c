"""ROOT input: trees, branch selection, weights, errors, the cache; against the arrays written."""
import json
import sys

import numpy as np
import pytest
from conftest import cli, write_root

from higgs_lora.data.read import iter_chunks, load_table, prepare
from higgs_lora.errors import UserError

uproot = pytest.importorskip("uproot")


pytestmark = pytest.mark.usefixtures("no_stray_caches")  # conftest.py: caches in tmp_path, never in ~


def branches(n=500, seed=0):
    rng = np.random.default_rng(seed)
    return dict(pt=rng.exponential(50, n).astype(np.float32), eta=rng.normal(size=n),  # float32 and float64
                njet=rng.integers(0, 6, n).astype(np.int32), run=np.full(n, 7, np.int64),
                label=(rng.random(n) > 0.5).astype(np.int32), w=rng.normal(1, 0.3, n), sf=rng.uniform(0.9, 1.1, n))


def test_one_tree_default_features_are_the_floating_point_branches(tmp_path):
    b = branches()
    path = write_root(tmp_path / "a.root", {"events": b})
    table = load_table(path, label_column="label", use_cache=False)
    # integer branches (counters, run numbers, the label) are never taken by default; w and sf are floats
    assert table.feature_names == ["pt", "eta", "w", "sf"]
    np.testing.assert_array_equal(table.features, np.column_stack([b["pt"], b["eta"], b["w"], b["sf"]]).astype(np.float32))
    np.testing.assert_array_equal(table.labels, b["label"].astype(np.uint8))
    assert table.source == f"{path}:events" and table.weights is None


def test_several_trees_need_a_name(tmp_path):
    b = branches()
    path = write_root(tmp_path / "a.root", {"events": b, "friends": dict(x=np.ones(3))})
    with pytest.raises(UserError, match=r"a.root: 2 trees \(events, friends\); name one: .*a.root:TREE"):
        load_table(path, label_column="label", use_cache=False)
    table = load_table(f"{path}:friends", label_column=None, label_value=1, use_cache=False)
    assert table.feature_names == ["x"] and table.labels.tolist() == [1, 1, 1]
    with pytest.raises(UserError, match=r"no tree named 'nope'; its trees are events, friends"):
        load_table(f"{path}:nope", label_column=None, label_value=1, use_cache=False)


def test_features_by_names_globs_and_file(tmp_path):
    b = branches()
    path = write_root(tmp_path / "a.root", {"t": b})
    table = load_table(path, label_column="label", features="njet,e*", use_cache=False)  # an integer branch, named
    assert table.feature_names == ["njet", "eta"]
    np.testing.assert_array_equal(table.features[:, 0], b["njet"].astype(np.float32))
    (tmp_path / "names.txt").write_text("# chosen\nsf\n\npt  # transverse momentum\n")
    table = load_table(path, label_column="label", features=[f"@{tmp_path / 'names.txt'}"], use_cache=False)
    assert table.feature_names == ["sf", "pt"]
    assert load_table(path, label_column="label", features="*", use_cache=False).feature_names == ["pt", "eta", "w", "sf"]
    with pytest.raises(UserError, match=r"a.root:t: no branch named 'ptt'; its branches are pt, eta"):
        load_table(path, label_column="label", features="ptt", use_cache=False)
    with pytest.raises(UserError, match=r"--features 'x\*' matches no branch"):
        load_table(path, label_column="label", features="x*", use_cache=False)


def test_jagged_branch_named_is_an_error_naming_file_tree_branch(tmp_path):
    import awkward as ak
    b = dict(pt=np.ones(4), jets=ak.Array([[1.0], [], [2.0, 3.0], [4.0]]))
    path = write_root(tmp_path / "a.root", {"t": b})
    with pytest.raises(UserError, match=r"a.root:t: branch jets \(double\[\]\) is jagged"):
        load_table(path, label_column=None, label_value=0, features="pt,jets", use_cache=False)
    # not named: left out of the default features
    assert load_table(path, label_column=None, label_value=0, use_cache=False).feature_names == ["pt"]


def test_weight_expression_product_times_factor_in_float64(tmp_path):
    b = branches()
    path = write_root(tmp_path / "a.root", {"t": b})
    table = load_table(path, label_column="label", weight="w*sf*0.5", use_cache=False)
    np.testing.assert_array_equal(table.weights, (b["w"] * b["sf"] * 0.5).astype(np.float32))
    assert table.weight_expr == "w*sf*0.5" and table.feature_names == ["pt", "eta"]  # weight factors are no features
    chunks = list(iter_chunks(path, label_column="label", weight="w*sf*0.5", chunk_rows=100))
    np.testing.assert_array_equal(np.concatenate([c.weights for c in chunks]), table.weights)
    # weights of exactly 1 are no weights: then everything computes what it computes unweighted
    ones = dict(x=np.arange(5.0), one=np.ones(5))
    p2 = write_root(tmp_path / "ones.root", {"t": ones})
    assert load_table(p2, label_column=None, label_value=1, weight="one", use_cache=False).weights is None


def test_nan_weight_names_file_entry_branch(tmp_path):
    b = branches()
    b["w"][123] = np.nan
    path = write_root(tmp_path / "a.root", {"t": b})
    with pytest.raises(UserError, match=r"a.root:t: entry 123, branch w: weight factor is nan, not a finite number"):
        load_table(path, label_column="label", weight="w*sf", cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*/meta.json"))  # nothing cached from a bad file
    with pytest.raises(UserError, match=r"no branch named 'gen'"):
        load_table(path, label_column="label", weight="w*gen", use_cache=False)


def test_truncated_and_foreign_files(tmp_path):
    path = write_root(tmp_path / "a.root", {"t": branches(20000)})
    data = path.read_bytes()
    (tmp_path / "cut.root").write_bytes(data[:len(data) // 2])
    with pytest.raises(UserError, match=r"cut.root"):
        load_table(tmp_path / "cut.root", label_column="label", cache_dir=tmp_path / "cache")
    (tmp_path / "fake.root").write_bytes(b"root, but not ROOT")
    with pytest.raises(UserError, match=r"fake.root: not a readable ROOT file"):
        load_table(tmp_path / "fake.root", label_column="label", use_cache=False)
    assert not list((tmp_path / "cache").glob("*/meta.json"))


def test_missing_extra_says_what_to_install(tmp_path, monkeypatch):
    path = write_root(tmp_path / "a.root", {"t": branches(10)})
    monkeypatch.setitem(sys.modules, "uproot", None)  # import uproot now raises ImportError
    with pytest.raises(UserError) as err:
        load_table(path, label_column="label", use_cache=False)
    assert str(err.value) == f"{path}: a ROOT file; install the ROOT extra: pip install 'higgs-lora[root]'"


def test_cache_reused_keyed_by_selection_and_stale_after_rewrite(tmp_path):
    b = branches()
    path = write_root(tmp_path / "a.root", {"t": b})
    cache = tmp_path / "cache"
    first = prepare(path, label_column="label", weight="w", cache_dir=cache)
    again = prepare(path, label_column="label", weight="w", cache_dir=cache)
    assert not first["from_cache"] and again["from_cache"] and again["cache_path"] == first["cache_path"]
    table = load_table(path, label_column="label", weight="w", cache_dir=cache)
    assert isinstance(table.weights, np.memmap)
    np.testing.assert_array_equal(table.weights, b["w"].astype(np.float32))
    other = prepare(path, label_column="label", weight="w*sf", cache_dir=cache)  # another selection: another entry
    assert not other["from_cache"] and other["cache_path"] != first["cache_path"]
    assert not prepare(path, label_column="label", features="pt", cache_dir=cache)["from_cache"]
    b2 = branches(seed=1)
    write_root(path, {"t": b2})  # rewritten: the entry is stale
    table = load_table(path, label_column="label", weight="w", cache_dir=cache)
    np.testing.assert_array_equal(table.weights, b2["w"].astype(np.float32))


def test_shard_of_a_root_file_keeps_branches_and_weights(tmp_path):
    """`higgs-lora shard FILE.root --weight EXPR --features ...` writes shards whose rows and weights are
    those load_table reads from the file (weights.npy in every shard, checksummed)."""
    pytest.importorskip("uproot")
    rng = np.random.default_rng(3)
    n = 2500
    branches = {"label": (rng.random(n) < 0.4).astype(np.float64), "a": rng.normal(size=n).astype(np.float32),
                "b": rng.normal(size=n).astype(np.float32), "w1": rng.normal(1, 0.5, n), "w2": rng.uniform(0.5, 2, n),
                "run": rng.integers(0, 9, n).astype(np.int32)}
    path = write_root(tmp_path / "mc.root", {"events": branches})
    cli("shard", path, "--out", tmp_path / "shards", "--rows-per-shard", 1000, "--label-column", "label",
        "--weight", "w1*w2", "--features", "a,b")
    from higgs_lora.data.shards import open_shards
    table = load_table(path, label_column="label", weight="w1*w2", features=["a", "b"], use_cache=False)
    shards = open_shards(tmp_path / "shards", label_column="label")
    assert len(shards.shards) == 3 and shards.feature_names == ["a", "b"]
    block = shards.read(0, n)
    np.testing.assert_array_equal(block.features, table.features)
    np.testing.assert_array_equal(block.labels, table.labels)
    np.testing.assert_array_equal(shards.weights, table.weights)
    meta = json.loads((tmp_path / "shards" / "part-00000" / "meta.json").read_text())
    assert "weights.npy" in meta["checksums"]
