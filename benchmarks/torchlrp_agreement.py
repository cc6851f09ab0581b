"""Agreement with TorchLRP: lrpfn.torchlrp and lrpfn's own keys, per TorchLRP method.

    python benchmarks/torchlrp_agreement.py --torchlrp /path/to/TorchLRP   # side by side
    python benchmarks/torchlrp_agreement.py                               # without it

With `--torchlrp DIR` (a checkout of github.com/fhvilshoj/TorchLRP; its `lrp` package is
imported from there, never from lrpfn), each method runs in TorchLRP as its README shows
(`model.forward(x, explain=True, rule=..., pattern=...)`, relevance 1 at the argmax,
`x.grad`) and is compared with `lrpfn.torchlrp.lrp` and with lrpfn's own key
(`lrpfn.lrp(model, x, key, output_relevance=one-hot)`, the same start, so that only the
rules differ), and with the key's rule on convolutions and dense layers but the gradient on
pooling (`{CONVOLUTION: rule, DENSE: rule, POOLING: rules.Gradient()}`), as TorchLRP
pools. Without it, the same columns are computed against `lrpfn.torchlrp.lrp`.

Models (random weights, float64; nothing is downloaded): TorchLRP's MNIST architecture
(`examples/utils.py:get_mnist_model`) on 28x28 inputs with 80 % zero pixels, the seed
README's model, and a small VGG (torchvision's VGG layout: features, adaptive average
pooling to 7x7, classifier with dropout) on 16x16 inputs, converted by TorchLRP's
`convert_vgg` on its side. Patterns: TorchLRP's `fit_patternnet`/`fit_patternnet_positive`
on random data when TorchLRP is there, else lrpfn's `fit(kind="linear")` and
`fit(kind="positive", mean_y="all")`; both sides get the same patterns. With TorchLRP, two
rows per model compare lrpfn's `fit` with TorchLRP's (which runs in float32 only).

`--vgg11-224` adds torchvision's VGG11 features on one 224x224 input (where VGG's adaptive
pooling is the identity) with a small classifier, for the methods without patterns.

Prints one row per model and method: max |difference| / max |reference|.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from torch import nn

import lrpfn
from lrpfn import rules, torchlrp
from lrpfn.composites import CONVOLUTION, DENSE, POOLING
from lrpfn.patterns import Patterns

METHODS = (
    ("gradient", None),
    ("epsilon", None),
    ("gamma", None),
    ("gamma+epsilon", None),
    ("alpha1beta0", None),
    ("alpha2beta1", None),
    ("patternnet", "all"),
    ("patternnet", "positive"),
    ("patternattribution", "all"),
    ("patternattribution", "positive"),
)


def mnist_model() -> nn.Sequential:
    """TorchLRP's MNIST architecture, as plain torch modules."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, 1, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(),
        nn.MaxPool2d(2, 2), nn.Flatten(), nn.Linear(14 * 14 * 64, 512), nn.ReLU(),
        nn.Linear(512, 10),
    )  # fmt: skip


def seed_readme_model() -> nn.Sequential:
    """The model of the seed README's usage example."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(),
        nn.Linear(14 * 14 * 32, 10),
    )  # fmt: skip


class SmallVGG(nn.Module):
    """torchvision's VGG layout (features, avgpool, flatten, classifier), narrow."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
        )  # fmt: skip
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(32 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(),
            nn.Linear(64, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 10),
        )  # fmt: skip

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class VGG11At224(SmallVGG):
    """torchvision's VGG11 features on 224x224 inputs, where the adaptive pooling is the
    identity (7x7 to 7x7), and a small classifier (random weights)."""

    def __init__(self) -> None:
        import torchvision

        super().__init__()
        self.features = torchvision.models.vgg11(weights=None).features
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 10)
        )


def images(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=generator, dtype=torch.float64)
    return torch.where(torch.rand(shape, generator=generator) < 0.8, 0.0, x).double()


def relative(ours: torch.Tensor, reference: torch.Tensor) -> float:
    scale = reference.abs().max().clamp_min(torch.finfo(reference.dtype).tiny)
    return float((ours - reference).abs().max() / scale)


def torchlrp_explanation(lrp_model, x, rule, pattern):
    """TorchLRP's README procedure: relevance 1 at the argmax, the explanation is x.grad."""
    x = x.clone().requires_grad_(True)
    y = lrp_model.forward(x, explain=True, rule=rule, pattern=pattern)
    y[torch.arange(x.shape[0]), y.max(1)[1]].sum().backward()
    return x.grad.detach()


def lrpfn_key(model, x, rule, patterns, pooling_by_gradient=False):
    """lrpfn's key from TorchLRP's start; optionally with pooling mapped to the gradient
    (the key alone is one rule for every node that takes one, pooling included)."""
    with torch.no_grad():
        output = model(x)
    start = nn.functional.one_hot(output.argmax(1), output.shape[1]).to(output.dtype)
    if pooling_by_gradient:
        value = rules.rule_from_key(rule)
        mapping = {CONVOLUTION: value, DENSE: value, POOLING: rules.Gradient()}
        return lrpfn.lrp(model, x, mapping, output_relevance=start)
    return lrpfn.lrp(model, x, rule, output_relevance=start, pattern=patterns)


