"""For the GPU check only: fcd-torch 1.0.7 on a numpy or scipy newer than the project's pins.

seqify pins numpy<2.5 and scipy<1.18 because fcd-torch 1.0.7 calls ``numpy.row_stack``
(removed in numpy 2.5) and ``scipy.linalg.sqrtm(..., disp=False)`` (the ``disp``
argument was removed in scipy 1.18). The GPU machine comes with its own numpy and scipy,
and the wheels of the pinned versions do not fit in what travels to it with rdkit
(benchmarks/gpu_wheels.sh). ``benchmarks/gpu_check.sh`` puts this folder on
``PYTHONPATH`` only when one of the two is missing; then, the first time fcd_torch is
imported, the missing one is put back as it was:

- ``numpy.row_stack = numpy.vstack`` (it was an alias);
- ``sqrtm(A, disp=False)`` returns ``(sqrtm(A), errest)`` with ``errest`` the relative
  Frobenius residual, as scipy < 1.18 did; ``disp=True`` returns ``sqrtm(A)``.

Nothing else is touched, nothing is imported at start-up, and a sitecustomize module
that this one shadows is still run.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)


def _patch() -> None:
    import numpy

    if not hasattr(numpy, "row_stack"):
        numpy.row_stack = numpy.vstack
    import inspect

    import scipy.linalg

    original = scipy.linalg.sqrtm
    if "disp" in inspect.signature(original).parameters:
        return

    def sqrtm(A, disp=True, **kwargs):
        root = original(A, **kwargs)
        if disp:
            return root
        A = numpy.asarray(A)
        errest = numpy.linalg.norm(root @ root - A, "fro") / numpy.linalg.norm(A, "fro")
        return root, errest

    scipy.linalg.sqrtm = sqrtm


class _OnFirstImport(importlib.abc.MetaPathFinder):
    """Patches just before fcd_torch is imported, then steps aside."""

    def find_spec(self, name, path=None, target=None):
        if name == "fcd_torch":
            sys.meta_path.remove(self)
            _patch()
        return None


sys.meta_path.insert(0, _OnFirstImport())

# run the sitecustomize this one shadows, if any
_spec = importlib.machinery.PathFinder.find_spec(
    "sitecustomize", [p for p in sys.path if p and str(Path(p).resolve()) != _HERE])
if _spec is not None and _spec.loader is not None:
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
