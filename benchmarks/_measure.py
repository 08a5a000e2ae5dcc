"""Peak memory and time of one forward (+ backward), shared by the kernel benchmarks.

Peak memory is the peak of live allocations above the level at the call's start (CPU: replay of
the profiler's allocator events; CUDA: ``torch.cuda.max_memory_allocated``); the forward peak is
the peak before the backward starts. Times are wall and process-CPU seconds (on a shared CPU the
process CPU time is the robust measure of work; on CUDA, wall time with synchronisation).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_peaks(forward: Callable[[], Any], backward: Callable[[Any], None] | None):
    """``(forward peak bytes, fwd+bwd peak bytes, forward's output)``."""
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        outputs = forward()
        with record_function("benchmark_backward"):
            if backward is not None:
                backward(outputs)
    events = prof.profiler.kineto_results.events()
    boundary = min(e.start_ns() for e in events if e.name() == "benchmark_backward")
    memory = sorted((e for e in events if e.name() == "[memory]"), key=lambda e: e.start_ns())
    level = forward_peak = peak = 0
    for event in memory:
        level += event.nbytes()
        peak = max(peak, level)
        if event.start_ns() < boundary:
            forward_peak = peak
    return forward_peak, peak, outputs


def cuda_peaks(forward: Callable[[], Any], backward: Callable[[Any], None] | None):
    """As :func:`cpu_peaks`, from the CUDA caching allocator's counters."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    outputs = forward()
    torch.cuda.synchronize()
    forward_peak = torch.cuda.max_memory_allocated() - base
    if backward is not None:
        backward(outputs)
    torch.cuda.synchronize()
    return forward_peak, torch.cuda.max_memory_allocated() - base, outputs


def timed(forward: Callable[[], Any], backward: Callable[[Any], None] | None, device):
    """Wall and process-CPU seconds of the forward and of forward + backward."""
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    outputs = forward()
    sync(device)
    out = {"forward_s": time.perf_counter() - wall, "forward_cpu_s": time.process_time() - cpu}
    if backward is not None:
        backward(outputs)
        sync(device)
        out["forward_backward_s"] = time.perf_counter() - wall
        out["forward_backward_cpu_s"] = time.process_time() - cpu
    del outputs
    return out


def available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    try:
        import psutil

        return psutil.virtual_memory().available
    except ImportError:
        return 1 << 62


def machine_load() -> dict[str, float]:
    """1-, 5- and 15-minute load averages (others share the machine)."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return {}
    return {"load_1min": one, "load_5min": five, "load_15min": fifteen, "cpus": os.cpu_count()}


def machine_info() -> dict[str, Any]:
    """The machine a CPU benchmark ran on: platform, cores, torch threads and its load."""
    import platform

    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_before": machine_load(),
    }


def shape_arguments(parser: argparse.ArgumentParser, methods, out: str) -> None:
    """The options the kernel benchmarks share: shape, device, dtype, repeats, methods, outputs."""
    parser.add_argument("--full", action="store_true", help="N=4096, d=1536, V=151936")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("N", "D", "V"), default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="float32 on CPU, bfloat16 on CUDA")
    parser.add_argument("--repeat", type=int, default=None, help="timed runs per method")
    parser.add_argument("--methods", nargs="+", default=list(methods), choices=methods)
    parser.add_argument("--out", type=Path, default=Path(out))
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table here")


def resolve_case(args: argparse.Namespace, quick: dict, full: dict):
    """``(n, d, v, device, dtype)``: ``--shape`` if given, else the full or the quick shape."""
    shape = full if args.full else quick
    if args.shape is not None:
        shape = dict(zip(("n", "d", "v"), args.shape, strict=True))
    return shape["n"], shape["d"], shape["v"], torch.device(args.device), getattr(torch, args.dtype)


def run_and_write(args: argparse.Namespace, run, markdown) -> None:
    """Fill the device defaults, ``run(args)``, write the JSON (and the Markdown table)."""
    if args.dtype is None:
        args.dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    if args.repeat is None:
        args.repeat = 2 if args.full and args.device == "cpu" else 3
    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    if args.markdown is not None:
        args.markdown.write_text(table)
    print(json.dumps(report["ratios"], indent=2))
    print(table)


def load_method(name: str, factory, need_bytes: int, device, results: dict):
    """``factory(name)``, or ``None`` with ``results[name]`` saying why it is skipped (its peer
    package is not importable, or it would need more memory than the device has free)."""
    try:
        fn = factory(name)
    except ImportError as error:
        results[name] = {"skipped": f"not importable: {error}"}
        return None
    if need_bytes > 0.8 * available_bytes(device):
        results[name] = {"skipped": f"needs about {need_bytes / 2**30:.1f} GiB, not available"}
        return None
    return fn


def report_header(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """What every kernel benchmark report starts with: dtype, device, versions, threads, load."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        "dtype": args.dtype,
        "device": str(device),
        "device_name": name or platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "repeat": args.repeat,
        "machine_load_after": machine_load(),
    }