def to_torchlrp(model: nn.Module, lrp) -> nn.Module:
    """The TorchLRP model with `model`'s weights (Sequentials rebuilt, VGG by convert_vgg)."""
    if isinstance(model, SmallVGG):
        return lrp.convert_vgg(model).double().eval()
    layers = []
    for module in model:
        if isinstance(module, nn.Conv2d):
            layers.append(lrp.Conv2d.from_torch(module))
        elif isinstance(module, nn.Linear):
            layers.append(lrp.Linear.from_torch(module))
        else:
            layers.append(module)
    return lrp.Sequential(*layers).double().eval()


def fitted_patterns(model, lrp_model, data, lrp_patterns):
    """{"all": list, "positive": list} of pattern tensors, one per Linear/Conv2d."""
    if lrp_patterns is not None:  # TorchLRP fits in float32 only (its masks are float32)
        single = copy.deepcopy(lrp_model).float()
        batches = [(batch.float(), None) for batch in data]
        return {
            "all": lrp_patterns.fit_patternnet(single, batches),
            "positive": lrp_patterns.fit_patternnet_positive(single, batches),
        }
    fitted = {
        "all": lrpfn.patterns.fit(model, data, "linear", progress=False),
        "positive": lrpfn.patterns.fit(model, data, "positive", mean_y="all", progress=False),
    }
    return {name: [p[key] for key in p] for name, p in fitted.items()}


def pattern_agreement(model, data, theirs) -> dict[str, float]:
    """max over layers of max |lrpfn's fit - TorchLRP's fit| / max |TorchLRP's fit|."""
    ours = {
        "all": lrpfn.patterns.fit(model, data, "linear", progress=False),
        "positive": lrpfn.patterns.fit(model, data, "positive", mean_y="all", progress=False),
    }
    return {
        kind: max(
            relative(ours[kind][name], reference.double())
            for name, reference in zip(ours[kind].keys(), theirs[kind], strict=True)
        )
        for kind in ours
    }


def rows(name, model, x, data, lrp):
    model = model.double().eval()
    lrp_model = to_torchlrp(model, lrp) if lrp else None
    lrp_patterns = None
    if lrp:
        import lrp.patterns as lrp_patterns  # TorchLRP's pattern fitting (needs tqdm)
    plain = torchlrp.convert(lrp_model) if lrp else model
    patterns = {}
    if data is not None:
        patterns = fitted_patterns(model, lrp_model, data, lrp_patterns)
        if lrp:
            for kind, difference in pattern_agreement(plain, data, patterns).items():
                yield name, f"fit ({kind}): lrpfn's vs TorchLRP's", None, difference, None
    for rule, kind in METHODS:
        if kind is not None and kind not in patterns:
            continue
        listed = None if kind is None else [p.double() for p in patterns[kind]]
        compat = torchlrp.lrp(plain, x, rule, pattern=listed)
        named = None if listed is None else Patterns.from_list(plain, listed)
        own = lrpfn_key(plain, x, rule, named)
        pooled = None if kind else lrpfn_key(plain, x, rule, None, pooling_by_gradient=True)
        label = rule if kind is None else f"{rule} ({kind})"
        reference = torchlrp_explanation(lrp_model, x, rule, listed) if lrp else compat
        differences = [relative(own, reference)]
        differences += [None if pooled is None else relative(pooled, reference)]
        yield name, label, relative(compat, reference) if lrp else None, *differences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--torchlrp", type=Path, help="a TorchLRP checkout (imports its lrp)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--vgg11-224",
        action="store_true",
        help="also VGG11's features on one 224x224 input, without the pattern methods (slow)",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    lrp = None
    if args.torchlrp:
        sys.path.insert(0, str(args.torchlrp.resolve()))
        import lrp
    cases = (
        ("mnist", mnist_model(), (args.batch, 1, 28, 28)),
        ("seed README", seed_readme_model(), (args.batch, 1, 28, 28)),
        ("small VGG", SmallVGG(), (args.batch, 3, 16, 16)),
    )
    reference = "TorchLRP" if lrp else "lrpfn.torchlrp"
    first = "lrpfn.torchlrp vs TorchLRP" if lrp else "(no --torchlrp)"
    print(
        f"| model | TorchLRP method | {first} | lrpfn key vs {reference} "
        f"| lrpfn key, pooling by gradient, vs {reference} |"
    )
    print("| :-- | :-- | --: | --: | --: |")
    if args.vgg11_224:
        cases += (("VGG11 at 224x224", VGG11At224(), (1, 3, 224, 224)),)
    for index, (name, model, shape) in enumerate(cases):
        x = images(shape, seed=index)
        data = [images(shape, seed=100 + index + 10 * i) for i in range(4)]
        if isinstance(model, VGG11At224):
            data = None  # no patterns: fitting on 224x224 patches is slow
        for model_name, label, *differences in rows(name, model, x, data, lrp):
            compat, own, pooled = ("" if d is None else f"{d:.2g}" for d in differences)
            print(f"| {model_name} | {label} | {compat} | {own} | {pooled} |")
    print(
        f"(max |difference| / max |reference|, float64, batches of {args.batch} samples"
        + ("; VGG11 at 224x224: 1 sample)" if args.vgg11_224 else ")")
    )


if __name__ == "__main__":
    main()
