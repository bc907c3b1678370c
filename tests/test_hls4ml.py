"""hls4ml deployment (docs/deploying.md, "FPGAs: hls4ml"): the documented steps on a small exported network
and 500 real rows, held to ONNX Runtime within a bound derived from the fixed-point arithmetic, and to a
bit-exact integer emulation of that arithmetic. Skipped where hls4ml, qonnx or a C++ compiler is absent
(`pip install -e ".[hls4ml]"`; the C simulation compiles the generated HLS C++ with g++)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

hls4ml = pytest.importorskip("hls4ml")
pytest.importorskip("qonnx")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
if shutil.which("g++") is None:
    pytest.skip("hls4ml's C simulation needs g++", allow_module_level=True)

from onnx import numpy_helper  # noqa: E402
from qonnx.core.modelwrapper import ModelWrapper  # noqa: E402
from qonnx.transformation.gemm_to_matmul import GemmToMatMul  # noqa: E402
from qonnx.util.cleanup import cleanup_model  # noqa: E402

from higgs_lora.data.standardize import Standardizer  # noqa: E402
from higgs_lora.interop.onnx import export_onnx  # noqa: E402
from higgs_lora.model.network import ResidualMLP  # noqa: E402
from conftest import float32_tolerance  # noqa: E402

REAL = Path(__file__).parent / "data" / "higgs_real_sample.csv"  # copied from shared/data with its README (CC BY 4.0)
ROWS = 500
PRECISION = "fixed<32,16>"  # ap_fixed<32,16>: 16 integer bits (sign included), 16 fractional bits
FRAC = 16
# hls4ml's sigmoid (nnet_activation.h, table_size 1024 by default): a table of 1024 entries over [-8, 8)
# indexed by trunc(64·z) (toward zero), entries stored in ap_fixed<18,8> (10 fractional bits, truncated).
TABLE_SIZE, TABLE_FRAC = 1024, 10


def to_hls4ml(onnx_path: Path, output_dir: Path):
    """docs/deploying.md's steps, as written there."""
    model = cleanup_model(ModelWrapper(str(onnx_path)))
    model = cleanup_model(model.transform(GemmToMatMul()))
    config = hls4ml.utils.config.config_from_onnx_model(model, granularity="name", backend="Vitis",
                                                        default_precision=PRECISION)
    hls_model = hls4ml.converters.convert_from_onnx_model(model, output_dir=str(output_dir), backend="Vitis",
                                                          io_type="io_parallel", hls_config=config)
    hls_model.compile()
    return hls_model


