import pytest
import torch

from higgs_lora.data import Standardizer
from higgs_lora.adapters.lora import add_adapters
from higgs_lora.config import AdapterConfig
from higgs_lora.model.network import ResidualMLP
from higgs_lora.config import Recipe
from higgs_lora.train import Checkpoint, Interrupted, fit, learning_rate
from higgs_lora.data.sources import TensorData

from conftest import CtrlCAfter, synthetic_xy


def _data(rows=3000):
    x, y = synthetic_xy(rows)
    x = Standardizer.fit(x).transform(x)
    return torch.from_numpy(x), torch.from_numpy(y.astype("float32"))


def _train(tmp_path, *, stop_after=None, resume=False, epochs=3, name="ck.safetensors"):
    torch.manual_seed(7)
    model = ResidualMLP(width=32, head_width=16)
    x, y = _data()
    result = None
    try:
        result = fit(model, CtrlCAfter(TensorData(x, y, batch_size=256), stop_after), Recipe(epochs=epochs, lr=1e-3, seed=3),
                     checkpoint=Checkpoint(tmp_path / name, resume=resume), progress=False)
    except Interrupted:
        pass
    return model, result


def _same_weights(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_training_learns(tmp_path):
    _, result = _train(tmp_path)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.history[-1]["accuracy"] > 0.6  # chance is 0.5 (labels split at the median)


def test_same_seed_same_weights(tmp_path):
    a, _ = _train(tmp_path, name="a.safetensors")
    b, _ = _train(tmp_path, name="b.safetensors")
    assert _same_weights(a, b)


@pytest.mark.parametrize("stop_after", [5, 12, 24])  # mid-epoch, end of epoch 1 (12 steps/epoch), later
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, stop_after):
    reference, ref_result = _train(tmp_path, name="ref.safetensors")
    _train(tmp_path, stop_after=stop_after, name="run.safetensors")
    assert (tmp_path / "run.safetensors").exists()
    resumed, result = _train(tmp_path, resume=True, name="run.safetensors")
    assert _same_weights(reference, resumed)
    assert [r["loss"] for r in result.history] == pytest.approx([r["loss"] for r in ref_result.history], rel=1e-9)


def test_adapter_finetuning_touches_only_adapters(tmp_path):
    torch.manual_seed(0)
    model = add_adapters(ResidualMLP(width=32, head_width=16), AdapterConfig(rank=2, scale=0.1))
    frozen = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    x, y = _data(1000)
    fit(model, TensorData(x, y, batch_size=128), Recipe(epochs=1, lr=1e-3, seed=0, phase="finetune"), progress=False)
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in frozen.items())
    assert any(not torch.equal(after[k], torch.zeros_like(after[k])) for k in after if k.endswith("lora_B"))


def test_validation_early_stopping_keeps_best_epoch(tmp_path):
    torch.manual_seed(0)
    model = ResidualMLP(width=16, head_width=8)
    x, y = _data(2000)
    result = fit(model, TensorData(x[:1500], y[:1500], batch_size=128), Recipe(epochs=6, lr=3e-2, seed=0, patience=2),
                 val=TensorData(x[1500:], y[1500:], batch_size=128), progress=False)
    losses = [r["val_loss"] for r in result.history]
    assert result.best_epoch == 1 + losses.index(min(losses))
    with torch.no_grad():
        val_loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[1500:]), y[1500:]).item()
    assert val_loss == pytest.approx(min(losses), rel=1e-5)


def test_cosine_schedule_with_warmup():
    lrs = [learning_rate(s, total_steps=100, lr=1.0, schedule="cosine", warmup_frac=0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] < 0.01
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
