"""Rules as values in research code: write new rules, mix rules by name and position, add
a handler for an op lrpfn does not know.

1. A new rule from the generic step: subclass `rules.LinearRule` and say which terms
   enter (here LRP-0 written out, checked against the built-in `Epsilon(0)`, and a
   "positive-weights epsilon" rule, which the library does not ship).
2. A new rule as a plain function `(layer, activations, relevance) -> relevance` (here
   the w^2 rule, checked against the built-in `WSquare`).
3. Rules mixed in one mapping: by node or module name, by position in the graph
   (`First`, `Last`), by family and by module type, and printed as the resolved table.
4. A handler for a module lrpfn has no rule for: `handlers={**lrpfn.HANDLERS, ...}`.

    python examples/compose_rules.py [--smoke]

Writes `out/compose_rules.png` (digits x the rules above).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, fx, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _digits

import lrpfn
from lrpfn import composites, image, rules
from lrpfn.composites import CONVOLUTION, DENSE, First, Last
from lrpfn.layers import Layer
from lrpfn.rules import Activations, Group, LinearRule, Term

# --- 1. rules from the generic step -------------------------------------------------------


@dataclass(frozen=True)
class LRPZero(LinearRule):
    r"""LRP-0 from the generic step: one term $(a; W, b)$, no stabilizer.
    $R_{in} = a \odot f^\top(R / z; W)$ with $z = f(a; W, b)$."""

    stabilizer: float = 0.0

    def groups(self, layer: Layer, activations: Activations) -> tuple[Group, ...]:
        return (Group((Term(activations.input, layer.weight, layer.bias),)),)


@dataclass(frozen=True)
class PositiveEpsilon(LinearRule):
    r"""Only the excitatory weights, stabilised: $z = f(a; W^+, 0)$,
    $R_{in} = a \odot f^\top(R / \mathrm{st}(z); W^+)$ (for $a \ge 0$ a z+ rule without bias
    and with an $\epsilon$ that absorbs weak outputs)."""

    stabilizer: float = 0.1

    def groups(self, layer: Layer, activations: Activations) -> tuple[Group, ...]:
        positive = layer.weight.clamp(min=0)
        return (Group((Term(activations.input, positive, None),)),)


# --- 2. a rule as a plain function --------------------------------------------------------


def w_square(layer: Layer, activations: Activations, relevance: Tensor) -> Tensor:
    r"""The w^2 rule: $R_{in} = f^\top(R / f(\mathbf{1}; W^2, 0); W^2)$."""
    ones = torch.ones_like(activations.input)
    squared = layer.weight.square()
    z = layer.forward(ones, squared, None)
    return layer.transpose(relevance / z, activations.input, squared)


# --- 4. a module lrpfn does not know ------------------------------------------------------


class Asinh(nn.Module):
    """An elementwise activation, kept as one leaf node by the tracer below."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.asinh(x)


class LeafTracer(fx.Tracer):
    def is_leaf_module(self, module: nn.Module, name: str) -> bool:
        return isinstance(module, Asinh) or super().is_leaf_module(module, name)


def pass_through(step) -> tuple:
    """Relevance passes an elementwise activation unchanged (as for a ReLU)."""
    return (step.relevance,)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default="out/compose_rules.png")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: seconds")
    args = parser.parse_args()
    if args.smoke:
        args.epochs = 1
    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = _digits.load_digits()
    model = _digits.train(_digits.make_cnn(size=8), data.x_train, data.y_train, args.epochs)
    x = data.x_test[:4].double()
    model = model.double()

    print("1. LRP-0 from the generic step equals the built-in Epsilon(0):")
    ours, builtin = lrpfn.lrp(model, x, LRPZero()), lrpfn.lrp(model, x, rules.Epsilon(0.0))
    print(f"   max |difference| = {(ours - builtin).abs().max():.2e}")
    assert torch.allclose(ours, builtin, rtol=1e-10, atol=1e-12)

    print("2. w^2 as a plain function equals the built-in WSquare(stabilizer=0):")
    mapping = {First(): w_square, CONVOLUTION: rules.Gamma(0.25), DENSE: rules.Epsilon()}
    reference = {**mapping, First(): rules.WSquare(stabilizer=0.0)}
    ours, builtin = lrpfn.lrp(model, x, mapping), lrpfn.lrp(model, x, reference)
    print(f"   max |difference| = {(ours - builtin).abs().max():.2e}")
    assert torch.allclose(ours, builtin, rtol=1e-10, atol=1e-12)

    print("3. rules mixed by position, family, type and name; the resolved table of a deeper net:")
    mixed = {
        First(CONVOLUTION): rules.ZBox(low=0.0, high=1.0),  # the input layer, from the graph
        CONVOLUTION: PositiveEpsilon(),  # every other convolution
        Last(DENSE): rules.Epsilon(0.25),  # the output layer
        nn.Linear: rules.Epsilon(1e-6),  # any other dense layer (by type)
        "2": rules.Gamma(0.5),  # module "2" (the second convolution): a name wins
    }
    deeper = nn.Sequential(
        *(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()),
        *(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(512, 32)),
        *(nn.ReLU(), nn.Linear(32, 10)),
    )
    for name, rule in lrpfn.prepare(deeper, mixed).rules.items():
        print(f"   {name:<4} {rule!r}")
    plan = lrpfn.prepare(model, mixed)
    overridden = composites.epsilon_plus() | {First(CONVOLUTION): rules.Flat()}
    print("   epsilon_plus() | {First(CONVOLUTION): Flat()} gives", end=" ")
    print(dict(lrpfn.prepare(model, overridden).rules))

    print("4. a module lrpfn has no handler for, added with handlers=:")
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), Asinh(), nn.Linear(32, 10)).double()
    traced = fx.GraphModule(net, LeafTracer().trace(net))
    try:
        lrpfn.prepare(traced, rules.Epsilon())
    except lrpfn.errors.UnsupportedNodeError as error:
        print("   without it:", str(error).splitlines()[1].strip())
    handlers = {**lrpfn.HANDLERS, Asinh: lrpfn.Handler("pass", pass_through)}
    relevance = lrpfn.lrp(traced, x, rules.Epsilon(0.0), handlers=handlers)
    with torch.no_grad():
        logit = net(x).max(1).values
    ratio = relevance.flatten(1).sum(1) / logit
    print(f"   with it: sum of relevance / logit = {[round(float(r), 3) for r in ratio]}")

    heatmaps = {
        "LRPZero": image.heatmap(lrpfn.lrp(model, x, LRPZero())),
        "PositiveEpsilon": image.heatmap(lrpfn.lrp(model, x, PositiveEpsilon())),
        "w_square first": image.heatmap(lrpfn.lrp(model, x, mapping)),
        "mixed": image.heatmap(lrpfn.lrp(plan, x)),
    }
    path = Path(args.out)
    image.plot_grid(image.to_pixels(x), heatmaps, path)
    print(f"wrote {path.resolve()}")


if __name__ == "__main__":
    main()
