"""The likely fix for an error that a model's own op raised, as one sentence.

The forward pass (`lrpfn.engine.walk.forward`) quotes it in its `NodeFailedError`, so that a user
who fed a model the wrong input reads what to change, not only torch's message.
"""

from __future__ import annotations

import re

__all__ = ["likely_fix"]


_FIXES: tuple[tuple[str, str], ...] = (
    (
        r"expected input\[[^\]]*\] to have (\d+) channels, but got (\d+) channels",
        "the model's first layer takes {0} channel(s) and the input has {1}: give the "
        "input {0} channel(s) (on the command line --grayscale makes 1, without it 3) or "
        "build the model with in_channels={1}",
    ),
    (
        r"(Input type|expected scalar type|should be the same|same dtype|expected m1 and m2"
        r"|expected both vectors|dtype)",
        "the input's dtype differs from the model's parameters (a .half() or .double() "
        "model?): call model.float() and pass a float32 input, or x.to(the parameters' dtype)",
    ),
    (
        r"(mat1 and mat2 shapes cannot be multiplied|shapes cannot be multiplied)",
        "the input's size does not fit a Linear layer: give the input the size the model "
        "was built for (--resize/--crop on the command line) and a batch axis",
    ),
    (
        r"(same device|Expected all tensors to be on)",
        "the model and the input are on different devices: move both to one (--device)",
    ),
    (
        r"(Expected 3D \(unbatched\) or 4D \(batched\)|Expected \d+D .*input|"
        r"size mismatch|must match the size)",
        "the input's shape does not fit the model: check its batch axis (x[None] for one "
        "sample) and its size",
    ),
)


def likely_fix(error: BaseException) -> str:
    """The most likely fix for `error`, raised by a model's own op, as one sentence.

    Recognises a channel mismatch, a dtype mismatch, a size mismatch of a Linear layer, a
    device mismatch and a shape mismatch; anything else gets the general advice to check
    the input's shape, dtype and device against the model.
    """
    message = str(error)
    for pattern, fix in _FIXES:
        found = re.search(pattern, message)
        if found:
            return fix.format(*found.groups())
    return "check that the input fits the model (its shape, dtype and device)"
