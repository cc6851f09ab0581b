"""The report in a real browser: headless Chromium (Debian's `chromium` package) driven by
Playwright opens the site from disk, with every request that is not a local file
refused, and the test clicks as a user would:

- a cluster of the SpRAy scatter (its legend entry, and its button): the samples shown
  are that cluster's rows, as `lrpfn.datasets.spray` computes them here, and the mean
  heatmap is the mean of those rows' heatmaps in the store;
- a box dragged over the scatter: the samples shown are the points inside the box;
- a layer and a concept (a channel) of the atlas: the reference crops shown are the
  store's references of that channel, pixel for pixel, and the top samples its ordering;
- for a text atlas, a neuron: its reference contexts with each token coloured.

`make test` installs chromium (as root, when missing) and Playwright (the `dev` extra);
where either is still missing the test fails and names it.
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from PIL import Image

import lrpfn.report
from lrpfn import composites, concepts, datasets

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import report_stores  # noqa: E402

SHOWN = 60  # samples the page shows for a selection (report.js)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser test needs Playwright: pip install playwright (the dev extra)")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail(
            "the browser test needs Chromium: apt-get install chromium (make test does it "
            "when run as root)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-gpu"]
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    explained = report_stores.digits_store(folder / "digits.zarr")
    labels = zarr.open_group(str(explained), mode="r")["label"][:]
    names = [str(d) for d in range(10)]
    atlas = report_stores.atlas_store(folder / "atlas.zarr", labels, names, {"_0": 4, "_3": 6})
    return explained, atlas


def _open(browser, page_path: Path):
    """A page at `page_path` (file://) that refuses every request off the disk."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    remote, errors = [], []
    page.on("pageerror", lambda error: errors.append(str(error)))

    def only_files(route):
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            remote.append(route.request.url)
            route.abort()

    page.route("**/*", only_files)
    page.goto(page_path.resolve().as_uri())
    page.wait_for_load_state("load")
    return page, remote, errors


def _shown_rows(page, container: str) -> list[int]:
    return [
        int(v)
        for v in page.eval_on_selector_all(
            f"{container} figure", "fs => fs.map(f => f.dataset.row)"
        )
    ]


def _images_loaded(page, container: str) -> bool:
    return page.eval_on_selector_all(
        f"{container} img",
        "imgs => imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0)",
    )


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as picture:
        return np.asarray(picture.convert("RGB"))


def test_clicking_a_cluster_points_and_a_concept(browser, stores, tmp_path):
    out = tmp_path / "site"
    lrpfn.report.write(list(stores), out)
    page, remote, errors = _open(browser, out / "index.html")
    group = zarr.open_group(str(stores[0]), mode="r")

    # the gallery: the first samples with their three pictures
    assert _shown_rows(page, "#samples-grid")[:3] == [0, 1, 2]
    page.wait_for_function("document.querySelectorAll('#samples-grid img').length > 0")
    assert _images_loaded(page, "#samples-grid")

    # SpRAy: the first class, cluster 1 through its legend entry
    page.click("#tab-spray")
    target = int(page.get_attribute("#spray-classes button.active", "data-class"))
    result = datasets.spray(stores[0], target, 3)
    page.wait_for_selector("#spray-plot .legend .traces")
    page.locator("#spray-plot .legend .traces").nth(1).click()
    page.wait_for_function(
        "document.querySelector('#spray-caption').textContent.startsWith('cluster 1')"
    )
    cluster = result.rows[result.clusters == 1]
    assert _shown_rows(page, "#spray-samples") == sorted(cluster.tolist())[:SHOWN]
    assert _images_loaded(page, "#spray-samples")
    shown_mean = np.asarray(page.evaluate("document.getElementById('spray-mean').data[0].z"))
    expected_mean = group["relevance"][:][cluster].astype(np.float64).sum(axis=1).mean(axis=0)
    np.testing.assert_allclose(shown_mean, expected_mean, atol=1e-3 * np.abs(expected_mean).max())

    # cluster 2 through its button
    page.click("#spray-clusters button[data-cluster='2']")
    assert _shown_rows(page, "#spray-samples") == sorted(result.rows[result.clusters == 2])[:SHOWN]

    # a box dragged over the left half of the scatter selects the points inside it
    axes = page.evaluate(
        """() => { const l = document.getElementById('spray-plot')._fullLayout;
        return [l.xaxis._offset, l.xaxis._length, l.xaxis.range, l.yaxis._offset,
                l.yaxis._length, l.yaxis.range]; }"""
    )
    x_offset, x_length, x_range, y_offset, y_length, y_range = axes
    box = page.locator("#spray-plot .nsewdrag").bounding_box()
    left, top = x_offset + 5, y_offset + 5
    right, bottom = x_offset + x_length * 0.5, y_offset + y_length - 5
    page.mouse.move(box["x"] + left - x_offset, box["y"] + top - y_offset)
    page.mouse.down()
    page.mouse.move(box["x"] + right - x_offset, box["y"] + bottom - y_offset, steps=8)
    page.mouse.up()
    page.wait_for_function(
        "document.querySelector('#spray-caption').textContent.includes('selected')"
    )

    def data_x(pixel):
        return x_range[0] + (pixel - x_offset) / x_length * (x_range[1] - x_range[0])

    def data_y(pixel):
        return y_range[1] - (pixel - y_offset) / y_length * (y_range[1] - y_range[0])

    inside = (
        (result.embedding[:, 0] >= data_x(left))
        & (result.embedding[:, 0] <= data_x(right))
        & (result.embedding[:, 1] <= data_y(top))
        & (result.embedding[:, 1] >= data_y(bottom))
    )
    selected = sorted(int(r) for r in page.get_attribute("#spray-samples", "data-rows").split(","))
    assert selected == sorted(result.rows[inside].tolist()) and 0 < len(selected) < len(result.rows)

    # the atlas: layer _3, channel 2
    atlas = zarr.open_group(str(stores[1]), mode="r")
    page.click("#tab-atlas")
    page.click("#atlas-layers button[data-layer='1']")
    page.click("#atlas-channels button[data-channel='2']")
    assert page.text_content("#atlas-caption") == "_3 · channel 2"
    references = atlas["layers/_3/references/indices"][2].tolist()
    assert _shown_rows(page, "#atlas-references") == references
    assert _images_loaded(page, "#atlas-references")
    sources = page.eval_on_selector_all(
        "#atlas-references img.image", "is => is.map(i => i.getAttribute('src'))"
    )
    for j, source in enumerate(sources):
        assert np.array_equal(_png(out / source), atlas["layers/_3/references/images"][2, j])
    top = atlas["layers/_3/relevance_sum/indices"][2].tolist()
    assert _shown_rows(page, "#atlas-top") == top
    page.select_option("#atlas-ordering", "activation_max")
    assert _shown_rows(page, "#atlas-top") == atlas["layers/_3/activation_max/indices"][2].tolist()
    bars = page.evaluate("document.getElementById('atlas-bars').data[0].y")
    stored = atlas["layers/_3/class_relevance"][:, 2]
    assert bars[1] is None and np.allclose(np.asarray(bars[2:], float), stored[2:], atol=1e-5)

    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    with Image.open(tmp_path / "report.png") as shot:
        assert shot.format == "PNG" and shot.size[0] >= 1280
    assert remote == [] and errors == []
    page.close()


def test_text_concepts_show_token_heatmaps(browser, tmp_path):
    labels = np.arange(12) % 2
    store = report_stores.atlas_store(
        tmp_path / "text.zarr", labels, ["neg", "pos"], {"mlp": 3}, tokens=report_stores.TEXT_TOKENS
    )
    lrpfn.report.write(store, tmp_path / "site")
    data = json.loads((tmp_path / "site" / "data" / "report.json").read_text())
    page, remote, errors = _open(browser, tmp_path / "site" / "index.html")
    page.click("#atlas-channels button[data-channel='1']")
    spans = page.eval_on_selector_all(
        "#atlas-references figure:first-child .tokens span",
        "ss => ss.map(s => [s.textContent.trim(), getComputedStyle(s).backgroundColor])",
    )
    expected = data["atlas"]["layers"][0]["references"][1][0]["tokens"]
    assert [word for word, _ in spans] == [token for token, _, _ in expected]

    def rgb(color: str) -> str:
        return "rgb({}, {}, {})".format(*(int(color[i : i + 2], 16) for i in (1, 3, 5)))

    assert [color for _, color in spans] == [rgb(color) for _, color, _ in expected]
    assert remote == [] and errors == []
    page.close()


def test_end_to_end_with_a_real_atlas(browser, tmp_path):
    """`lrpfn explain-dataset` and `lrpfn.concepts.atlas` over the same digits, one report
    of both: a concept's references and top samples are the atlas's own, and the top
    samples show the explained store's pictures of those rows."""
    explained = report_stores.digits_store(tmp_path / "digits.zarr")
    subset = torch.utils.data.Subset(datasets.Digits(), range(report_stores.ROWS))
    atlas = concepts.atlas(
        datasets.digits_cnn(),
        subset,
        composites.epsilon_plus(),
        ["_0", "_3"],
        tmp_path / "atlas.zarr",
        k=6,
        progress=False,
    )
    atlas.render_references(n=4, size=(16, 16))
    out = tmp_path / "site"
    lrpfn.report.write([explained, tmp_path / "atlas.zarr"], out, spray_classes=[])
    page, remote, errors = _open(browser, out / "index.html")
    page.click("#tab-atlas")
    page.click("#atlas-layers button[data-layer='1']")
    page.click("#atlas-channels button[data-channel='5']")
    indices, _ = atlas.top("_3", "relevance_sum")
    assert _shown_rows(page, "#atlas-top") == [r for r in indices[5].tolist() if r >= 0]
    assert _images_loaded(page, "#atlas-top")  # the explained store's pictures of those rows
    group = zarr.open_group(str(tmp_path / "atlas.zarr"), mode="r")
    assert (
        _shown_rows(page, "#atlas-references") == group["layers/_3/references/indices"][5].tolist()
    )
    sources = page.eval_on_selector_all(
        "#atlas-references img.image", "is => is.map(i => i.getAttribute('src'))"
    )
    for j, source in enumerate(sources):
        assert np.array_equal(_png(out / source), group["layers/_3/references/images"][5, j])
    assert remote == [] and errors == []
    page.close()
    # the same atlas prunes the model: the scores are its class relevance averaged
    model = datasets.digits_cnn()
    table = {layer: np.nanmean(atlas.class_relevance(layer), axis=0) for layer in ("_0", "_3")}
    x = datasets.Digits().images[:50]
    with torch.no_grad():
        assert torch.equal(
            concepts.prune(model, tmp_path / "atlas.zarr", 0.5)(x),
            concepts.prune(model, table, 0.5)(x),
        )
