"""lrpfn.evaluate: region perturbation, perturbations, randomisation and comparison.

Analytic cases: for a linear model f(x) = W x (no bias) the exact relevance is
R = W_t * x, and perturbing a patch p by a constant c lowers the logit by exactly
sum_{j in p} W_tj (x_j - c); the tests order the patches by hand (NumPy, float64) and
add these drops up. The random order's expected AOPC follows from the same additivity.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

import lrpfn
from lrpfn import evaluate, rules
from lrpfn.errors import LRPError, TrainingModeError
from lrpfn.evaluate import InvalidEvaluationError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_models

# The conservation warning (lrpfn.engine.conservation) is not what this module tests: its random
# toy nets have biases, which can add relevance as well as absorb it, and AlphaBeta(2, 1)
# gives alpha = 2 x R wherever a layer has no negative part, so sums past 2 x the logit
# are expected here; tests/test_rule_keys.py tests the warning itself.
pytestmark = pytest.mark.filterwarnings("ignore::lrpfn.errors.ConservationWarning")


def linear_model(weight: torch.Tensor) -> nn.Module:
    """f(x) = W flatten(x), no bias, float64."""
    dense = nn.Linear(weight.shape[1], weight.shape[0], bias=False).double()
    with torch.no_grad():
        dense.weight.copy_(weight)
    return nn.Sequential(nn.Flatten(), dense).eval()


def patch_grid(height: int, width: int, patch: tuple[int, int]) -> list[np.ndarray]:
    """Boolean pixel masks of the patches, row-major, the last row/column cut short."""
    masks = []
    for top in range(0, height, patch[0]):
        for left in range(0, width, patch[1]):
            mask = np.zeros((height, width), dtype=bool)
            mask[top : top + patch[0], left : left + patch[1]] = True
            masks.append(mask)
    return masks


def curve_by_hand(weight, x, target, patch, steps, constant, descending):
    """f(x^k) for k = 0..steps of one sample, patches ordered by sum of W_t * x."""
    contribution = (weight[target] * x.reshape(-1)).reshape(x.shape).sum(0)  # (H, W)
    drop = (weight[target] * (x - constant).reshape(-1)).reshape(x.shape).sum(0)
    masks = patch_grid(x.shape[1], x.shape[2], patch)
    sums = np.array([contribution[m].sum() for m in masks])
    order = np.argsort(-sums if descending else sums, kind="stable")
    logit = float(weight[target] @ x.reshape(-1))
    curve = [logit]
    for k in range(steps):
        curve.append(curve[-1] - drop[masks[order[k]]].sum())
    return np.array(curve)


@pytest.mark.parametrize("order", ["morf", "lerf"])
@pytest.mark.parametrize(("shape", "patch"), [((2, 6, 6), (2, 2)), ((3, 7, 5), (3, 2))])
def test_linear_model_curve_equals_the_hand_computed_one(order, shape, patch):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn((4, *shape), generator=generator, dtype=torch.float64)
    weight = torch.randn(3, int(np.prod(shape)), generator=generator, dtype=torch.float64)
    model = linear_model(weight)
    relevance = lrpfn.lrp(model, x, rules.Epsilon(0.0))  # exactly W_t * x
    target = model(x).argmax(1)
    patches = len(patch_grid(shape[1], shape[2], patch))
    result = evaluate.region_perturbation(
        model, x, relevance, patch=patch, steps=patches - 1, order=order, perturbation=0.25
    )
    expected = np.stack(
        [
            curve_by_hand(weight.numpy(), x[i].numpy(), int(target[i]), patch, patches - 1,
                          0.25, descending=order == "morf")
            for i in range(len(x))
        ]
    )  # fmt: skip
    np.testing.assert_allclose(result.curves.numpy(), expected, rtol=0, atol=1e-12)
    aopc = (expected[:, :1] - expected).sum(1) / patches  # 1/(L+1) sum_{k=0}^{L}
    np.testing.assert_allclose(result.aopc.numpy(), aopc, rtol=0, atol=1e-12)
    assert torch.equal(result.target, target)


def test_morf_falls_fastest_and_lerf_slowest_on_a_linear_model():
    """With exact additive relevance, MoRF removes the largest drops first: its curve lies
    below every other order's, LeRF's above."""
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(8, 1, 8, 8, generator=generator, dtype=torch.float64)
    model = linear_model(torch.randn(2, 64, generator=generator, dtype=torch.float64))
    relevance = lrpfn.lrp(model, x, rules.Epsilon(0.0))
    curves = {
        order: evaluate.region_perturbation(
            model, x, relevance, patch=2, order=order, perturbation=0.0
        ).curves
        for order in evaluate.ORDERS
    }
    assert bool((curves["morf"] <= curves["random"] + 1e-12).all())
    assert bool((curves["random"] <= curves["lerf"] + 1e-12).all())


def test_random_order_has_the_expected_aopc_on_iid_inputs():
    """f(x) = sum_j x_j, x_j ~ U(0, 1) i.i.d., patches of s = 4 pixels set to 0: each step
    removes one patch, E[f(x^0) - f(x^k)] = k s / 2, so E[AOPC] = (1/(L+1)) sum_k 2k = L
    for L = 16 steps (all patches)."""
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(4000, 1, 8, 8, generator=generator, dtype=torch.float64)
    model = linear_model(torch.ones(1, 64, dtype=torch.float64))
    relevance = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    result = evaluate.region_perturbation(
        model, x, relevance, 0, patch=2, order="random", perturbation=0.0, batch_size=4096
    )
    assert result.curves.shape == (4000, 17)
    standard_error = float(result.aopc.std()) / np.sqrt(len(x))
    assert abs(float(result.aopc.mean()) - 16.0) < 4 * standard_error
    assert torch.allclose(result.curves[:, -1], torch.zeros(4000, dtype=torch.float64))


def test_random_order_is_a_seeded_permutation_independent_of_relevance():
    x = torch.rand(6, 1, 4, 4, dtype=torch.float64)
    model = linear_model(torch.eye(16, dtype=torch.float64))
    one = evaluate.region_perturbation(model, x, torch.randn(6, 4, 4), 0, patch=1, order="random", seed=5, perturbation=0.0)  # fmt: skip
    two = evaluate.region_perturbation(model, x, torch.randn(6, 4, 4), 0, patch=1, order="random", seed=5, perturbation=0.0)  # fmt: skip
    other = evaluate.region_perturbation(model, x, torch.randn(6, 4, 4), 0, patch=1, order="random", seed=6, perturbation=0.0)  # fmt: skip
    assert torch.equal(one.curves, two.curves) and not torch.equal(one.curves, other.curves)


def test_batched_steps_equal_one_image_per_pass_and_one_sample_at_a_time():
    model = tiny_models.tiny_cnn()
    x = torch.randn(5, 3, 12, 12, generator=torch.Generator().manual_seed(4))
    relevance = lrpfn.lrp(model, x, rules.Epsilon())
    options = dict(patch=3, steps=9, perturbation=evaluate.UniformNoise(seed=1))
    batched = evaluate.region_perturbation(model, x, relevance, **options)
    one_per_pass = evaluate.region_perturbation(model, x, relevance, batch_size=1, **options)
    torch.testing.assert_close(batched.curves, one_per_pass.curves, rtol=0, atol=1e-5)
    noise = evaluate.UniformNoise(seed=1)(x)
    for i in range(len(x)):
        alone = evaluate.region_perturbation(
            model, x[i : i + 1], relevance[i : i + 1], batched.target[i : i + 1],
            patch=3, steps=9, perturbation=lambda x_, i=i: noise[i : i + 1],
        )  # fmt: skip
        torch.testing.assert_close(alone.curves[0], batched.curves[i], rtol=0, atol=1e-5)


def test_uniform_noise_is_seeded_and_within_each_images_range():
    x = torch.randn(3, 2, 5, 5)
    noise = evaluate.UniformNoise(seed=7)(x)
    assert torch.equal(noise, evaluate.UniformNoise(seed=7)(x))
    assert not torch.equal(noise, evaluate.UniformNoise(seed=8)(x))
    low, high = x.flatten(1).amin(1), x.flatten(1).amax(1)
    assert bool(
        (noise.flatten(1) >= low[:, None]).all() and (noise.flatten(1) <= high[:, None]).all()
    )
    fixed = evaluate.UniformNoise(low=2.0, high=3.0)(x)
    assert bool(((fixed >= 2) & (fixed <= 3)).all())
    state = torch.get_rng_state()
    evaluate.UniformNoise()(x)
    assert torch.equal(state, torch.get_rng_state()), "the global generator was used"


@pytest.mark.parametrize("sigma", [0.7, 2.0])
def test_blur_equals_scipy_gaussian_filter(sigma):
    x = torch.randn(2, 3, 11, 9, dtype=torch.float64)
    blurred = evaluate.GaussianBlur(sigma=sigma)(x)
    expected = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="nearest")
    np.testing.assert_allclose(blurred.numpy(), expected, rtol=0, atol=1e-12)


def test_named_and_constant_perturbations():
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(evaluate.as_perturbation(1.5)(x), torch.full_like(x, 1.5))
    assert isinstance(evaluate.as_perturbation("uniform"), evaluate.UniformNoise)
    assert isinstance(evaluate.as_perturbation("blur"), evaluate.GaussianBlur)
    mean = evaluate.as_perturbation("mean")(x)
    torch.testing.assert_close(mean[:, :, 2, 3], x.mean(dim=(2, 3)))


def test_patches_take_the_perturbation_values_in_every_channel():
    """A model that outputs the pixel sum per channel shows exactly what was replaced."""
    x = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    relevance = torch.zeros(1, 4, 4, dtype=torch.float64)
    relevance[0, 0, 3] = 1.0  # the top-right 2x2 patch is the most relevant
    model = nn.Sequential(nn.Flatten(2), nn.Identity()).eval()

    def channel_sums(batch):
        return model(batch).sum(2) + torch.arange(2.0, dtype=batch.dtype)  # target 1

    result = evaluate.region_perturbation(
        channel_sums, x, relevance, 1, patch=2, steps=1, perturbation=3.0
    )
    assert result.curves.tolist() == [[1.0, 1.0 + 4 * 3.0]]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"order": "most"}, "order must be one of"),
        ({"patch": 0}, "patch must be a positive int"),
        ({"patch": (2, 2, 2)}, "patch must be a positive int"),
        ({"steps": 17}, "steps must be an int from 1"),
        ({"perturbation": "zeros"}, "unknown perturbation 'zeros'"),
        ({"perturbation": lambda x: x[:, :1]}, "it must return the replacement values"),
        ({"perturbation": lambda x: x * float("nan")}, "NaN or inf"),
        ({"batch_size": 0}, "batch_size must be a positive int"),
    ],
)
def test_invalid_arguments_name_the_problem(options, message):
    model = tiny_models.tiny_cnn()
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(InvalidEvaluationError, match=message) as raised:
        evaluate.region_perturbation(
            model, x, torch.randn(2, 8, 8), patch=options.pop("patch", 2), **options
        )
    assert isinstance(raised.value, LRPError)


def test_relevance_of_the_wrong_shape_and_a_training_model_are_refused():
    model = tiny_models.tiny_cnn()
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(InvalidEvaluationError, match="does not fit the input"):
        evaluate.region_perturbation(model, x, torch.randn(2, 8, 9))
    with pytest.raises(InvalidEvaluationError, match=r"\(batch, C, H, W\)"):
        evaluate.region_perturbation(model, x[0], torch.randn(8, 8))
    with pytest.raises(InvalidEvaluationError, match="NaN or inf"):
        evaluate.region_perturbation(model, x, torch.full((2, 8, 8), float("nan")))
    with pytest.raises(TrainingModeError):
        evaluate.region_perturbation(model.train(), x, torch.randn(2, 8, 8))


class Reordered(nn.Module):
    """Registered fc, conv; called conv, fc: the graph order differs from registration."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4 * 8 * 8, 3)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def _snapshot(model: nn.Module):
    return {name: (value.clone(), value._version) for name, value in model.state_dict().items()}


