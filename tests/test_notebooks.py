"""Every notebook runs top to bottom without error, and the committed copies are small and executed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = [
    "01_quickstart.ipynb",
    "02_layer_sweep.ipynb",
    "03_steered_vs_unsteered_logits.ipynb",
    "04_huggingface_checkpoint.ipynb",
    "05_which_layer_how_strong.ipynb",
    "06_caa_on_a_real_model.ipynb",
    "07_vectors_and_features.ipynb",
    "08_from_pairs_to_a_layer_and_strength.ipynb",
    "09_why_a_vector_steers.ipynb",
]
CELL_TIMEOUT = 180  # seconds, per cell


def test_every_notebook_is_listed():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_what_the_build_script_writes(name):
    """The cells (kind and source) are exactly scripts/build_notebooks.py's: edit the script, not the notebook."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "scripts" / "build_notebooks.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    expected = [("md" if kind == "md" else "code", source) for kind, source in build.BUILD[name]]
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    committed = [("md" if cell.cell_type == "markdown" else "code", cell.source) for cell in nb.cells]
    assert committed == expected, (
        f"{name} differs from scripts/build_notebooks.py: run `python scripts/build_notebooks.py {name[:2]}`"
    )


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_executed_and_small(name):
    path = NOTEBOOKS / name
    assert path.stat().st_size < 1_000_000
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), "save the notebook executed"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name, monkeypatch):
    # The kernel imports this checkout of steerlens, installed or not.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Tiny models: one thread is plenty, and avoids thread oversubscription on shared CPUs.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
