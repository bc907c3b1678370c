"""examples/higgs_lora.ipynb: committed without outputs, the original notebook's sections in order, and
executed by a real Jupyter kernel (nbclient + ipykernel) on small settings, its outputs checked."""
import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook extra is not installed")
NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "higgs_lora.ipynb"

# The original's section names, in its order (Práctica 3 - Redes Neuronales Residuales).
SECTIONS = ["Práctica 3 - Redes Neuronales Residuales", "1. Carga y preprocesado del dataset", "1.1. Carga",
            "1.2. Preprocesado", "2. Creación de red neuronal con capas residuales", "3. Entrenamiento de la red",
            "3.1. Preparar los datasets", "3.2. Definir loss, optimizador y métricas", "3.3. Train step y test step",
            "3.4. Entrenamiento", "3.5. Test", "4. Fine tuning", "4.1. Cargar el modelo base ya entrenado",
            "4.2. Congelar los pesos", "4.3. Añadir módulos de adaptación de baja dimensión",
            "4.4. Entrenar el modelo adaptado", "4.5. Evaluar en test y comparar los resultados",
            "4.6. Compactar el modelo"]


def read():
    return nbformat.read(NOTEBOOK, as_version=4)


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_committed_without_outputs():
    nb = read()
    nbformat.validate(nb)
    for cell in code_cells(nb):
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]


def test_every_section_of_the_original_in_its_order():
    headings = [line.lstrip("#").strip() for c in read().cells if c.cell_type == "markdown"
                for line in c.source.splitlines() if line.startswith("#")]
    found = [next((i for i, h in enumerate(headings) if h.startswith(s)), None) for s in SECTIONS]
    assert None not in found, [s for s, i in zip(SECTIONS, found) if i is None]
    assert found == sorted(found)


def _text(cell) -> str:
    parts = []
    for out in cell.outputs:
        parts.append(out.get("text", ""))
        parts.append(out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def test_notebook_executes_in_a_kernel(tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient", reason="the notebook extra is not installed")
    pytest.importorskip("ipykernel", reason="the notebook extra is not installed")
    monkeypatch.setenv("HIGGS_LORA_EXAMPLE_EVENTS", "44000")
    monkeypatch.setenv("HIGGS_LORA_EXAMPLE_EPOCHS", "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = read()
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    cells = code_cells(nb)
    assert all(c.execution_count for c in cells), "a cell did not run"
    assert not [o for c in cells for o in c.outputs if o.output_type == "error"]
    everything = "\n".join(_text(c) for c in cells)
    assert "trainable 5,748  frozen 78,081" in everything       # the adapters: the notebook's count
    assert "trainable parameters: 0" in everything              # 4.2: frozen before adapting
    assert "parameters: 78,081" in everything
    diff = float(re.search(r"max \|p_merged - p_adapted\| = (\S+)", everything).group(1))
    assert 0 <= diff <= 1e-5
    tables = [o for c in cells for o in c.outputs if "text/html" in o.get("data", {})]
    assert any("adapted" in o["data"]["text/html"] and "roc_auc" in o["data"]["text/html"] for o in tables)
    images = [o for c in cells for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # the training curves and the ROC curves, inline
    assert (tmp_path / "residual_network_trained.safetensors").exists()
    assert (tmp_path / "residual_network_merged.json").exists()
    assert os.environ["HIGGS_LORA_EXAMPLE_EVENTS"] == "44000"
