"""Models named on the command line: `torchvision:NAME` or `module:attr`, with local weights."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch

from ._common import CLIError

__all__ = ["load_model"]


def load_model(
    spec: str, weights: str | None = None, *, warn: bool = True
) -> tuple[torch.nn.Module, bool]:
    """The model named by `spec`, in eval mode, and whether it is a torchvision model.

    `spec` is `torchvision:NAME` or `module:attr` (`attr` an `nn.Module` or a callable
    returning one; `module` a dotted module name or a `.py` file). `weights` is a local
    file holding a state dict (or a checkpoint dict with a "state_dict" entry).
    """
    source, sep, name = spec.partition(":")
    if not sep or not source or not name:
        raise CLIError(
            f"unknown model {spec!r}: use torchvision:NAME (e.g. torchvision:vgg16) or "
            "module:attr naming an nn.Module or a function returning one."
        )
    if source == "torchvision":
        model = _torchvision_model(name)
        if weights is None and warn:
            print(
                f"lrpfn: warning: no --weights given: {name} has RANDOM weights, so its "
                "explanations mean nothing. Pass --weights FILE (a state dict saved with "
                "torch.save(model.state_dict(), FILE)).",
                file=sys.stderr,
            )
    else:
        model = _user_model(source, name, spec)
    if weights is not None:
        _load_weights(model, weights, spec)
    return model.eval(), source == "torchvision"


def _torchvision_model(name: str) -> torch.nn.Module:
    try:
        import torchvision
    except ImportError as error:
        raise CLIError(
            "torchvision is not installed: pip install 'lrpfn[vision]' to use torchvision:NAME."
        ) from error
    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise CLIError(
            f"unknown model 'torchvision:{name}': not an image classifier of torchvision "
            f"{torchvision.__version__} (e.g. {', '.join(sorted(known)[:6])}, ...)."
        )
    return torchvision.models.get_model(name, weights=None)


def _user_model(source: str, attr: str, spec: str) -> torch.nn.Module:
    module = _import(source, spec)
    value: Any = module
    for part in attr.split("."):
        if not hasattr(value, part):
            raise CLIError(f"unknown model {spec!r}: {source!r} has no attribute {attr!r}.")
        value = getattr(value, part)
    if not isinstance(value, torch.nn.Module):
        if not callable(value):
            raise CLIError(f"model {spec!r} is neither an nn.Module nor a callable returning one.")
        value = value()
    if not isinstance(value, torch.nn.Module):
        raise CLIError(
            f"model {spec!r}: calling {attr}() returned {type(value).__name__}, not an nn.Module."
        )
    return value


def _import(source: str, spec: str) -> Any:
    if source.endswith(".py"):
        path = Path(source)
        if not path.is_file():
            raise CLIError(f"model file not found: {source} (from --model {spec}).")
        folder = str(path.resolve().parent)
        if folder not in sys.path:
            sys.path.insert(
                0, folder
            )  # its own imports of neighbouring files, as for `python file.py`
        loaded = importlib.util.spec_from_file_location(path.stem, path)
        assert loaded is not None and loaded.loader is not None
        module = importlib.util.module_from_spec(loaded)
        loaded.loader.exec_module(module)
        return module
    if "" not in sys.path:
        sys.path.insert(0, "")  # the current directory, as for `python -m`
    try:
        return importlib.import_module(source)
    except ModuleNotFoundError as error:
        raise CLIError(
            f"unknown model {spec!r}: cannot import module {source!r} ({error})."
        ) from error


def _load_weights(model: torch.nn.Module, weights: str, spec: str) -> None:
    path = Path(weights)
    if not path.is_file():
        raise CLIError(f"weights file not found: {weights}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CLIError(f"cannot read weights file {weights}: {error}".splitlines()[0]) from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CLIError(f"weights file {weights} holds a {type(state).__name__}, not a state dict.")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        problem = " ".join(str(error).split())
        raise CLIError(f"weights file {weights} does not fit {spec}: {problem[:300]}") from error
