"""The op table: how relevance passes each graph op.

`handler` defines the handler kinds (`Handler`, `Step`, pass, route, none) and
`handler_for`; `linear` the kinds that apply a rule (linear layers, sums, products);
each op family registers its handlers in its own module (`core`, `normalization`,
`resampling`, `affine`, `elementwise`, `exported`, `attention`, `rms_norm`) beside the
functional ops it introduces (`functional`, `attention_functional`, `window_functional`);
`table` merges them into the one dispatch table `HANDLERS`.
"""

from .table import HANDLERS

__all__ = ["HANDLERS"]
