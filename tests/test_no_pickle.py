"""No code under bert_tf/ can unpickle: loading a file we are given must never run code (issue #8).

An AST scan (not a grep: comments and strings do not count, aliases and `from` imports do) for the ways Python
code gets to unpickling or other code-running deserialization.
"""

from __future__ import annotations

import ast
import os
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "bert_tf")

# Modules whose loading runs code from the data (pickle and the libraries built on it).
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve", "marshal"}
# Calls that unpickle whatever module they come from (pandas' read_pickle, torch.load).
PICKLE_FUNCTIONS = {"read_pickle", "to_pickle"}


def _name(node: ast.AST) -> str:
    """'np.load' for `np.load(...)`'s func, 'load' for `load(...)`; '' for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _name(node.value)
        return f"{inner}.{node.attr}" if inner else node.attr
    return ""


def _truthy_or_unknown(node: ast.AST) -> bool:
    return not (isinstance(node, ast.Constant) and not node.value)


def pickle_uses(source: str, filename: str = "<source>") -> list[str]:
    """Every place in `source` that imports a pickle module or asks a loader to unpickle / run code."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in PICKLE_MODULES]
        elif isinstance(node, ast.ImportFrom):
            if node.module and node.module.split(".")[0] in PICKLE_MODULES:
                found.append(f"{where}: from {node.module} import ...")
            module = "." * node.level + (node.module or "")
            found += [f"{where}: from {module} import {a.name}" for a in node.names if a.name in PICKLE_MODULES]
        elif isinstance(node, ast.Call):
            name = _name(node.func)
            for keyword in node.keywords:
                if keyword.arg == "allow_pickle" and _truthy_or_unknown(keyword.value):
                    found.append(f"{where}: {name}(allow_pickle=...)")
                if keyword.arg == "safe_mode" and not (isinstance(keyword.value, ast.Constant) and keyword.value.value):
                    found.append(f"{where}: {name}(safe_mode=...)")  # Keras runs lambdas from the file
            if name.rsplit(".", 1)[-1] in PICKLE_FUNCTIONS or name == "torch.load":
                found.append(f"{where}: {name}()")
            if name in ("__import__", "importlib.import_module", "import_module") and node.args:
                module = node.args[0]
                if isinstance(module, ast.Constant) and str(module.value).split(".")[0] in PICKLE_MODULES:
                    found.append(f"{where}: {name}({module.value!r})")
    return found


def test_scanner_finds_every_way_in():
    """The scan can fail: each of these lines is one finding, and the safe spellings are none."""
    unsafe = textwrap.dedent("""
        import pickle
        import numpy as np, cloudpickle as cp
        from pickle import loads
        from joblib import load
        from . import marshal
        def f(path, flag):
            import _pickle
            np.load(path, allow_pickle=True)
            numpy.load(path, allow_pickle=flag)
            pd.read_pickle(path)
            torch.load(path)
            keras.models.load_model(path, safe_mode=False)
            __import__("pickle")
            importlib.import_module("dill")
    """)
    found = pickle_uses(unsafe)
    lines = sorted(int(finding.split(":")[1]) for finding in found)
    assert lines == [2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15], "\n".join(found)  # every line but the def
    safe = textwrap.dedent("""
        import numpy as np
        # import pickle  (a comment is not an import)
        text = "import pickle"
        np.load(path)
        np.load(path, allow_pickle=False)
        keras.models.load_model(path, safe_mode=True)
        json.load(f)
    """)
    assert pickle_uses(safe) == []


def test_no_module_in_bert_tf_can_unpickle():
    sources = []
    for root, _, names in os.walk(PACKAGE):
        sources += [os.path.join(root, name) for name in names if name.endswith(".py")]
    assert len(sources) >= 10  # the scan saw the package
    found = []
    for path in sorted(sources):
        with open(path, encoding="utf-8") as f:
            found += pickle_uses(f.read(), os.path.relpath(path, REPO))
    assert found == [], "\n".join(found)