def gemm_weights(onnx_path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{layer: (weight [out, in], bias)} as the exported Gemms hold them (float32), read from the file that
    hls4ml was given, so the emulation below starts from the same numbers."""
    graph = onnx.load(str(onnx_path)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    names = [node.input[1].removesuffix(".weight") for node in graph.node if node.op_type == "Gemm"]
    assert all(node.op_type != "Gemm" or dict((a.name, a.i) for a in node.attribute).get("transB") == 1
               for node in graph.node)  # Gemm computes x·Bᵀ + C: the weight is [out, in]
    return {name: (init[f"{name}.weight"], init[f"{name}.bias"]) for name in names}


def emulate_fixed_point(weights, x: np.ndarray, n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, logits) as hls4ml's generated C++ computes them at ap_fixed<32,16>, in exact integers.

    What the generated code does (firmware/defines.h, parameters.h, nnet_utils of hls4ml 1.3):
    - the input, every weight and every bias become ap_fixed<32,16> with the default quantization mode,
      AP_TRN: rounded down (toward -inf) to a multiple of 2^-16;
    - each dense layer's products and sums go to an accumulator that hls4ml sizes wide enough to hold them
      exactly (ap_fixed<70,38> and up, 32 fractional bits), and so does the residual Add;
    - each ReLU writes ap_fixed<32,16>: its output is truncated down to a multiple of 2^-16 again;
    - the sigmoid reads a table (see TABLE_SIZE).
    Python integers count multiples of 2^-16 (values) and 2^-32 (products), so every step is exact."""
    scale = 2 ** FRAC
    to_fixed = lambda a: np.floor(np.asarray(a, np.float64) * scale).astype(np.int64).astype(object)  # noqa: E731
    fixed = {name: (to_fixed(w), to_fixed(b)) for name, (w, b) in weights.items()}

    def dense(name, h):  # h in units of 2^-16; the result in units of 2^-32, exact
        w, b = fixed[name]
        return h @ w.T + b * scale

    def relu(s):  # 2^-32 units in, ap_fixed<32,16> out: floor to 2^-16 (the value is >= 0)
        out = np.maximum(s, 0) // scale
        # ap_fixed wraps on overflow (AP_WRAP): the emulation (and the bound) hold while no value reaches 2^15.
        assert max(out.ravel(), default=0) < 2 ** 15 * scale, "overflow of ap_fixed<32,16>'s 16 integer bits"
        return out

    h = relu(dense("input", to_fixed(x)))
    for i in range(n_blocks):
        t = relu(dense(f"blocks.{i}.dense1", h))
        h = relu(h * scale + dense(f"blocks.{i}.dense2", t))
    z = dense("output", relu(dense("hidden", h)))[:, 0]  # logits in units of 2^-32
    # Table index: trunc(z · table_size / 16) toward zero (ap_fixed's C-style conversion to int), + 512.
    step = scale * scale * 16 // TABLE_SIZE  # 2^-32 units per table step (1/64 of the logit)
    index = np.array([(abs(v) // step) * (1 if v >= 0 else -1) for v in z], dtype=np.int64) + TABLE_SIZE // 2
    index = np.clip(index, 0, TABLE_SIZE - 1)
    # The table as init_sigmoid_table fills it: sigmoid of the entry's x in float (expf), then truncated
    # to ap_fixed<18,8>.
    grid = ((np.arange(TABLE_SIZE) - TABLE_SIZE // 2) * 16 / TABLE_SIZE).astype(np.float32)
    table = np.float32(1.0 / (np.float32(1) + np.exp(-grid)).astype(np.float64))
    table = np.floor(table.astype(np.float64) * 2 ** TABLE_FRAC) / 2 ** TABLE_FRAC
    return table[index], np.array([float(v) for v in z]) / scale ** 2


def float_logits(weights, x: np.ndarray, n_blocks: int) -> np.ndarray:
    """The exported network in float64: the exact value ONNX Runtime approximates in float32."""
    def dense(name, h):
        w, b = weights[name]
        return h @ w.astype(np.float64).T + b.astype(np.float64)
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    h = relu(dense("input", x.astype(np.float64)))
    for i in range(n_blocks):
        h = relu(h + dense(f"blocks.{i}.dense2", relu(dense(f"blocks.{i}.dense1", h))))
    return dense("output", relu(dense("hidden", h)))[:, 0]


def deviation_bound(z_fixed: np.ndarray, z_exact: np.ndarray, float32_error: float) -> np.ndarray:
    """How far hls4ml's probability may be from ONNX Runtime's, per row, derived rather than measured:

        |p_hls - p_ort| <= |table(z^) - sigmoid(z^)| + |sigmoid(z^) - sigmoid(z)| + |sigmoid(z) - p_ort|

    - the table: it holds sigmoid(g) for g = trunc(64·z^)/64, |z^ - g| < 1/64, and sigmoid's slope is at
      most 1/4, so it is off by < 1/256 for the grid; its entries are truncated to 2^-10 (< 1/1024 more, and
      2^-20 covers the float32 rounding of the value before that); outside [-8, 8) it holds sigmoid(±8),
      within sigmoid(-8) = 3.4e-4 < 1/256 of the truth;
    - the fixed-point layers move the logit from z (exact) to z^ (the emulation, held bit-exact to hls4ml
      below): sigmoid moves by at most a quarter of that. A priori bounds of this term (16 fractional bits
      truncated at every input, weight and ReLU output, carried through |W| layer by layer: dense sums
      of n terms, ReLU 1-Lipschitz, the residual adding the two errors) give every truncation's error the
      worst sign and come out far too loose to catch anything (about 15 in the logit here, 1,000 for the
      default width 128, against 2e-3 measured); the exact emulation is the sharp version;
    - ONNX Runtime's float32 against the exact network: float32_tolerance (conftest).
    With 16 fractional bits the first term dominates: 1/256 + 1/1024 = 4.88e-3."""
    table = 2.0 ** -8 + 2.0 ** -TABLE_FRAC + 2.0 ** -20
    return table + np.abs(z_fixed - z_exact) / 4 + float32_error


N_BLOCKS = 2
# Expected on our graphs, and harmless (the emulation above agrees with the result bit for bit): qonnx's
# GemmToMatMul names only opset 9's Gemm as supported (ours are opset 17's, the same for transB=1, alpha =
# beta = 1), and hls4ml's pass for quantized (QONNX) models finds no quantization to move through an Add.
pytestmark = [pytest.mark.filterwarnings("ignore:The GemmToMatMul transformation only offers explicit support"),
              pytest.mark.filterwarnings("ignore:Failed to propagate quantization bias down Add node")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small network (width 32, two residual blocks, head 16), exported as `higgs-lora export` does, and
    500 real rows standardized with the sample's own mean and std, as preprocess.json tells a consumer to."""
    torch.manual_seed(0)
    model = ResidualMLP(n_features=28, width=32, n_blocks=N_BLOCKS, head_width=16).eval()
    raw = np.loadtxt(REAL, delimiter=",", dtype=np.float32)[:, 1:]
    standardizer = Standardizer(mean=raw.mean(0), std=raw.std(0))
    out = tmp_path_factory.mktemp("hls4ml")
    path = export_onnx(model, standardizer, feature_names=[f"f{i}" for i in range(28)], out_dir=out / "deploy")
    pre = json.loads((out / "deploy" / "preprocess.json").read_text())
    x = (raw[:ROWS] - np.float32(pre["mean"])) / np.float32(pre["std"])
    return model, path, np.ascontiguousarray(x, dtype=np.float32), out


def test_hls4ml_refuses_gemm_until_qonnx_rewrites_it(exported):
    _, path, _, _ = exported
    with pytest.raises(Exception, match="Unsupported operation type: Gemm"):
        hls4ml.utils.config.config_from_onnx_model(ModelWrapper(str(path)), backend="Vitis")
    model = cleanup_model(cleanup_model(ModelWrapper(str(path))).transform(GemmToMatMul()))
    assert {node.op_type for node in model.graph.node} == {"MatMul", "Add", "Relu", "Sigmoid"}


def test_hls4ml_c_simulation_matches_onnx_runtime(exported):
    model, path, x, out = exported
    p_hls = np.asarray(to_hls4ml(path, out / "hls4ml").predict(x), dtype=np.float64).reshape(-1)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    p_ort = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(
        ["probability"], {"features": x})[0][:, 0].astype(np.float64)

    weights = gemm_weights(path)
    p_emulated, z_fixed = emulate_fixed_point(weights, x, N_BLOCKS)
    z_exact = float_logits(weights, x, N_BLOCKS)
    bound = deviation_bound(z_fixed, z_exact, float32_tolerance(model, x, probabilities=True))
    print(f"hls4ml {hls4ml.__version__} at {PRECISION}: max |p_hls - p_ort| {np.abs(p_hls - p_ort).max():.3g}, "
          f"bound {bound.max():.3g}; logit moved by the fixed-point layers {np.abs(z_fixed - z_exact).max():.3g}; "
          f"max |p_hls - p_emulated| {np.abs(p_hls - p_emulated).max():.3g}")

    # The emulation is the same arithmetic, so it agrees exactly; one table step (2^-10) of slack because
    # the C++ table comes from glibc's expf and the emulation's from numpy's exp, which may differ in the
    # last bit of a float and so, rarely, in a truncated entry. A wrong index or layer is off by far more.
    assert np.abs(p_hls - p_emulated).max() <= 2.0 ** -TABLE_FRAC
    assert (np.abs(p_hls - p_ort) <= bound).all()
    assert bound.max() < 6e-3  # the bound is the table's 4.9e-3 plus a little: tight enough to mean something

    # It would catch a wrong weight layout: reading the Gemms' [out, in] weights as MatMul's [in, out]
    # (a transpose; shape-compatible for the residual blocks' square layers) moves the output far past
    # both checks.
    wrong = dict(weights)
    for name in ("blocks.0.dense1", "blocks.1.dense2"):
        w, b = wrong[name]
        wrong[name] = (np.ascontiguousarray(w.T), b)
    p_wrong, _ = emulate_fixed_point(wrong, x, N_BLOCKS)
    assert np.abs(p_wrong - p_ort).max() > 10 * bound.max()
    assert np.abs(p_wrong - p_hls).max() > 10 * 2.0 ** -TABLE_FRAC

