"""The data scientists' notebooks run top to bottom on small data and are committed without outputs.

Each notebook is executed in a fresh `python3` kernel of this interpreter (so it imports the installed
packages, never a copy of their logic), in a temporary working directory, with
`RETRYOPT_NOTEBOOK_SMALL=1` so every notebook shrinks its data. Together they take about two minutes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import install as install_kernelspec
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = (
    "01-explore.ipynb",
    "02-train-and-tune.ipynb",
    "03-evaluate-policies.ipynb",
    "04-promote.ipynb",
)
KERNEL = "python3"
CELL_TIMEOUT_SECONDS = 300


def read(name: str) -> nbformat.NotebookNode:
    """A committed notebook, as nbformat v4."""
    return nbformat.read(NOTEBOOK_DIR / name, as_version=4)


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A `python3` kernel spec that runs this interpreter (the venv's), found before any other.

    The spec is written to a scratch `share/jupyter` that JUPYTER_PATH puts first, so a user-level
    `python3` spec pointing at another Python cannot win; IPython's and Jupyter's own files go to
    scratch too.
    """
    scratch = tmp_path_factory.mktemp("jupyter")
    install_kernelspec(kernel_name=KERNEL, prefix=str(scratch))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", str(scratch / "share" / "jupyter"))
        patch.setenv("JUPYTER_RUNTIME_DIR", str(scratch / "runtime"))
        patch.setenv("IPYTHONDIR", str(scratch / "ipython"))
        patch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        patch.setenv("RETRYOPT_NOTEBOOK_SMALL", "1")
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
        assert Path(spec.argv[0]).resolve() == Path(sys.executable).resolve(), spec.argv
        yield scratch


def test_the_notebooks_are_all_here() -> None:
    assert sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_clean(name: str) -> None:
    """Valid, no outputs or execution data, opens with a markdown cell, has a parameters cell."""
    nb = read(name)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, "no code cells"
    dirty = [
        i
        for i, cell in enumerate(code)
        if cell.outputs or cell.execution_count is not None or "execution" in cell.metadata
    ]
    assert not dirty, f"code cells {dirty} have outputs or execution data: clear them before committing"
    assert nb.cells[0].cell_type == "markdown", "the first cell must say what the notebook shows"
    assert any("parameters" in cell.metadata.get("tags", []) for cell in code), "no cell tagged `parameters`"
    assert nb.metadata["kernelspec"]["name"] == KERNEL


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name: str, kernel_env: Path, tmp_path: Path) -> None:
    """Every cell runs without an error, in a scratch working directory."""
    nb = read(name)
    client = NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=CELL_TIMEOUT_SECONDS,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on the first error
    errors = [out for cell in nb.cells for out in cell.get("outputs", []) if out.output_type == "error"]
    assert not errors, errors
    assert list(tmp_path.iterdir()) == [], "the notebook wrote into its working directory"
