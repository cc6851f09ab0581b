"""Agreement with zennit and conservation, as figures (the tests assert the bounds).

    python benchmarks/agreement.py            # MLP, CNN, VGG16 (random weights, 2x3x32x32)

Prints, per rule and preset, the largest relative difference
||R_lrpfn - R_zennit|| / ||R_zennit|| over the models (float64), and the conservation
error |sum R_input - logit| / |logit| of the conservative rules on bias-free ReLU networks.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from zennit import composites as zc, rules as zr
from zennit.attribution import Gradient
from zennit.types import Activation, AvgPool, Convolution

import lrpfn
from lrpfn import composites, rules


def models(bias: bool = True) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 64, bias=bias), nn.ReLU(),
                        nn.Linear(64, 32, bias=bias), nn.ReLU(), nn.Linear(32, 10, bias=bias))  # fmt: skip
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=bias), nn.ReLU(),
                        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16 * 4 * 4, 10, bias=bias))  # fmt: skip
    vgg = torchvision.models.vgg16(num_classes=10)
    if not bias:
        for module in vgg.modules():
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
    return {name: m.double().eval() for name, m in (("mlp", mlp), ("cnn", cnn), ("vgg16", vgg))}


def zennit_relevance(model, x, composite, target):
    output = model(x).detach()
    with Gradient(model=model, composite=composite) as attributor:
        _, relevance = attributor(x, nn.functional.one_hot(target, output.shape[1]) * output)
    return relevance


def uniform(rule):
    pool = zr.Norm(1e-6) if isinstance(rule, (zr.Gamma, zr.AlphaBeta, zr.ZBox)) else rule
    return zc.LayerMapComposite(
        [(Activation, zr.Pass()), (Convolution, rule), (nn.Linear, rule), (AvgPool, pool)]
    )


def ours_uniform(rule):
    pool = (
        rules.Epsilon(1e-6)
        if isinstance(rule, (rules.Gamma, rules.AlphaBeta, rules.ZBox))
        else rule
    )
    return {composites.CONVOLUTION: rule, composites.DENSE: rule, composites.POOLING: pool}


PAIRS = {
    "Epsilon(0.01)": (ours_uniform(rules.Epsilon(0.01)), uniform(zr.Epsilon(0.01))),
    "Gamma(0.25)": (ours_uniform(rules.Gamma(0.25)), uniform(zr.Gamma(0.25))),
    "AlphaBeta(2, 1)": (ours_uniform(rules.AlphaBeta(2, 1)), uniform(zr.AlphaBeta(2, 1))),
    "ZPlus": (ours_uniform(rules.ZPlus()), uniform(zr.ZPlus())),
    "ZBox(-3, 3)": (ours_uniform(rules.ZBox(-3.0, 3.0)), uniform(zr.ZBox(-3.0, 3.0))),
    "Flat": (ours_uniform(rules.Flat()), uniform(zr.Flat())),
    "WSquare": (ours_uniform(rules.WSquare()), uniform(zr.WSquare(zero_params=["bias"]))),
    "epsilon_plus": (composites.epsilon_plus(), zc.EpsilonPlus()),
    "epsilon_plus_flat": (composites.epsilon_plus_flat(), zc.EpsilonPlusFlat()),
    "epsilon_gamma_box": (composites.epsilon_gamma_box(-3.0, 3.0), zc.EpsilonGammaBox(-3.0, 3.0)),
    "epsilon_alpha2_beta1": (composites.epsilon_alpha2_beta1(), zc.EpsilonAlpha2Beta1()),
    "epsilon_alpha2_beta1_flat": (
        composites.epsilon_alpha2_beta1_flat(),
        zc.EpsilonAlpha2Beta1Flat(),
    ),
}

CONSERVATIVE = {
    "LRP-0": rules.Epsilon(0.0),
    "ZPlus": rules.ZPlus(stabilizer=0.0),
    "AlphaBeta(2, 1)": rules.AlphaBeta(2, 1, stabilizer=0.0),
    "Flat": rules.Flat(stabilizer=0.0),
    "WSquare": rules.WSquare(stabilizer=0.0),
}


def main() -> None:
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    nets = models()
    print("rule / preset                 max rel. difference to zennit (mlp, cnn, vgg16)")
    for name, (ours, theirs) in PAIRS.items():
        worst = 0.0
        for model in nets.values():
            target = model(x).argmax(1)
            a = lrpfn.lrp(model, x, ours, target=target)
            b = zennit_relevance(model, x.clone(), theirs, target)
            worst = max(worst, float((a - b).norm() / b.norm()))
        print(f"  {name:28s}{worst:.1e}")
    print("\nconservation |sum R - logit| / |logit| on bias-free ReLU nets, x >= 0")
    positive = x.abs()
    for name, rule in CONSERVATIVE.items():
        worst = 0.0
        for model in models(bias=False).values():
            logits = model(positive).detach()
            target = logits.argmax(1)
            # pooling: LRP-0, except under Flat/WSquare, which give relevance to dead units
            # (a zero average would then absorb it): there pooling takes the same rule
            pool = rule if isinstance(rule, (rules.Flat, rules.WSquare)) else rules.Epsilon(0.0)
            mapping = {
                composites.CONVOLUTION: rule,
                composites.DENSE: rule,
                composites.POOLING: pool,
            }
            relevance = lrpfn.lrp(model, positive, mapping, target=target).sum(dim=(1, 2, 3))
            explained = logits.gather(1, target[:, None])[:, 0]
            worst = max(worst, float(((relevance - explained).abs() / explained.abs()).max()))
        print(f"  {name:28s}{worst:.1e}")


if __name__ == "__main__":
    main()
