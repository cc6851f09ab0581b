"""`lrpfn explain-dataset` under `torchrun --nproc_per_node=2` (gloo, CPU): the store is
bit-identical to one written by a single process, and after a rank is killed with SIGKILL
mid-run, running the same command again completes only the missing chunks and gives a
bit-identical store.

The kill comes from the test hook `LRPFN_TEST_SIGKILL="RANK:N"` (see
`lrpfn.datasets._run`): rank RANK kills itself in its chunk N+1 after writing the
chunk's arrays and before recording the chunk as complete.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from lrpfn import composites, datasets

ROOT = Path(__file__).resolve().parent.parent
BATCH = 64
ARRAYS = ("relevance", "logits", "target", "ratio", "label", "valid", "complete", "nodes/_3")


def torchrun(out: Path, **environment: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        "--standalone", "-m", "lrpfn", "explain-dataset",
        "--model", "lrpfn.datasets:digits_cnn", "--data", "digits", "--rules", "epsilon_plus",
        "--out", str(out), "--batch-size", str(BATCH), "--keep-node", "_3", "--threads", "1",
    ]  # fmt: skip
    pythonpath = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": pythonpath, **environment},
        timeout=300,
    )


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """The store of one process, as `explain` writes it in-process."""
    out = tmp_path_factory.mktemp("single") / "digits.zarr"
    datasets.explain(
        datasets.digits_cnn(), datasets.Digits(), composites.epsilon_plus(), out,
        batch_size=BATCH, nodes=["_3"], progress=False,
    )  # fmt: skip
    return out


def assert_identical(store: Path, reference: Path) -> None:
    written, expected = zarr.open(str(store), mode="r"), zarr.open(str(reference), mode="r")
    for name in ARRAYS:
        a, b = written[name][:], expected[name][:]
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), f"{name} differs"


def test_two_ranks_write_the_store_of_one_process(single, tmp_path):
    result = torchrun(tmp_path / "ranks.zarr")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wrote 29 chunk(s) of 64" in result.stdout
    assert_identical(tmp_path / "ranks.zarr", single)
    attributes = zarr.open(str(tmp_path / "ranks.zarr"), mode="r").attrs["lrpfn"]
    assert attributes["runs"][-1]["world_size"] == 2 and attributes["complete"] is True
    assert attributes["settings"]["model"] == "lrpfn.datasets:digits_cnn"


def test_kill_a_rank_and_rerun_gives_the_uninterrupted_store(single, tmp_path):
    out = tmp_path / "killed.zarr"
    killed = torchrun(out, LRPFN_TEST_SIGKILL="1:2")
    assert killed.returncode != 0
    assert "Signals.SIGKILL" in killed.stderr or "SIGKILL" in killed.stderr
    group = zarr.open(str(out), mode="r")
    complete, valid = group["complete"][:], group["valid"][:]
    assert 0 < complete.sum() < len(complete)
    # rank 1's third chunk (chunk 5 = missing[1::2][2]) is written but not recorded complete
    assert valid[5 * BATCH : 6 * BATCH].all() and not complete[5]

    resumed = torchrun(out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    missing = int((~complete).sum())
    assert f"wrote {missing} chunk(s) of 64 to {out} ({29 - missing} already complete)" in (
        resumed.stdout
    )
    assert_identical(out, single)
    assert torch.equal(
        torch.from_numpy(zarr.open(str(out), mode="r")["complete"][:]),
        torch.ones(29, dtype=torch.bool),
    )
