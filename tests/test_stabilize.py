"""The stabiliser's signed constant $\\epsilon\\,\\mathrm{sign}(z)$, $\\mathrm{sign}(0) = +1$.

`signed_constant` computes it as $[z \\ge 0] \\cdot 2c - c$ (faster on the CPU than a
`where` with 0-d operands); it must equal `torch.where(z >= 0, c, -c)` with $c$ = the
constant rounded to z's dtype (what a tensor fill gives), bit for bit, on every floating
dtype, at both zeros, infinities, NaN, and for constants that are subnormal, round
differently in 16 bits, or overflow when doubled.
"""

import math
import random

import pytest
import torch

from lrpfn.rules._base import signed_constant, stabilize

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
random.seed(0)
CONSTANTS = [
    1e-6,
    0.1,
    0.25,
    1 / 3,
    1e-2,
    3e-9,
    6e-8,
    1e-30,
    1e-45,
    4e4,
    65504.0,
    7e4,
    3e38,
    1e300,
] + [10 ** random.uniform(-40, 5) for _ in range(300)]


def _values(dtype: torch.dtype) -> torch.Tensor:
    torch.manual_seed(0)
    z = torch.randn(512, dtype=torch.float64).mul_(10.0 ** torch.randint(-8, 4, (512,))).to(dtype)
    special = [0.0, -0.0, math.nan, math.inf, -math.inf, torch.finfo(dtype).tiny / 4]
    z[: len(special)] = torch.tensor(special, dtype=torch.float64).to(dtype)
    return z


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_signed_constant_equals_where_bit_for_bit(dtype):
    z = _values(dtype)
    for constant in CONSTANTS:
        if dtype == torch.float32 and constant > torch.finfo(dtype).max:
            continue  # torch.full itself refuses it: no reference to compare with
        c = torch.full((), constant, dtype=dtype)
        expected = torch.where(z >= 0, c, -c)
        assert torch.equal(_bits(signed_constant(z, constant)), _bits(expected)), constant


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_stabilize_adds_the_signed_constant(dtype):
    z = _values(dtype)
    for epsilon in (1e-6, 0.1, 1e-12):
        c = torch.full((), epsilon, dtype=dtype)
        expected = torch.where(z >= 0, c, -c) + z
        assert torch.equal(_bits(stabilize(z, epsilon)), _bits(expected)), epsilon
