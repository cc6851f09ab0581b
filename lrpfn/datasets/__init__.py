"""Explain whole data sets into a Zarr store, in one process or sharded with `torchrun`,
and analyse the store (spectral relevance analysis).

    import lrpfn
    from lrpfn import datasets

    summary = datasets.explain(model, dataset, lrpfn.composites.epsilon_plus(), "run.zarr",
                               batch_size=64)
    groups = datasets.spray("run.zarr", target=3, n_clusters=4)

The same script runs unchanged under `torchrun --nproc_per_node=N` (and multi-node
`torchrun`): each rank explains its share of the batches. Needs the `datasets` extra
(`zarr>=3`, `scikit-learn`).
"""

from . import sharding as sharding
from ._digits import TRAINED_ON as TRAINED_ON, Digits as Digits, digits_cnn as digits_cnn
from ._errors import DatasetError as DatasetError, StoreMismatchError as StoreMismatchError
from ._explain import Summary as Summary, explain as explain
from ._folder import ImageFolder as ImageFolder
from ._samples import InvalidSample as InvalidSample
from ._setup import fingerprint as fingerprint
from ._spray import Spray as Spray, spray as spray
from ._store import (
    Layout as Layout,
    check_settings as check_settings,
    open_existing as open_existing,
    store_exists as store_exists,
)