def test_randomisation_goes_from_the_output_backwards_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = Reordered().eval()
    with torch.no_grad():
        model.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(3, 3, 8, 8)
    before, rng = _snapshot(model), torch.get_rng_state()
    result = evaluate.parameter_randomisation(model, x, rules.Epsilon())
    assert result.layers == ("fc", "bn", "conv")
    assert result.similarity["spearman"].shape == (3, 3)
    assert result.similarity["ssim"].shape == (3, 3)
    after = _snapshot(model)
    for name, (value, version) in before.items():
        assert torch.equal(value, after[name][0]) and version == after[name][1], name
    assert torch.equal(rng, torch.get_rng_state()), "the global random state changed"
    again = evaluate.parameter_randomisation(model, x, rules.Epsilon())
    torch.testing.assert_close(again.similarity["spearman"], result.similarity["spearman"])


def test_an_explanation_that_ignores_the_model_stays_identical():
    """The failure the test exists to catch: a map independent of the parameters has
    similarity 1 at every step (spearman and ssim)."""
    model = tiny_models.tiny_cnn()
    x = torch.randn(2, 3, 8, 8)
    result = evaluate.parameter_randomisation(model, x, explain=lambda m, x, t: x)
    for values in result.similarity.values():
        torch.testing.assert_close(values, torch.ones_like(values))


