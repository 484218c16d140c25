"""The teaching notebooks: committed without outputs, and each runs top to bottom in smoke mode.

Each notebook runs in a fresh Jupyter kernel of the current interpreter (nbclient) with
``TASKSTREAM_NOTEBOOK_SMOKE=1`` (tiny budgets, see ``stream/engine/demo.py``) on the offline GLUE copy; a cell that
raises fails the test with that cell's traceback. The quick start runs the real all-MiniLM-L6-v2; the two
notebooks whose runs are dominated by 22.6M-parameter tensors (diff pruning's flat gates, ten methods' full
files) run the tiny random BERT of the unit tests (``TASKSTREAM_NOTEBOOK_BACKBONE``), which keeps the three
under a minute or so together on an idle machine.

Each notebook checks the claims its text makes about its run with ``stream.engine.demo.check_claim``; in smoke
mode every check is computed, the structural ones (``any_settings=True``) are enforced and the others, which
need the normal budgets and the real backbone, are reported. :func:`test_notebooks_check_their_claims` holds
each notebook to having such checks, so a notebook whose claims are no longer checked fails here.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

from stream.core.sources import DATA_DIR_ENV
from stream.engine.demo import BACKBONE_ENV, RUNS_ENV, SMOKE_ENV, SOURCE_ENV
from tests.conftest import SHARED_GLUE

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
# Figures each notebook must show (PNG outputs), so a plot cell that silently shows nothing is caught.
MIN_FIGURES = {"01_quick_start": 4, "02_diff_pruning_explained": 6, "03_storage_scaling": 2}
TINY_BACKBONE = {"02_diff_pruning_explained", "03_storage_scaling"}
# Claims each notebook checks at the least: (enforced in smoke mode too, all checks).
MIN_CLAIMS = {"01_quick_start": (4, 5), "02_diff_pruning_explained": (3, 8), "03_storage_scaling": (3, 10)}


def test_the_three_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == sorted(MIN_FIGURES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{path.name} cell {index} holds outputs: commit notebooks stripped of outputs")
    assert notebook.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_check_their_claims(path):
    sources = [cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
    checks = sum(source.count("check_claim(") for source in sources)
    structural = sum(source.count("any_settings=True") for source in sources)
    least_structural, least_checks = MIN_CLAIMS[path.stem]
    assert structural >= least_structural and checks >= least_checks, (
        f"{path.name} checks {checks} claim(s), {structural} of them at any settings")


@pytest.mark.integration
@pytest.mark.skipif(not (SHARED_GLUE / "sst2" / "train.jsonl.gz").exists(),
                    reason=f"offline GLUE copy not found at {SHARED_GLUE}")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom_in_smoke_mode(path, tmp_path, tiny_model_dir):
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    env = dict(os.environ)
    for name in (BACKBONE_ENV, SOURCE_ENV):  # a developer's own settings must not change what is tested
        env.pop(name, None)
    if path.stem in TINY_BACKBONE:
        env[BACKBONE_ENV] = str(tiny_model_dir)
    env.update({SMOKE_ENV: "1", RUNS_ENV: str(tmp_path / "runs"), DATA_DIR_ENV: str(SHARED_GLUE),
                "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])]),
                "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "OMP_NUM_THREADS": "1"})
    # kernel "python3" is ipykernel's own spec, whose "python" jupyter_client replaces with sys.executable.
    client = NotebookClient(notebook, kernel_name="python3", timeout=600,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=env)
    figures = sum("image/png" in output.get("data", {}) for cell in notebook.cells if cell.cell_type == "code"
                  for output in cell.outputs)
    assert figures >= MIN_FIGURES[path.stem], f"{path.name} showed {figures} figure(s)"
    checked = sum("checked: " in output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                  for output in cell.outputs)
    assert checked >= 1, f"{path.name} printed no checked claim"
