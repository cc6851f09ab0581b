"""`lrpfn.report.write` and `lrpfn report`: what the site's files hold, checked against the
stores and against colours computed here from the formulas (the page itself is tested in
a browser by tests/test_report_browser.py).

Heatmap colours, derived by hand: a map $R$ is divided by the 99.5th percentile $s$ of
$|R|$ and clipped, $r = \\mathrm{clip}(R / s, -1, 1)$; blue-white-red gives
$(1 + r, 1 + r, 1)$ for $r \\le 0$ and $(1, 1 - r, 1 - r)$ for $r \\ge 0$, times 255,
rounded. The overlay is $(1 - 0.8 |r|) p + 0.8 |r| c$.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

import lrpfn.report
from lrpfn import datasets
from lrpfn.cli import main
from lrpfn.report import ReportError

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import report_stores  # noqa: E402


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    explained = report_stores.digits_store(folder / "digits.zarr")
    labels = zarr.open_group(str(explained), mode="r")["label"][:]
    names = [str(d) for d in range(10)]
    atlas = report_stores.atlas_store(folder / "atlas.zarr", labels, names, {"_0": 4, "_3": 6})
    return explained, atlas


@pytest.fixture(scope="module")
def site(stores, tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "report"
    page = lrpfn.report.write(list(stores), out)
    assert page == out / "index.html"
    return out, json.loads((out / "data" / "report.json").read_text())


def _bwr(r: np.ndarray) -> np.ndarray:
    negative = np.stack([1 + r, 1 + r, np.ones_like(r)], axis=-1)
    positive = np.stack([np.ones_like(r), 1 - r, 1 - r], axis=-1)
    return np.where((r < 0)[..., None], negative, positive)


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as picture:
        return np.asarray(picture.convert("RGB"))


def test_each_sample_has_its_input_heatmap_and_overlay(stores, site):
    out, data = site
    group = zarr.open_group(str(stores[0]), mode="r")
    records = {record["row"]: record for record in data["samples"]}
    assert data["gallery"] == list(range(report_stores.ROWS))
    for row in (0, 17, 131):
        record = records[row]
        assert record["label"] == group["label"][row] and record["label_name"] == str(
            group["label"][row]
        )
        assert record["target"] == group["target"][row] and record["path"] == ""
        assert record["predicted"] == int(np.argmax(group["logits"][row]))
        relevance = group["relevance"][row].astype(np.float64).sum(axis=0)  # channels summed
        r = np.clip(relevance / np.percentile(np.abs(relevance), 99.5), -1, 1)
        heat = np.round(255 * _bwr(r)).astype(np.uint8)
        assert np.array_equal(_png(out / record["images"]["heatmap"]), heat)
        pixels = _png(out / record["images"]["input"])
        assert np.array_equal(pixels, group["inputs"][row])
        weight = 0.8 * np.abs(r)[..., None]
        expected = np.round((1 - weight) * pixels + weight * heat.astype(np.float64))
        assert np.abs(_png(out / record["images"]["overlay"]).astype(int) - expected).max() <= 1


def test_spray_sections_are_the_analysis_of_each_class(stores, site):
    _, data = site
    group = zarr.open_group(str(stores[0]), mode="r")
    targets = group["target"][:]
    classes, counts = np.unique(targets, return_counts=True)
    assert [s["class"] for s in data["spray"]] == [int(c) for c in classes[counts > 10]]
    for section in data["spray"]:
        result = datasets.spray(stores[0], section["class"], 3)
        assert section["rows"] == result.rows.tolist()
        assert section["clusters"] == result.clusters.tolist()
        np.testing.assert_allclose(section["x"], result.embedding[:, 0], atol=1e-3)
        maps = np.asarray(section["maps"]) * section["scale"]
        expected = group["relevance"][:][result.rows].astype(np.float64).sum(axis=1)
        np.testing.assert_allclose(
            maps, expected.reshape(len(maps), -1), atol=1e-4 * section["scale"]
        )


def test_atlas_layers_hold_the_store_s_orderings_and_references(stores, site):
    out, data = site
    group = zarr.open_group(str(stores[1]), mode="r")
    atlas = data["atlas"]
    assert [layer["name"] for layer in atlas["layers"]] == ["_0", "_3"] and atlas["linked"]
    layer = atlas["layers"][1]
    stored = group["layers/_3"]
    assert layer["channels"] == 6 and layer["k"] == 5
    assert layer["orderings"]["activation_max"]["indices"] == (
        stored["activation_max/indices"][:].tolist()
    )
    np.testing.assert_allclose(
        layer["orderings"]["relevance_sum"]["scores"], stored["relevance_sum/scores"][:], atol=1e-5
    )
    assert layer["class_relevance"][1] == [None] * 6  # a class never explained: NaN -> null
    np.testing.assert_allclose(layer["class_relevance"][0], stored["class_relevance"][0], atol=1e-5)
    indices = stored["references/indices"][:]
    assert [ref["row"] for ref in layer["references"][0]] == indices[0, :2].tolist()  # -1 skipped
    for j, reference in enumerate(layer["references"][2]):
        assert reference["row"] == indices[2, j]
        assert np.array_equal(_png(out / reference["image"]), stored["references/images"][2, j])
    row = indices[2, 0]
    assert atlas["rows"][str(row)] == {
        "label": int(group["label"][row]),
        "label_name": str(group["label"][row]),
        "path": f"data/{row}.png",
    }


def test_text_atlas_colours_each_token_by_its_relevance(tmp_path):
    labels = np.arange(12) % 2
    store = report_stores.atlas_store(
        tmp_path / "text.zarr", labels, ["neg", "pos"], {"mlp": 3}, tokens=report_stores.TEXT_TOKENS
    )
    lrpfn.report.write(store, tmp_path / "site", percentile=100.0)
    data = json.loads((tmp_path / "site" / "data" / "report.json").read_text())
    assert data["samples"] == [] and data["spray"] == []
    group = zarr.open_group(str(store), mode="r")
    reference = data["atlas"]["layers"][0]["references"][1][0]
    row = int(group["layers/mlp/references/indices"][1, 0])
    words = [w for w in report_stores.TEXT_TOKENS[row % 4] if w]
    assert [token for token, _, _ in reference["tokens"]] == words
    values = group["layers/mlp/references/token_relevance"][1, 0, : len(words)].astype(np.float64)
    r = values / np.abs(values).max()  # percentile 100: the largest magnitude
    expected = ["#{:02x}{:02x}{:02x}".format(*rgb) for rgb in np.round(255 * _bwr(r)).astype(int)]
    assert [color for _, color, _ in reference["tokens"]] == expected


def test_the_site_needs_no_network(site):
    out, _ = site
    for name in ("index.html", "assets/report.js", "assets/report.css"):
        text = (out / name).read_text()
        assert "http://" not in text and "https://" not in text, name
    assert (out / "assets" / "plotly.min.js").stat().st_size > 1_000_000
    assert (out / "data" / "report.js").read_text().startswith("window.LRPFN_REPORT = {")


def test_cli_writes_a_report_and_rewrites_it(stores, tmp_path, capsys):
    out = tmp_path / "cli"
    arguments = ["report", str(stores[0]), "--out", str(out), "--samples", "10", "--no-spray"]
    assert main(arguments) == 0
    assert f"wrote {out / 'index.html'}" in capsys.readouterr().out
    data = json.loads((out / "data" / "report.json").read_text())
    assert data["gallery"] == list(range(10)) and data["spray"] == [] and data["atlas"] is None
    assert main([*arguments[:-1], "--spray-class", str(data["samples"][0]["target"])]) == 0
    assert len(json.loads((out / "data" / "report.json").read_text())["spray"]) == 1


def test_bad_stores_and_folders_are_named(stores, tmp_path, capsys):
    with pytest.raises(ReportError, match="not a Zarr store"):
        lrpfn.report.write(tmp_path / "missing.zarr", tmp_path / "a")
    with pytest.raises(ReportError, match="one store of each kind; got 2"):
        lrpfn.report.write([stores[0], stores[0]], tmp_path / "b")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ReportError, match=r"holds files that are not a report's \(notes.txt\)"):
        lrpfn.report.write(stores[1], tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    with pytest.raises(ReportError, match="unknown colormap 'jet'"):
        lrpfn.report.write(stores[1], tmp_path / "c", cmap="jet")
    other = zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    other.create_array("label", data=np.zeros(3, np.int64))
    with pytest.raises(ReportError, match="of format None, not one written by"):
        lrpfn.report.write(tmp_path / "other.zarr", tmp_path / "d")
    assert main(["report", str(stores[1]), "--out", str(tmp_path / "e"), "--percentile", "0"]) == 1
    assert "--percentile must lie in (0, 100]" in capsys.readouterr().err


# an unseeded one-layer model with a bias: the bias can add relevance (ConservationWarning)
@pytest.mark.filterwarnings("ignore::lrpfn.errors.ConservationWarning")
def test_a_store_of_inputs_that_are_no_images_lists_its_rows(tmp_path):
    import torch

    from lrpfn import composites

    flat = torch.utils.data.TensorDataset(torch.rand(30, 5), torch.arange(30) % 3)
    model = torch.nn.Sequential(torch.nn.Linear(5, 3)).eval()
    datasets.explain(model, flat, composites.epsilon_plus(), tmp_path / "f.zarr", progress=False)
    lrpfn.report.write(tmp_path / "f.zarr", tmp_path / "site")
    data = json.loads((tmp_path / "site" / "data" / "report.json").read_text())
    assert data["spray"] == [] and len(data["samples"]) == 30
    assert all(record["images"] == {} for record in data["samples"])
    with pytest.raises(ReportError, match="SpRAy needs image heatmaps"):
        lrpfn.report.write(tmp_path / "f.zarr", tmp_path / "site", spray_classes=[0])