def test_randomisation_changes_an_lrp_explanation_and_calls_randomize_top_down():
    model = tiny_models.tiny_cnn()
    seen = []

    def randomize(module, seed):
        seen.append((type(module).__name__, seed))
        evaluate.reset(module, seed)

    result = evaluate.parameter_randomisation(
        model, torch.randn(4, 3, 8, 8), rules.Epsilon(), seed=10, randomize=randomize,
        similarity=("spearman",),
    )  # fmt: skip
    assert seen == [("Linear", 10), ("Conv2d", 11), ("Conv2d", 12)]
    assert float(result.similarity["spearman"][-1].mean()) < 0.9


def test_randomisation_arguments_are_checked():
    model, x = tiny_models.tiny_cnn(), torch.randn(1, 3, 8, 8)
    with pytest.raises(InvalidEvaluationError, match="exactly one of them"):
        evaluate.parameter_randomisation(model, x)
    with pytest.raises(InvalidEvaluationError, match="similarity must name"):
        evaluate.parameter_randomisation(model, x, rules.Epsilon(), similarity=("pearson",))
    with pytest.raises(InvalidEvaluationError, match="at least 7x7"):
        evaluate.parameter_randomisation(model, torch.randn(1, 3, 6, 6), rules.Epsilon())


def test_spearman_of_a_constant_map_is_zero_not_nan():
    a = torch.zeros(2, 3, 3)
    b = torch.randn(2, 3, 3)
    assert evaluate.spearman(a, b).tolist() == [0.0, 0.0]


