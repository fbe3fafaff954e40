"""The results notebook runs as Jupyter runs it: a kernel started in the notebook's own folder."""

import os
import sys

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.timeout(300)


def _text(output) -> str:
    return str(output.get("text", "")) + str(output.get("data", {}).get("text/plain", ""))


def test_the_notebook_runs_from_its_own_folder(ran_project, monkeypatch):
    notebook_path = ran_project / "notebooks" / "ideal_results.ipynb"
    notebook = nbformat.read(notebook_path, as_version=4)
    # The kernel is this interpreter (the project's venv), started where Jupyter starts it.
    monkeypatch.setenv("KEDRO_ENV", "test")
    monkeypatch.setenv("PATH", f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}")
    client = NotebookClient(
        notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(notebook_path.parent)}}
    )
    client.execute()
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    # Kedro's rich traceback handler prints exceptions as display data instead of raising: look for them.
    assert not [_text(out)[-500:] for out in outputs if "Traceback" in _text(out) or out.output_type == "error"]
    results = "".join(_text(out) for out in outputs if out.output_type == "execute_result")
    assert "queries_used" in results and "student_accuracy" in results
    assert sum("image/png" in out.get("data", {}) for out in outputs) == 2  # the curve and the image grid
    noise = [_text(out) for out in outputs if out.output_type == "stream"]
    assert not [text for text in noise if "INFO" in text or "Warning" in text], noise  # results only
