"""notebooks/bert_tf_classification.ipynb: stored without outputs, and runs headless end to end (nbclient)."""

from __future__ import annotations

import json
import os
import re
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "notebooks", "bert_tf_classification.ipynb")

# Small enough for about 2 minutes on 2 CPU cores: 64 train articles, 16 dev, 16 test, 4 steps.
SMALL = {"MAX_TRAIN_EXAMPLES": "64", "MAX_SEQ_LENGTH": "32", "EPOCHS": "1", "TRAIN_BATCH_SIZE": "16"}


def read_notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def tagged(nb, tag: str):
    cells = [cell for cell in nb.cells if tag in cell.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    return cells[0]


def override_parameters(cell, values: dict[str, str]) -> None:
    """Rewrites `NAME = …` lines of the parameters cell (as papermill's injected cell would override them)."""
    source = cell.source
    for name, value in values.items():
        source, count = re.subn(rf"^{name} = .*$", f"{name} = {value}", source, flags=re.MULTILINE)
        assert count == 1, f"the parameters cell has no single `{name} = …` line"
    cell.source = source


def venv_kernel(monkeypatch, tmp_path) -> str:
    """The name of a `python3` kernel that runs this interpreter (so the notebook sees the same packages)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        argv0 = KernelSpecManager().get_kernel_spec("python3").argv[0]
    except NoSuchKernel:
        argv0 = None
    # jupyter_client starts a spec's bare "python" with sys.executable itself.
    if argv0 in ("python", "python3") or (argv0 and os.path.realpath(argv0) == os.path.realpath(sys.executable)):
        return "python3"
    from ipykernel.kernelspec import install

    prefix = str(tmp_path / "jupyter")
    install(prefix=prefix, kernel_name="python3")  # writes argv[0] = sys.executable
    monkeypatch.setenv("JUPYTER_PATH", os.path.join(prefix, "share", "jupyter"))
    assert os.path.realpath(KernelSpecManager().get_kernel_spec("python3").argv[0]) == os.path.realpath(sys.executable)
    return "python3"


def stdout(cell) -> str:
    return "".join(output.text for output in cell.outputs if output.output_type == "stream" and output.name == "stdout")


def test_notebook_is_stored_without_outputs():
    nb = read_notebook()
    nbformat.validate(nb)
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code_cells
    for index, cell in enumerate(code_cells):
        assert cell.outputs == [], f"code cell {index} has outputs: clear them before committing"
        assert cell.execution_count is None, f"code cell {index} has an execution count"
    assert tagged(nb, "parameters")


@pytest.mark.slow
def test_notebook_runs_headless(tmp_path, monkeypatch):
    from bert_tf.tables import read_bbc_news

    nb = read_notebook()
    work = tmp_path / "work"
    override_parameters(tagged(nb, "parameters"), {**SMALL, "WORK_DIR": repr(str(work))})
    client = nbclient.NotebookClient(
        nb, kernel_name=venv_kernel(monkeypatch, tmp_path), timeout=600,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"a notebook cell failed:\n{str(error)[-4000:]}")
    finally:
        nbformat.write(nb, str(tmp_path / "executed.ipynb"))  # to look at when something fails

    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            errors = [output for output in cell.outputs if output.output_type == "error"]
            assert not errors, f"cell {index} raised {errors[0].ename}: {errors[0].evalue}"
            assert cell.execution_count is not None, f"cell {index} did not run"

    metadata = json.loads((work / "run" / "records" / "metadata.json").read_text())  # clf.fit writes the records there
    topics = sorted(set(read_bbc_news()["train"].labels[0]))
    assert metadata["label_names"] == topics  # business, entertainment, politics, sports, tech
    assert metadata["train_data_size"] == 64

    # The serving cell prints "label  probability  text" for its 3 sentences.
    lines = [line for line in stdout(tagged(nb, "serving")).splitlines() if line.strip()]
    assert len(lines) == 3, lines
    for line in lines:
        label, probability = line.split()[:2]
        assert label in topics, line
        assert 1 / len(topics) <= float(probability) <= 1, line
    for name in ("eval_results.txt", "classification_report.txt", "confusion_matrix.png"):
        assert (work / "run" / name).exists(), name
    # The test predictions (clf.predict_proba, clf.evaluate; run_classifier --do_predict's predictions.tsv is not
    # written): the cell prints the predicted topics' counts, then the test metrics as `key = value` lines.
    output = stdout(tagged(nb, "test_predictions")).splitlines()
    results = dict(line.split(" = ", 1) for line in output if " = " in line)
    assert int(results["test_examples"]) == int(SMALL["MAX_TRAIN_EXAMPLES"]) // 4, results  # the 16-article test subset
    assert 0 <= float(results["test_accuracy"]) <= 1, results
    counts = [line.split() for line in output if line.strip() and " = " not in line and line.split()[0] in topics]
    assert sum(int(count) for _, count in counts) == int(results["test_examples"]), output
