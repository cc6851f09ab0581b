"""lrpfn.evaluate against independent implementations: Quantus 0.6 (RegionPerturbation,
PixelFlipping, MPRT), scipy's Spearman correlation and scikit-image's SSIM.

Quantus runs the same float32 model on the same inputs, relevance and perturbation values,
one step per forward pass, in NumPy; lrpfn batches several steps per pass. Quantus pads
images whose size the patch does not divide on both sides (lrpfn cuts the last patches
short), so these cases use sizes the patch divides. Quantus returns f(x^0) - f(x^k) for
region perturbation and f(x^k) for pixel flipping, k >= 1.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

import lrpfn
from lrpfn import evaluate, rules

quantus = pytest.importorskip("quantus")
skimage_metrics = pytest.importorskip("skimage.metrics")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_models  # noqa: E402

TOLERANCE = 1e-6


def _batch(channels: int, size: int, count: int, seed: int):
    model = tiny_models.tiny_cnn(channels=channels, seed=seed)
    x = torch.randn(count, channels, size, size, generator=torch.Generator().manual_seed(seed))
    relevance = lrpfn.lrp(model, x, rules.Epsilon())
    return model, x, relevance, model(x).argmax(1)


def _replace_from(reference: np.ndarray):
    """A Quantus perturb_func putting the pixels of `reference` at the given indices."""
    flat = reference.reshape(len(reference), -1)

    def perturb(arr, indices, **kwargs):
        perturbed = arr.copy()
        rows = np.arange(len(arr))[:, None]
        perturbed[rows, indices] = flat[rows, indices]
        return perturbed

    return perturb


@pytest.mark.parametrize("order", ["morf", "lerf"])
@pytest.mark.parametrize("perturbation", ["constant", "uniform"])
def test_region_perturbation_agrees_with_quantus(order, perturbation):
    model, x, relevance, target = _batch(channels=3, size=16, count=4, seed=0)
    if perturbation == "constant":
        ours, theirs = 0.3, dict(perturb_baseline=0.3)
    else:
        ours = evaluate.UniformNoise(low=-1.0, high=1.0, seed=3)
        theirs = dict(perturb_func=_replace_from(ours(x).numpy()))
    result = evaluate.region_perturbation(
        model, x, relevance, target, patch=4, steps=10, order=order, perturbation=ours
    )
    metric = quantus.RegionPerturbation(
        patch_size=4, regions_evaluation=10, order=order, abs=False, normalise=False,
        disable_warnings=True, **theirs,
    )  # fmt: skip
    drops = metric(
        model=model, x_batch=x.numpy(), y_batch=target.numpy(), a_batch=relevance.numpy(),
        softmax=False, channel_first=True, device="cpu",
    )  # fmt: skip
    ours_drops = (result.curves[:, :1] - result.curves[:, 1:]).numpy()
    np.testing.assert_allclose(ours_drops, np.array(drops), rtol=0, atol=TOLERANCE)


def test_pixel_flipping_agrees_with_quantus():
    model, x, relevance, target = _batch(channels=1, size=8, count=3, seed=1)
    result = evaluate.region_perturbation(
        model, x, relevance, target, patch=1, order="morf", perturbation=0.0
    )
    metric = quantus.PixelFlipping(
        features_in_step=1, perturb_baseline=0.0, abs=False, normalise=False,
        disable_warnings=True,
    )  # fmt: skip
    curves = metric(
        model=model, x_batch=x.numpy(), y_batch=target.numpy(), a_batch=relevance.numpy(),
        softmax=False, channel_first=True, device="cpu",
    )  # fmt: skip
    assert result.curves.shape == (3, 65)
    np.testing.assert_allclose(
        result.curves[:, 1:].numpy(), np.array(curves), rtol=0, atol=TOLERANCE
    )


def test_cascading_randomisation_agrees_with_quantus_mprt():
    """Quantus re-seeds with seed + 1 before each layer's reset_parameters; lrpfn is given
    the same randomisation, so both explain the same randomised models."""
    model, x, _, target = _batch(channels=3, size=12, count=5, seed=2)

    def explain_numpy(model, inputs, targets, **kwargs):
        relevance = lrpfn.lrp(
            model, torch.as_tensor(inputs), rules.Epsilon(), torch.as_tensor(targets)
        )
        return relevance.sum(1, keepdim=True).numpy()

    def like_quantus(module, seed):
        torch.manual_seed(43)
        module.reset_parameters()

    ours = evaluate.parameter_randomisation(
        model, x, rules.Epsilon(), target, randomize=like_quantus, similarity=("spearman",)
    )
    metric = quantus.MPRT(
        similarity_func=quantus.similarity_func.correlation_spearman, layer_order="top_down",
        seed=42, abs=True, normalise=True, disable_warnings=True,
    )  # fmt: skip
    scores = metric(
        model=model, x_batch=x.numpy(), y_batch=target.numpy(), a_batch=None,
        explain_func=explain_numpy, softmax=False, channel_first=True, device="cpu",
    )  # fmt: skip
    layers = [name for name in scores if name != "original"]
    assert tuple(layers) == ours.layers == ("7", "3", "0")
    theirs = np.array([scores[name] for name in layers])
    np.testing.assert_allclose(ours.similarity["spearman"].numpy(), theirs, rtol=0, atol=TOLERANCE)


def test_spearman_equals_scipy_with_ties():
    generator = torch.Generator().manual_seed(4)
    a = torch.randint(0, 5, (4, 6, 7), generator=generator).double()  # many ties
    b = torch.randn(4, 6, 7, generator=generator, dtype=torch.float64)
    b[0] = a[0]
    expected = [
        stats.spearmanr(p.flatten(), q.flatten())[0]
        for p, q in zip(a.numpy(), b.numpy(), strict=True)
    ]
    np.testing.assert_allclose(evaluate.spearman(a, b).numpy(), expected, rtol=0, atol=1e-12)
    ranks = evaluate.average_ranks(a.flatten(1))
    np.testing.assert_array_equal(ranks.numpy(), stats.rankdata(a.flatten(1).numpy(), axis=1))


@pytest.mark.parametrize("data_range", [1.0, 2.0])
def test_ssim_equals_scikit_image(data_range):
    generator = torch.Generator().manual_seed(5)
    a = torch.rand(3, 12, 9, generator=generator, dtype=torch.float64)
    b = (a + 0.3 * torch.rand(3, 12, 9, generator=generator, dtype=torch.float64)).clamp(0, 1)
    expected = [
        skimage_metrics.structural_similarity(p, q, data_range=data_range)
        for p, q in zip(a.numpy(), b.numpy(), strict=True)
    ]
    np.testing.assert_allclose(
        evaluate.ssim(a, b, data_range).numpy(), expected, rtol=0, atol=1e-12
    )


def test_the_benchmark_measures_the_same_work_as_quantus(monkeypatch):
    """benchmarks/bench_evaluate.py on a tiny model: both libraries run, and agree."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import bench_evaluate

    model, x, relevance, _ = _batch(channels=3, size=32, count=2, seed=6)
    with torch.no_grad():
        seconds, difference = bench_evaluate.measure(
            model, x, relevance, steps=3, batch_size=4, repeats=1, device="cpu"
        )
    assert set(seconds) == {"lrpfn", "Quantus"} and min(seconds.values()) > 0
    assert difference < TOLERANCE
