"""`lrpfn atlas` under `torchrun --nproc_per_node=2` (gloo, CPU) writes the store of one
process, bit for bit: each rank computes every other missing chunk and keeps its own
running top-k; the ranks' top-ks merge exactly (a total order on (score, index))."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from lrpfn import composites, concepts, datasets

pytestmark = pytest.mark.slow  # torchrun starts two processes (about 30 s on 2 shared cores)

ROOT = Path(__file__).resolve().parent.parent
BATCH = 256
LAYERS = ("3", "6")


def test_two_ranks_write_the_atlas_of_one_process(tmp_path) -> None:
    single = tmp_path / "single.zarr"
    concepts.atlas(
        datasets.digits_cnn(), datasets.Digits(), composites.epsilon_plus(), list(LAYERS),
        single, k=10, batch_size=BATCH, model_name="lrpfn.datasets:digits_cnn",
        data_name="digits", progress=False,
    )  # fmt: skip
    ranks = tmp_path / "ranks.zarr"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
        "-m", "lrpfn", "atlas", "--model", "lrpfn.datasets:digits_cnn", "--data", "digits",
        "--rules", "epsilon_plus", "--layer", "3", "--layer", "6", "--out", str(ranks),
        "--k", "10", "--batch-size", str(BATCH), "--references", "0", "--threads", "1",
        "--quiet",
    ]  # fmt: skip
    pythonpath = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": pythonpath},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("wrote the atlas of 2 layer(s)") == 1  # rank 0 alone
    a, b = zarr.open_group(str(ranks), mode="r"), zarr.open_group(str(single), mode="r")
    names = ["label", "target", "logits", "class_count", "complete"] + [
        f"layers/{layer}/{ordering}/{part}"
        for layer in LAYERS
        for ordering in ("relevance_sum", "relevance_max", "activation_sum", "activation_max")
        for part in ("indices", "scores", "samples")
    ]
    for name in names + [f"layers/{layer}/class_relevance" for layer in LAYERS]:
        x, y = a[name][...], b[name][...]
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert np.array_equal(x.view(np.uint8), y.view(np.uint8)), f"{name} differs"
    runs = a.attrs["lrpfn"]["runs"]
    assert runs[-1]["world_size"] == 2 and runs[-1]["chunks_written"] == 8
