"""`lrpfn.datasets.explain` in one process: the store's arrays are what `lrpfn.lrp` gives
on the same samples; resuming writes only missing chunks; other settings are refused; an
unreadable image is reported by index and path and its row marked invalid.

The model is `lrpfn.datasets.digits_cnn` (trained at first use from a fixed seed) on the 1,797
scikit-learn digits, which takes well under a second to explain.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from PIL import Image

import lrpfn
from lrpfn import composites, datasets
from lrpfn.cli import main
from lrpfn.datasets import StoreMismatchError

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import tiny_models  # noqa: E402

# The conservation warning (lrpfn.engine.conservation) is not what this module tests: its random
# toy nets have biases, which can add relevance as well as absorb it, and AlphaBeta(2, 1)
# gives alpha = 2 x R wherever a layer has no negative part, so sums past 2 x the logit
# are expected here; tests/test_rule_keys.py tests the warning itself.
pytestmark = pytest.mark.filterwarnings("ignore::lrpfn.errors.ConservationWarning")

RULES = composites.epsilon_plus
BATCH = 64


@pytest.fixture(scope="module")
def digits():
    return datasets.Digits()


@pytest.fixture(scope="module")
def model():
    return datasets.digits_cnn()


@pytest.fixture(scope="module")
def store(tmp_path_factory, model, digits):
    out = tmp_path_factory.mktemp("stores") / "digits.zarr"
    summary = datasets.explain(
        model, digits, RULES(), out, batch_size=BATCH, nodes=["_3"], progress=False
    )
    assert summary.chunks_written == -(-len(digits) // BATCH) and summary.chunks_skipped == 0
    return out


def test_store_opens_with_plain_zarr_and_equals_lrp(store, model, digits):
    group = zarr.open(str(store), mode="r")
    x, labels = digits.images, digits.labels
    with torch.no_grad():
        logits = model(x)
    target = logits.argmax(1)
    # a run that records nodes walks like `lrpfn.relevances` (every node's relevance): the
    # same batches, so the same arithmetic, bit-identical; `lrpfn.lrp` takes the folded walk
    # (one multiply per layer, docs/design.md), equal to float32 rounding
    walked = [lrpfn.relevances(model, part, RULES()) for part in torch.split(x, BATCH)]
    expected = torch.cat([recorded[next(iter(recorded))] for recorded in walked])
    assert np.array_equal(group["relevance"][:], expected.numpy())
    folded = torch.cat([lrpfn.lrp(model, part, RULES()) for part in torch.split(x, BATCH)])
    largest = float(folded.abs().max())
    np.testing.assert_allclose(group["relevance"][:], folded.numpy(), rtol=0, atol=1e-5 * largest)
    np.testing.assert_allclose(group["logits"][:], logits.numpy(), rtol=1e-6, atol=1e-6)
    assert np.array_equal(group["target"][:], target.numpy())
    assert np.array_equal(group["label"][:], labels.numpy())
    assert group["valid"][:].all() and group["complete"][:].all()
    ratio = expected.double().flatten(1).sum(1) / logits.double().gather(1, target[:, None])[:, 0]
    np.testing.assert_allclose(group["ratio"][:], ratio.numpy(), rtol=1e-6)
    assert group["relevance"].chunks == (BATCH, 1, 8, 8)
    assert group["relevance"].metadata.dimension_names == ("sample", "channel", "y", "x")


def test_intermediate_node_is_its_relevance_summed_per_channel(store, model, digits):
    group = zarr.open(str(store), mode="r")
    x = digits.images[:BATCH]
    conv = lrpfn.relevances(model, x, RULES())["_3"]  # (64, 16, 4, 4)
    np.testing.assert_allclose(
        group["nodes/_3"][:BATCH], conv.sum(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6
    )


def test_provenance_attributes(store):
    attributes = zarr.open(str(store), mode="r").attrs["lrpfn"]
    settings = attributes["settings"]
    assert settings["model"] == "Sequential" and settings["batch_size"] == BATCH
    assert settings["dataset_size"] == 1797 and settings["torch"] == torch.__version__
    assert settings["lrpfn"] == lrpfn.__version__
    assert settings["rules"] == {
        n: repr(r) for n, r in lrpfn.prepare(datasets.digits_cnn(), RULES()).rules.items()
    }
    assert attributes["complete"] is True and attributes["invalid"] == []
    assert attributes["created"] and attributes["runs"][0]["world_size"] == 1


def _copy(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


def test_resume_writes_only_the_missing_chunks(store, model, digits, tmp_path):
    broken = _copy(store, tmp_path / "broken.zarr")
    group = zarr.open_group(str(broken), mode="r+")
    # chunks 3 and 7 as a crash leaves them: data half written, never recorded complete
    group["relevance"][3 * BATCH : 4 * BATCH] = np.zeros((BATCH, 1, 8, 8), np.float32)
    group["complete"][3] = False
    group["complete"][7] = False
    summary = datasets.explain(
        model, digits, RULES(), broken, batch_size=BATCH, nodes=["_3"], progress=False
    )
    assert (summary.chunks_written, summary.chunks_skipped) == (2, 27)
    reference = zarr.open(str(store), mode="r")
    for name in ("relevance", "logits", "target", "ratio", "valid", "complete", "nodes/_3"):
        assert np.array_equal(group[name][:], reference[name][:]), name


def test_float16_relevance(model, digits, tmp_path):
    subset = torch.utils.data.Subset(digits, range(100))
    datasets.explain(
        model,
        subset,
        RULES(),
        tmp_path / "h.zarr",
        batch_size=BATCH,
        relevance_dtype="float16",
        progress=False,
    )
    group = zarr.open(str(tmp_path / "h.zarr"), mode="r")
    assert group["relevance"].dtype == np.float16
    expected = torch.cat(
        [lrpfn.lrp(model, part, RULES()) for part in torch.split(digits.images[:100], BATCH)]
    )
    assert np.array_equal(group["relevance"][:], expected.half().numpy())


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"rules": lrpfn.rules.Epsilon(0.25)}, "rules"),
        ({"model": datasets.digits_cnn(seed=1)}, "model_sha256"),
        ({"batch_size": 32}, "batch_size"),
        ({"relevance_dtype": "float16"}, "relevance_dtype"),
        ({"target": "label"}, "target"),
    ],
)
def test_other_settings_are_refused(store, model, digits, change, named):
    before = zarr.open(str(store), mode="r")["relevance"][:]
    arguments = {"model": model, "rules": RULES(), "batch_size": BATCH, "nodes": ["_3"], **change}
    with pytest.raises(
        StoreMismatchError, match=rf"(?s)other settings.*  {named}(\.\w+)?: store has"
    ):
        datasets.explain(
            arguments.pop("model"),
            digits,
            arguments.pop("rules"),
            store,
            progress=False,
            **arguments,
        )
    assert np.array_equal(zarr.open(str(store), mode="r")["relevance"][:], before)


def test_a_folder_that_is_no_store_is_refused(model, digits, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StoreMismatchError, match=r"not a Zarr store|not one written by lrpfn"):
        datasets.explain(model, digits, RULES(), tmp_path, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def _image_folder(root: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for name, count in (("cats", 3), ("dogs", 2)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            path = root / name / f"{i}.png"
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(path)
            paths.append(path)
    paths[1].write_bytes(b"\x89PNG\r\n\x1a\n this file was cut short")
    return paths  # sorted as ImageFolder sorts them: cats/0..2, dogs/0..1


def test_corrupt_image_is_reported_by_index_and_path(tmp_path, capsys):
    paths = _image_folder(tmp_path / "images")
    out = tmp_path / "images.zarr"
    status = main(
        [
            "explain-dataset",
            "--model",
            f"{HERE / 'tiny_models.py'}:tiny_cnn",
            "--data",
            str(tmp_path / "images"),
            "--rules",
            "epsilon",
            "--out",
            str(out),
            "--batch-size",
            "2",
            "--quiet",
        ]
    )
    assert status == 0
    printed = capsys.readouterr()
    assert f"sample 1 ({paths[1]}) cannot be explained" in printed.err
    assert "1 invalid row(s)" in printed.out
    group = zarr.open(str(out), mode="r")
    assert group["valid"][:].tolist() == [True, False, True, True, True]
    assert np.isnan(group["relevance"][1]).all() and np.isnan(group["logits"][1]).all()
    assert group["target"][1] == -1 and group["label"][:].tolist() == [0, -1, 0, 1, 1]
    invalid = group.attrs["lrpfn"]["invalid"]
    assert [(s["index"], s["source"]) for s in invalid] == [(1, str(paths[1]))]
    good = [0, 2, 3, 4]
    x = torch.stack(
        [
            torch.tensor(np.asarray(Image.open(paths[i])), dtype=torch.float32).permute(2, 0, 1)
            / 255.0
            for i in good
        ]
    )
    expected = lrpfn.lrp(
        tiny_models.tiny_cnn(), x, "epsilon"
    )  # the key: Epsilon(0.1) on layers, Epsilon(1e-6) on pooling
    np.testing.assert_allclose(group["relevance"][good], expected.numpy(), rtol=1e-5, atol=1e-7)


def test_digits_cnn_is_deterministic_and_leaves_the_global_seed_alone():
    state = torch.random.get_rng_state()
    first, second = datasets.digits_cnn(), datasets.digits_cnn()
    assert torch.equal(torch.random.get_rng_state(), state)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first[0].weight, datasets.digits_cnn(seed=1)[0].weight)


def test_a_plan_a_fixed_target_and_reader_processes(model, digits, tmp_path):
    subset = torch.utils.data.Subset(digits, range(100))
    plan = lrpfn.prepare(model, RULES())
    summary = datasets.explain(
        plan,
        subset,
        None,
        tmp_path / "p.zarr",
        target=2,
        batch_size=BATCH,
        workers=2,
        progress=False,
    )
    assert summary.chunks_written == 2
    group = zarr.open(str(tmp_path / "p.zarr"), mode="r")
    assert (group["target"][:] == 2).all()
    expected = torch.cat(
        [lrpfn.lrp(plan, part, target=2) for part in torch.split(digits.images[:100], BATCH)]
    )
    assert np.array_equal(group["relevance"][:], expected.numpy())
    with pytest.raises(datasets.DatasetError, match="already has its rules"):
        datasets.explain(plan, subset, RULES(), tmp_path / "q.zarr", progress=False)


def test_target_label_explains_each_sample_s_label(model, digits, tmp_path):
    subset = torch.utils.data.Subset(digits, range(70))
    datasets.explain(
        model,
        subset,
        RULES(),
        tmp_path / "l.zarr",
        target="label",
        batch_size=BATCH,
        progress=False,
    )
    group = zarr.open(str(tmp_path / "l.zarr"), mode="r")
    labels = digits.labels[:70]
    assert np.array_equal(group["target"][:], labels.numpy())
    expected = torch.cat(
        [
            lrpfn.lrp(model, x, RULES(), target=t)
            for x, t in zip(
                torch.split(digits.images[:70], BATCH), torch.split(labels, BATCH), strict=True
            )
        ]
    )
    assert np.array_equal(group["relevance"][:], expected.numpy())


def test_cli_names_bad_arguments(tmp_path, capsys):
    status = main(
        [
            "explain-dataset",
            "--model",
            "lrpfn.datasets:digits_cnn",
            "--data",
            "digits",
            "--out",
            str(tmp_path / "x.zarr"),
            "--target",
            "cat",
        ]
    )
    assert status == 1
    assert "--target must be a class index or 'label', got 'cat'" in capsys.readouterr().err
    status = main(
        [
            "explain-dataset",
            "--model",
            "lrpfn.datasets:digits_cnn",
            "--data",
            "lrpfn.datasets:nothing",
            "--out",
            str(tmp_path / "x.zarr"),
        ]
    )
    assert status == 1
    assert "has no attribute 'nothing'" in capsys.readouterr().err


def test_cli_data_from_a_dataset_class(tmp_path, capsys):
    out = tmp_path / "c.zarr"
    status = main(
        [
            "explain-dataset",
            "--model",
            "lrpfn.datasets:digits_cnn",
            "--data",
            "lrpfn.datasets:Digits",
            "--rules",
            "epsilon_plus",
            "--out",
            str(out),
            "--dtype",
            "float16",
            "--target",
            "label",
            "--batch-size",
            "512",
            "--quiet",
        ]
    )
    assert status == 0
    assert "wrote 4 chunk(s) of 512" in capsys.readouterr().out
    group = zarr.open(str(out), mode="r")
    assert group["relevance"].dtype == np.float16 and group["valid"][:].all()
    assert np.array_equal(group["target"][:], datasets.Digits().labels.numpy())
    assert group.attrs["lrpfn"]["settings"]["data"] == "lrpfn.datasets:Digits"


def test_an_fsspec_location(model, digits):
    subset = torch.utils.data.Subset(digits, range(100))
    url = "memory://lrpfn-test/run.zarr"  # fsspec's in-memory file system
    first = datasets.explain(model, subset, RULES(), url, batch_size=BATCH, progress=False)
    again = datasets.explain(model, subset, RULES(), url, batch_size=BATCH, progress=False)
    assert (first.chunks_written, again.chunks_written, again.chunks_skipped) == (2, 0, 2)
    group = zarr.open_group(url, mode="r")
    expected = torch.cat(
        [lrpfn.lrp(model, x, RULES()) for x in torch.split(digits.images[:100], BATCH)]
    )
    assert np.array_equal(group["relevance"][:], expected.numpy())
