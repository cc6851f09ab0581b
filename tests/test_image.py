"""Heatmap rendering: symmetric normalisation, colormaps, overlays, PNG files, the grid.

Expected colours are derived by hand from the colormap tables in `lrpfn.image`: a value
between two control points is the linear interpolation of their colours, and each channel
becomes `round(255 * c)`.
"""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from lrpfn import image


def test_bwr_colours_at_chosen_pixels():
    # R / max|R| with max|R| = 5 (percentile=100: no clipping): [[1, -0.25], [0, 0.4]].
    # bwr: blue (0,0,1) at -1, white at 0, red (1,0,0) at +1.
    #  1    -> red                                        (255, 0, 0)
    # -0.25 -> 3/4 of the way from blue to white: (.75, .75, 1) -> (191, 191, 255)
    #  0    -> white                                      (255, 255, 255)
    #  0.4  -> 2/5 of the way from white to red: (1, .6, .6)  -> (255, 153, 153)
    relevance = np.array([[5.0, -1.25], [0.0, 2.0]])
    rgb = image.heatmap(relevance, "bwr", percentile=100)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == [255, 0, 0]
    assert rgb[0, 1].tolist() == [191, 191, 255]
    assert rgb[1, 0].tolist() == [255, 255, 255]
    assert rgb[1, 1].tolist() == [255, 153, 153]


def test_coldhot_colours_at_chosen_pixels():
    # max|R| = 5: [-1, -0.2, 0, 0.7].
    # coldhot: cyan (0,1,1) at -1, blue (0,0,1) at -0.5, black at 0, red at 0.5, yellow at 1.
    # -1   -> cyan                                          (0, 255, 255)
    # -0.2 -> 3/5 of the way from blue to black: (0, 0, .4)   -> (0, 0, 102)
    #  0   -> black                                          (0, 0, 0)
    #  0.7 -> 2/5 of the way from red to yellow: (1, .4, 0)   -> (255, 102, 0)
    rgb = image.heatmap(np.array([[-5.0, -1.0, 0.0, 3.5]]), "coldhot", percentile=100)
    assert rgb[0].tolist() == [[0, 255, 255], [0, 0, 102], [0, 0, 0], [255, 102, 0]]


def test_seismic_darkens_towards_the_ends():
    # max|R| = 4: [-0.75, 1]. seismic: (0,0,.3) at -1, blue at -0.5, ..., (.5,0,0) at 1.
    # -0.75 -> halfway between (0,0,.3) and (0,0,1): (0, 0, .65) -> (0, 0, 166)
    #  1    -> (.5, 0, 0)                                        -> (128, 0, 0)
    rgb = image.heatmap(np.array([[-3.0, 4.0]]), "seismic", percentile=100)
    assert rgb[0].tolist() == [[0, 0, 166], [128, 0, 0]]


def test_zero_maps_to_the_colormap_centre_whatever_the_sign_balance():
    # A mostly positive map: zero must still be white (bwr), not a shade of blue.
    relevance = np.array([[100.0, 0.0], [3.0, -0.001]])
    assert image.heatmap(relevance, "bwr")[0, 1].tolist() == [255, 255, 255]
    assert image.heatmap(relevance, "coldhot")[0, 1].tolist() == [0, 0, 0]


def test_an_all_zero_map_stays_at_the_centre_without_nan():
    normalized = image.symmetric_normalize(np.zeros((2, 3, 3)))
    assert np.all(normalized == 0)
    assert np.all(image.heatmap(np.zeros((3, 3)), "bwr") == 255)


def test_channels_are_summed_before_normalising():
    # channel 0: [1, -3], channel 1: [1, 1] -> pixel relevance [2, -2] -> red, blue.
    relevance = np.array([[[[1.0, -3.0]], [[1.0, 1.0]]]])  # (1, 2, 1, 2)
    rgb = image.heatmap(relevance, "bwr", percentile=100)
    assert rgb.shape == (1, 1, 2, 3)
    assert rgb[0, 0].tolist() == [[255, 0, 0], [0, 0, 255]]


def test_each_sample_is_normalised_on_its_own():
    one = np.array([[[1.0, -0.5], [0.25, 0.0]]])
    batch = np.stack([one, 1000.0 * one])  # (2, 1, 2, 2)
    rgb = image.heatmap(batch)
    assert np.array_equal(rgb[0], rgb[1])


def test_tensors_are_accepted_like_arrays():
    relevance = torch.tensor([[[2.0, -1.0], [0.5, 0.0]]], requires_grad=True) * 1.0
    assert np.array_equal(image.heatmap(relevance), image.heatmap(relevance.detach().numpy()))


def test_to_pixels_undoes_the_normalisation():
    pixels = np.array([[0.0, 0.2], [0.6, 1.0]])
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    x = np.stack([(pixels - m) / s for m, s in zip(mean, std, strict=True)])  # (3, 2, 2)
    rgb = image.to_pixels(x, mean, std)
    expected = np.round(pixels * 255).astype(np.uint8)
    for channel in range(3):
        assert np.array_equal(rgb[..., channel], expected)


