"""Relevance sums of the re-parameterisable timm nets with and without the branch merge.

    python benchmarks/reparameterisable.py        # prints the table of docs/models.md

Each net is built by `timm.create_model(name, pretrained=False, num_classes=10)` after
`torch.manual_seed(0)` and explained at one seeded normal batch (2 x 3 x 64 x 64, clamped
to [-3, 3]) for its top class; the table gives sum(R) / logit per sample, with the canonical
pass `lrpfn.capture.merge_branches` (as lrpfn runs) and with it switched off (the sums of
parallel branches split proportionally, as before the pass existed).
"""

from __future__ import annotations

import warnings

import timm
import torch

import lrpfn
from lrpfn import composites
from lrpfn.capture import canonical

NETS = ("repvgg_a0", "repvgg_a1", "mobileone_s0", "mobileone_s1")
PRESETS = {
    "epsilon_gamma_box": lambda: composites.epsilon_gamma_box(low=-3, high=3),
    "epsilon_plus": composites.epsilon_plus,
    "epsilon_plus_flat": composites.epsilon_plus_flat,
    "epsilon_alpha2_beta1": composites.epsilon_alpha2_beta1,
}


def ratios(name: str, merge: bool) -> dict[str, str]:
    merge_pass = canonical.merge_parallel_branches
    if not merge:
        canonical.merge_parallel_branches = lambda gm: None
    try:
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False, num_classes=10).eval()
        x = torch.randn(2, 3, 64, 64).clamp(-3, 3)
        with torch.no_grad():
            logit = model(x).max(1).values.double()
        found = {}
        for preset, make in PRESETS.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                relevance = lrpfn.lrp(model, x, make())
            ratio = relevance.double().flatten(1).sum(1) / logit
            found[preset] = " / ".join(f"{float(r):.3g}" for r in ratio)
        return found
    finally:
        canonical.merge_parallel_branches = merge_pass


def main() -> None:
    print("| model | merged | " + " | ".join(PRESETS) + " |")
    print("|---|---|" + "---|" * len(PRESETS))
    for name in NETS:
        for merge in (False, True):
            found = ratios(name, merge)
            cells = " | ".join(found[preset] for preset in PRESETS)
            print(f"| {name} | {'yes' if merge else 'no'} | {cells} |")


if __name__ == "__main__":
    main()
