"""TorchLRP's models as plain torch models: `convert`.

TorchLRP's `lrp.Sequential`, `lrp.Linear`, `lrp.Conv2d` and `lrp.MaxPool2d` subclass the
torch modules of the same names and add `explain=`, `rule=` and `pattern=` arguments to
`forward`; their parameters and state_dict are the torch modules'. `torch.fx` cannot trace
that `forward` (lrpfn raises `TraceError`), so `convert` replaces each such module by the
plain torch module with the same hyperparameters, parameters and names. TorchLRP is never
imported: a module is recognised as TorchLRP's when it subclasses one of those four torch
modules and its `forward` takes `explain`.
"""

from __future__ import annotations

import copy
import inspect
from collections import OrderedDict

import torch
from torch import nn

from ..errors import InvalidInputError

__all__ = ["convert", "has_torchlrp_modules", "is_torchlrp_module"]

_BASES = (nn.Sequential, nn.Linear, nn.Conv2d, nn.MaxPool2d)


def is_torchlrp_module(module: nn.Module) -> bool:
    """True for a TorchLRP `Sequential`, `Linear`, `Conv2d` or `MaxPool2d` (or any
    subclass of those torch modules whose `forward` takes `explain`)."""
    kind = type(module)
    if kind in _BASES or not isinstance(module, _BASES):
        return False
    try:
        parameters = inspect.signature(kind.forward).parameters
    except (TypeError, ValueError):
        return False
    return "explain" in parameters


def has_torchlrp_modules(model: nn.Module) -> bool:
    """True if `model` or any of its submodules is a TorchLRP module."""
    return any(is_torchlrp_module(module) for module in model.modules())


def convert(model: nn.Module) -> nn.Module:
    """The plain torch model of a TorchLRP model, with the same weights and names.

    Every TorchLRP module is replaced by its torch counterpart (`lrp.Sequential` by
    `nn.Sequential` with the same children names, `lrp.Linear` by `nn.Linear`, ...);
    every other module is kept as it is. The result is a new model (a deep copy): `model`
    is not modified, and `converted.state_dict()` has the keys and values of
    `model.state_dict()`, so checkpoints of either load into the other.

    Arguments:
        model: a TorchLRP model (e.g. from `lrp.Sequential(...)` or `lrp.convert_vgg`), or
            a model containing TorchLRP modules.

    Returns:
        The converted model, in `model`'s training mode.
    """
    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"convert needs a torch.nn.Module, got {type(model).__name__}.")
    return _plain(copy.deepcopy(model))


def _plain(module: nn.Module) -> nn.Module:
    for name, child in list(module.named_children()):
        setattr(module, name, _plain(child))
    if not is_torchlrp_module(module):
        return module
    replacement = _counterpart(module)
    replacement.train(module.training)
    return replacement


def _counterpart(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.Sequential):
        return nn.Sequential(OrderedDict(module.named_children()))  # the same names
    if isinstance(module, nn.MaxPool2d):
        return nn.MaxPool2d(
            module.kernel_size,
            module.stride,
            module.padding,
            module.dilation,
            return_indices=module.return_indices,
            ceil_mode=module.ceil_mode,
        )
    factory = {"device": module.weight.device, "dtype": module.weight.dtype}
    bias = module.bias is not None
    if isinstance(module, nn.Linear):
        plain = nn.Linear(module.in_features, module.out_features, bias=bias, **factory)
    else:
        plain = nn.Conv2d(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            module.stride,
            module.padding,
            module.dilation,
            module.groups,
            bias=bias,
            padding_mode=module.padding_mode,
            **factory,
        )
    with torch.no_grad():
        plain.load_state_dict(module.state_dict())
    return plain
