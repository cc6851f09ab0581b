"""Agreement with lxt 2.1 on every family it has patches for (Llama, Qwen2, Qwen3, Gemma3,
GPT-2), with sdpa and eager attention, both rule sets: relevance at the token embeddings
within 1e-6 of the largest (float64, epsilon 1e-12).

lxt patches transformers process-wide, so each rule set runs in a subprocess
(`hf_lxt_oracle.py`), lrpfn first with nothing patched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lrpfn

pytest.importorskip("transformers", reason="transformers is the [text] extra")
pytest.importorskip("lxt.efficient", reason="lxt (the oracle) is a test extra")

ORACLE = Path(__file__).with_name("hf_lxt_oracle.py")
PATCHED = ["llama", "qwen2", "qwen3", "gemma3", "gpt2"]
EAGER = ["llama", "gemma3"]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["attnlrp", "cp_lrp"])
def test_agrees_with_lxt_on_every_patched_family(variant):
    specs = [f"{name}:{variant}" for name in PATCHED] + [f"{n}:{variant}:eager" for n in EAGER]
    result = subprocess.run(
        [sys.executable, str(ORACLE), *specs],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(lrpfn.__file__).parents[1])},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [(row["model"], row["attention"]) for row in rows] == [
        (spec.split(":")[0], [*spec.split(":"), "sdpa"][2]) for spec in specs
    ]
    for row in rows:
        assert row["relative_error"] < 1e-6, row