def test_to_pixels_shows_one_channel_as_grey_and_clips():
    rgb = image.to_pixels(np.array([[[[-0.5, 0.5, 2.0]]]]))  # (1, 1, 1, 3)
    assert rgb[0, 0].tolist() == [[0, 0, 0], [128, 128, 128], [255, 255, 255]]


def test_overlay_blends_linearly():
    pixels = np.full((1, 2, 3), 100, np.uint8)
    heat = np.full((1, 2, 3), 200, np.uint8)
    assert np.all(image.overlay(pixels, heat, alpha=0.25) == 125)  # .75 * 100 + .25 * 200
    with pytest.raises(ValueError, match="alpha"):
        image.overlay(pixels, heat, alpha=1.5)


def test_upscale_repeats_pixels():
    rgb = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    big = image.upscale(rgb, 3)
    assert big.shape == (6, 6, 3)
    assert big[5, 5].tolist() == rgb[1, 1].tolist() and big[2, 3].tolist() == rgb[0, 1].tolist()


@pytest.mark.parametrize("shape", [(5, 7, 3), (4, 6)])
def test_png_files_decode_to_the_same_pixels(tmp_path, shape):
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    path = image.save_png(pixels, tmp_path / "sub" / "x.png")
    with Image.open(path) as decoded:  # Pillow's decoder, independent of our encoder
        assert decoded.mode == ("RGB" if len(shape) == 3 else "L")
        assert np.array_equal(np.asarray(decoded), pixels)


def test_save_png_rejects_floats():
    with pytest.raises(ValueError, match="uint8"):
        image.save_png(np.zeros((2, 2, 3)), "never.png")


def test_unknown_colormap_names_the_known_ones():
    with pytest.raises(ValueError, match="bwr"):
        image.heatmap(np.ones((2, 2)), "no_such_colormap")


def test_grid_has_a_column_per_rule_and_a_row_per_input(tmp_path):
    pixels = np.zeros((3, 8, 8, 3), np.uint8)
    heatmaps = {"epsilon": pixels, "alpha2beta1": pixels}
    figure = image.plot_grid(pixels, heatmaps, tmp_path / "grid.png", row_titles=["a", "b", "c"])
    assert len(figure.axes) == 3 * 3
    assert [axis.get_title() for axis in figure.axes[:3]] == ["input", "epsilon", "alpha2beta1"]
    with Image.open(tmp_path / "grid.png") as png:
        assert png.size[0] > 0
    with pytest.raises(ValueError, match="2 images"):
        image.plot_grid(pixels, {"epsilon": pixels[:2]})


def test_module_works_without_matplotlib(tmp_path):
    code = f"""
import sys
sys.modules["matplotlib"] = None  # any import of matplotlib now fails
import numpy as np
from lrpfn import image
image.save_png(image.heatmap(np.eye(3)), {str(tmp_path / "h.png")!r})
try:
    image.plot_grid(np.zeros((1, 2, 2, 3), np.uint8), {{}})
except ImportError:
    print("grid needs matplotlib")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "h.png").is_file()
    assert "grid needs matplotlib" in result.stdout


def test_percentile_clipping_keeps_one_extreme_pixel_from_fading_the_rest():
    # 399 pixels of relevance 1 and one of 1000: the 99.5th percentile of |R| is 1, so the
    # ordinary pixels saturate (red) and the outlier is clipped to +1 too; dividing by the
    # largest value would leave them at 1/1000 of the scale, nearly white.
    relevance = np.ones((20, 20))
    relevance[0, 0] = 1000.0
    assert image.heatmap(relevance, "bwr")[5, 5].tolist() == [255, 0, 0]
    assert image.heatmap(relevance, "bwr", percentile=100)[5, 5].tolist() == [255, 255, 255]
    with pytest.raises(ValueError, match="percentile"):
        image.heatmap(relevance, percentile=0)


def test_matplotlib_colormaps_are_accepted_as_objects_and_names():
    matplotlib = pytest.importorskip("matplotlib")
    relevance = np.array([[-2.0, 0.0, 2.0]])
    cmap = matplotlib.colormaps["RdBu_r"]
    expected = np.round(np.asarray(cmap(np.array([[0.0, 0.5, 1.0]])))[..., :3] * 255)
    assert np.array_equal(image.heatmap(relevance, cmap, percentile=100), expected)
    assert np.array_equal(image.heatmap(relevance, "RdBu_r", percentile=100), expected)


def test_plot_explanation_has_a_colorbar_and_the_title(tmp_path):
    pytest.importorskip("matplotlib")
    pixels = np.zeros((6, 6, 3), dtype=np.uint8)
    figure = image.plot_explanation(
        pixels, np.random.default_rng(0).normal(size=(6, 6)), tmp_path / "f.png", title="class 3"
    )
    assert len(figure.axes) == 3  # input, heatmap, colorbar
    assert figure._suptitle.get_text() == "class 3"
    assert (tmp_path / "f.png").is_file()
