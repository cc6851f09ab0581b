"""Helpers shared by the benchmark scripts: machine description, timing, peak memory, tables.

Timing: `interleaved_medians` calls every method once per repetition, in a rotating order,
so that slow drifts of the machine (other processes, thermal state) affect all methods
alike; it reports the median over repetitions after warm-up calls.

Peak memory: `peak_memory_mib` runs `setup(*args)` in a fresh process (multiprocessing
"spawn"), resets the process's peak resident set size (VmHWM, via /proc/self/clear_refs),
calls the method `setup` returned once and reports the peak minus the resident size just
before the call. A fresh process per measurement keeps earlier measurements' allocations
(and the memory the C heap keeps after freeing them) out of the numbers. On CUDA the peak
of `torch.cuda.max_memory_allocated` over the allocation before the call is reported.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import gc
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "configure_threads",
    "interleaved_medians",
    "machine_description",
    "markdown_table",
    "peak_memory_mib",
    "revision",
    "synchronize",
    "today",
]


def configure_threads(threads: int) -> None:
    """Use exactly `threads` intra-op threads (the inter-op pool is left alone)."""
    torch.set_num_threads(threads)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    """The card's name for a CUDA device, "cpu" otherwise."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu"


def machine_description(device: str, threads: int) -> str:
    """One line: CPU model, cores, threads used, the accelerator and library versions."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parts = [
        f"CPU: {cpu_model()} ({cores} cores available, {threads} torch threads)",
        f"device: {device_name(device)}",
        f"Python {platform.python_version()}, torch {torch.__version__}",
    ]
    if hasattr(os, "getloadavg"):  # other processes slow the timings down
        parts.append(
            "load average at start {:.1f} / {:.1f} / {:.1f} (1 / 5 / 15 min)".format(
                *os.getloadavg()
            )
        )
    return "; ".join(parts)


def revision() -> str:
    """The git commit of the working tree, noting uncommitted changes to lrpfn/."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(root), "diff", "--quiet", "HEAD", "--", "lrpfn"], check=False
        ).returncode
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + (" with uncommitted changes to lrpfn/" if changed else "")


def today() -> str:
    return datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def interleaved_medians(
    methods: Mapping[str, Callable[[], Any]],
    repeats: int,
    warmup: int,
    device: str,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median seconds per call of each method.

    Every repetition calls each method once; the starting method rotates from one
    repetition to the next. `warmup` untimed rounds come first. `clock` is wall-clock time
    by default; `time.process_time` counts this process's CPU seconds (on a shared, loaded
    machine with one torch thread, the work done rather than the waiting).
    """
    names = list(methods)
    for _ in range(warmup):
        for name in names:
            methods[name]()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for repetition in range(repeats):
        shift = repetition % len(names)
        for name in names[shift:] + names[:shift]:
            start = clock()
            methods[name]()
            synchronize(device)
            times[name].append(clock() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_memory_mib(
    setup: Callable[..., Callable[[], Any]], *args: Any, device: str, warm: bool = False
) -> float:
    """Peak memory increase (MiB) of one call of `setup(*args)()` in a fresh process.

    `setup` must be a module-level function (it is pickled by reference); its own
    allocations (model, copies, prepared plans) are not counted. With `warm` the call is
    made once before the measured one, so that what a process loads once (code, the
    modules the first `torch.func.vjp` imports) is not counted.
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_measure_once, setup, args, device, warm).result()


def _measure_once(
    setup: Callable[..., Callable[[], Any]], args: tuple, device: str, warm: bool = False
) -> float:
    method = setup(*args)
    if warm:
        method()
    gc.collect()
    _release_free_heap()
    if device.startswith("cuda"):
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = method()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        del result
        return (peak - before) / 2**20
    _reset_peak_rss()
    before = _status_kib("VmRSS")
    result = method()
    peak = _status_kib("VmHWM")
    del result
    return (peak - before) / 1024


def _release_free_heap() -> None:
    """Give the C heap's free memory back to the system (glibc's malloc_trim), so that the
    measured call cannot reuse memory freed by the setup without it being counted."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to release
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_peak_rss() -> None:
    """Reset the kernel's peak RSS of this process (VmHWM) to its current RSS (Linux >= 4.0).

    (`getrusage(RUSAGE_SELF).ru_maxrss` is no substitute: it also keeps the peak of the
    forked parent from before `exec`, the whole parent's RSS for a spawned child.)
    """
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError as error:
        raise RuntimeError(
            "cannot reset the peak RSS (/proc/self/clear_refs); peak memory needs Linux"
        ) from error


def _status_kib(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS: resident now, VmHWM: peak), in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def ratio_cells(
    method: str, times: dict[str, float], peaks: dict[str, float], first: str = "gradient"
) -> list[str]:
    """`[method, seconds, x first, peak MiB, x first]`: a method's median time and peak
    memory, each beside its ratio to the `first` method's ("-" where memory was not
    measured)."""
    peak = peaks.get(method)
    return [
        method,
        f"{times[method]:.3f}",
        f"{times[method] / times[first]:.2f}",
        "-" if peak is None else f"{peak:.0f}",
        "-" if peak is None else f"{peak / peaks[first]:.2f}",
    ]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; `|` inside cells is escaped."""

    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    separator = "|" + "|".join("---" for _ in header) + "|"
    return "\n".join([line(header), separator, *(line(row) for row in rows)])


def table_cell(value: Any) -> str:
    """A measured value as a table cell: 3 significant digits, scientific outside
    [1e-3, 1e4), "-" for a missing value."""
    if isinstance(value, float):
        return f"{value:.3g}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.2e}"
    return "-" if value is None else str(value)