def test_compare_table_csv_and_figure(tmp_path):
    generator = torch.Generator().manual_seed(5)
    weight = torch.randn(3, 3 * 8 * 8, generator=generator, dtype=torch.float64)
    model = linear_model(weight)
    x = torch.randn(6, 3, 8, 8, generator=generator, dtype=torch.float64)

    def gradient_times_input(x):
        return weight[model(x).argmax(1)].reshape(x.shape) * x

    def noise(x, target):
        return torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)

    table = evaluate.compare(
        model, x, {"epsilon": rules.Epsilon(0.0), "gxi": gradient_times_input, "noise": noise},
        patch=2, steps=8, perturbation=0.0,
    )  # fmt: skip
    epsilon, gxi, random_map = table.methods
    assert epsilon.conservation_error < 1e-12 and gxi.conservation_error < 1e-12
    assert epsilon.aopc_morf == pytest.approx(gxi.aopc_morf, abs=1e-12)
    assert epsilon.aopc_morf > float(table.random.aopc.mean()) > epsilon.aopc_lerf
    assert epsilon.morf.curves.shape == (6, 9) and epsilon.seconds_per_sample > 0
    assert random_map.conservation_error > 0.1
    printed = str(table)
    assert "AOPC MoRF" in printed and "gxi" in printed and "random order" in printed
    rows = (table.to_csv(tmp_path / "t.csv")).read_text().splitlines()
    assert rows[0] == "method,aopc_morf,aopc_lerf,conservation_error,ms_per_sample"
    assert rows[1].startswith("epsilon,") and rows[-1].startswith("random order,")
    figure = evaluate.plot_curves(table, tmp_path / "curves.png", title="linear")
    assert (tmp_path / "curves.png").stat().st_size > 1000 and len(figure.axes) == 2


def test_compare_refuses_a_target_for_methods_that_cannot_take_one():
    model = tiny_models.tiny_cnn()
    with pytest.raises(InvalidEvaluationError, match="takes only x"):
        evaluate.compare(model, torch.randn(2, 3, 8, 8), {"f": lambda x: x}, target=0, patch=2)


def test_conservation_error_of_a_zero_logit_is_the_absolute_error_not_nan():
    """f(x) = 0 for x = 0 with a bias-free linear model; a method returning ones has the
    absolute conservation error 64 (the sum of 64 ones)."""
    model = linear_model(torch.ones(2, 64, dtype=torch.float64))
    x = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    table = evaluate.compare(
        model, x, {"ones": lambda x: torch.ones_like(x)}, patch=4, perturbation=0.0
    )
    assert table.methods[0].conservation_error == 64.0
