"""notebooks/colab_tpu.ipynb executes headless on CPU in its tiny setting (so it cannot rot)."""

import os

import pytest
from conftest import ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = os.path.join(ROOT, "notebooks", "colab_tpu.ipynb")


def _outputs_text(cell) -> str:
  parts = []
  for out in cell.get("outputs", []):
    parts.append(out.get("text", ""))
    data = out.get("data", {})
    parts.append(data.get("text/markdown", "") + data.get("text/plain", ""))
  return "".join(parts)


def test_colab_notebook_runs_tiny_on_cpu(mini_data_dir, tmp_path):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
  assert len(params) == 1, "the notebook needs exactly one cell tagged `parameters`"
  names = {
    line.split("=")[0].strip()
    for line in params[0].source.splitlines()
    if "=" in line and not line.startswith("#")
  }
  assert {"TINY", "DATASET", "WORKDIR", "DATA_DIR", "INSTALL", "REPO_DIR"} <= names
  workdir = str(tmp_path / "run")
  params[0].source = "\n".join(
    [
      "TINY = True",
      'DATASET = "synthetic"',
      "MANUAL_DIR = None",
      f"DATA_DIR = {mini_data_dir!r}",
      f"WORKDIR = {workdir!r}",
      "OVERRIDES = {}",
      "INSTALL = False",
      "REPO_URL = None",
      f"REPO_DIR = {ROOT!r}",
    ]
  )
  client = nbclient.NotebookClient(
    nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
  )
  client.execute()  # raises CellExecutionError (with the cell's traceback) on any failure

  assert os.path.exists(os.path.join(workdir, "results.md"))
  assert os.path.exists(os.path.join(workdir, "attention_examples.png"))
  text = "".join(_outputs_text(c) for c in nb.cells if c.cell_type == "code")
  assert "| PainSeeker |" in text  # the results table was displayed
  assert "cpu device(s)" in text
  assert any(
    out.get("data", {}).get("image/png")
    for c in nb.cells
    if c.cell_type == "code"
    for out in c.get("outputs", [])
  )  # the attention figure was displayed
