"""TorchLRP's pattern files: `load_patterns`.

TorchLRP's example stores the patterns of `fit_patternnet`/`fit_patternnet_positive` with
`pickle.dump([p.numpy() for p in patterns], file)`: a list of NumPy arrays, one per
`Linear`/`Conv2d` in module order, each shaped like the layer's weight. A pickle can run
arbitrary code when loaded, so the file is read by an unpickler that admits only NumPy
arrays (and nothing else), then named by `Patterns.from_list`.
"""

from __future__ import annotations

import importlib
import os
import pickle

from torch import nn

from ..errors import InvalidInputError
from ..patterns import Patterns
from ._models import convert, has_torchlrp_modules

__all__ = ["load_patterns"]

_ALLOWED = {
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy", "ndarray"): ("numpy",),
    ("numpy", "dtype"): ("numpy",),
    ("_codecs", "encode"): ("_codecs",),  # bytes in pickle protocol 2
}


class _ArraysOnly(pickle.Unpickler):
    """Unpickles lists of NumPy arrays; refuses every other global."""

    def find_class(self, module: str, name: str):
        homes = _ALLOWED.get((module, name))
        if homes is None:
            raise InvalidInputError(
                f"the pattern file refers to {module}.{name}; a TorchLRP pattern file holds "
                "only a list of NumPy arrays, so it is not read (unpickling it could run code)."
            )
        for home in homes:  # numpy 2 moved numpy.core to numpy._core
            try:
                return getattr(importlib.import_module(home), name)
            except ImportError:
                continue
        raise InvalidInputError(f"cannot import {module}.{name} to read the pattern file.")


def load_patterns(path: str | os.PathLike, model: nn.Module) -> Patterns:
    """Read a TorchLRP pattern file as lrpfn `Patterns` for `model`.

    Arguments:
        path: a pickle of a list of NumPy arrays, one per `Linear`/`Conv2d` of the model in
            module order (as TorchLRP's `examples/utils.py:store_patterns` writes them).
        model: the model the patterns were fitted on: the TorchLRP model or its plain
            torch counterpart (`convert(model)`); node names are those of the latter.

    Returns:
        `Patterns` keyed by node name, for `lrpfn.torchlrp.lrp(..., pattern=)` or for
        `lrpfn.rules.PatternNet` / `PatternAttribution`.
    """
    try:
        with open(path, "rb") as file:
            content = _ArraysOnly(file).load()
    except (pickle.UnpicklingError, EOFError) as error:
        raise InvalidInputError(
            f"{os.fspath(path)!r} is not a TorchLRP pattern file (a pickled list of NumPy "
            f"arrays): {type(error).__name__}: {error}"
        ) from error
    if not isinstance(content, (list, tuple)):
        raise InvalidInputError(
            f"{os.fspath(path)!r} holds a {type(content).__name__}; a TorchLRP pattern file "
            "holds a list of NumPy arrays, one per Linear/Conv2d."
        )
    plain = convert(model) if has_torchlrp_modules(model) else model
    return Patterns.from_list(plain, list(content))
