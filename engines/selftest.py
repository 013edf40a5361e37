"""``python -m engines.selftest [--json]``: every backend/precision this machine can run, checked and timed.

For each engine variant (torch fp32 on CPU is the reference; ONNX Runtime fp32 in the conv
and dft FIFM forms and fp16; torch and ONNX Runtime on CUDA where a GPU and a CUDA build
exist; TensorRT where ``tensorrt`` imports and a GPU exists) it

* checks agreement with torch fp32: max abs difference over ``scores`` and ``offsets`` of
  the whole model (``infer``) and of the streaming path (``decode_window`` over
  ``encode_chunk`` of the same clips), against a tolerance per precision;
* times ``infer`` at batch 1, 8 and 32 (``--batches``): p50/p95 latency per window (a batch
  call's time divided by its windows) and windows per second.

Variants that cannot run here are listed as skipped with the reason (no CUDA device, no
``tensorrt``, int8/fp8 need calibration data). The weights are the preset's random
initialisation with non-zero IGA adapters, so every branch contributes: agreement is a
property of the compiled graph, not of trained values. Engines are exported into a
temporary folder, never into the user's engine cache. With ``--json`` the last stdout line
is one JSON object ``{device, checks, timings, skipped, ...}``; the exit code is 1 when a
check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fgsl.cli import HelpFormatter, UsageError, first_line, missing_module, positive_int, positive_number, run
from fgsl.config import PRESETS, FGSLConfig, preset
from fgsl.model import FGSL, build

from .base import Engine, EngineError, stream_infer
from .extras import ONNX_HINT, TRT_HINT

#: Max abs difference to torch fp32 allowed per precision. fp32 is the issue's bound; fp16
#: measured 4e-3 (scores) on the realtime preset with random weights, so 5e-2 leaves margin
#: while still catching a broken conversion (errors of order 1). fp32 on CUDA is "tf32":
#: cuDNN's convolutions, ONNX Runtime's CUDA provider and TensorRT's fp32 builds all use TF32
#: (10 mantissa bits) by default; measured 5e-4 (tiny) and 1e-3 (realtime) on an H100
#: (docs/engines.md), so 5e-3.
TOLERANCE = {"fp32": 1e-4, "tf32": 5e-3, "fp16": 5e-2}


def tolerance_for(precision: str, device: str) -> float:
    """The bound for a variant: its precision's, with fp32 on a GPU held to TF32's."""
    key = "tf32" if precision == "fp32" and device != "cpu" else precision
    return TOLERANCE.get(key, TOLERANCE["fp16"])


def max_abs_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in ("scores", "offsets"))


def random_clips(cfg: FGSLConfig, batch: int, seed: int = 0) -> np.ndarray:
    shape = (batch, 3, cfg.window_frames, cfg.image_size, cfg.image_size)
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def randomise_adapters(model: FGSL, seed: int = 1) -> None:
    """Give every IGA up-projection non-zero weights (seeded). They start at zero by design,
    which would leave the adapters out of every comparison of a random network (this self-test's
    and the tests')."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for adapter in model.iga.adapters:
            adapter.up.weight.copy_(torch.randn(adapter.up.weight.shape, generator=g) * 0.1)
            adapter.up.bias.copy_(torch.randn(adapter.up.bias.shape, generator=g) * 0.1)


def selftest_model(name: str, seed: int = 0) -> FGSL:
    """The preset's network with every IGA up-projection non-zero (:func:`randomise_adapters`)."""
    model = build(preset(name), seed=seed)
    randomise_adapters(model, seed + 1)
    return model


@dataclass
class Variant:
    """One engine to check and time; ``skip`` says why it cannot run here."""

    backend: str
    precision: str
    device: str
    detail: str = ""
    opener: Callable[[], Engine] | None = None
    skip: str | None = None

    @property
    def name(self) -> str:
        return f"{self.backend} {self.precision} {self.device}" + (f" ({self.detail})" if self.detail else "")


def cpu_name() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info() -> dict[str, Any]:
    """The machine: CPU, core count, and the GPU (or the fact that there is none)."""
    from .onnx_backend import import_onnxruntime

    info: dict[str, Any] = {"cpu": cpu_name(), "cores": os.cpu_count(),
                            "torch": torch.__version__, "cuda": torch.cuda.is_available()}
    try:
        onnxruntime = import_onnxruntime()
    except EngineError:
        info["onnxruntime"] = None
    else:
        info["onnxruntime"] = onnxruntime.__version__
        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    if info["cuda"]:
        info["gpu"] = torch.cuda.get_device_name(0)
        info["capability"] = list(torch.cuda.get_device_capability(0))
    else:
        info["gpu"] = None
        info["note"] = "no CUDA device: CPU part only"
    return info


def variants(model: FGSL, work: Path, info: dict[str, Any]) -> list[Variant]:
    """Every variant this self-test knows, each openable or skipped with its reason."""
    from .export import export_engine_dir
    from .onnx_backend import OnnxEngine, available
    from .torch_backend import TorchEngine

    found = [Variant("torch", "fp32", "cpu", opener=lambda: TorchEngine(model, device="cpu"))]
    cuda = info["cuda"]
    found.append(Variant("torch", "fp32", "cuda", opener=(lambda: TorchEngine(model, device="cuda")) if cuda else None,
                         skip=None if cuda else "no CUDA device"))
    ort_reason = available()
    ort_cuda = bool(info.get("onnxruntime_providers")) and "CUDAExecutionProvider" in info["onnxruntime_providers"]

    def onnx_variant(precision: str, fifm: str, device: str) -> Variant:
        def opener() -> Engine:
            folder = work / f"onnxruntime-{precision}-{fifm}"
            if not (folder / "manifest.json").exists():
                export_engine_dir(model, folder, fifm, precision=precision, trained=False)
            return OnnxEngine.from_dir(folder, device=device, allow_untrained=True)

        skip = ort_reason
        if not skip and device == "cuda" and not (cuda and ort_cuda):
            skip = "no CUDA device" if not cuda else "this onnxruntime has no CUDAExecutionProvider"
        if not skip and precision == "fp16":
            skip = missing_module(("onnxconverter_common",), "fp16 conversion", ONNX_HINT)
        return Variant("onnxruntime", precision, device, f"fifm {fifm}", None if skip else opener, skip)

    for device in ("cpu", "cuda"):
        found += [onnx_variant("fp32", "conv", device), onnx_variant("fp32", "dft", device),
                  onnx_variant("fp16", "conv", device)]
    found += tensorrt_variants(model, work, cuda)
    return found


def tensorrt_variants(model: FGSL, work: Path, cuda: bool) -> list[Variant]:
    """TensorRT fp32/fp16 (plugin FIFM) when a GPU and tensorrt exist; int8/fp8 always skipped here.

    The GPU is asked about first: probing tensorrt imports it, which loads its CUDA libraries,
    for nothing on a machine that has no GPU to run it on.
    """
    reason = None
    if not cuda:
        reason = "no CUDA device (TensorRT objects are never created without one)"
    else:
        from .trt import import_tensorrt

        try:
            import_tensorrt("the tensorrt backend", TRT_HINT)  # missing, libraries not loadable, or too old
        except EngineError as exc:
            reason = str(exc)
    out: list[Variant] = []
    for precision in ("fp32", "fp16"):
        def opener(precision: str = precision) -> Engine:
            import engines
            from .build import build_tensorrt
            from .export import export_engine_dir

            folder = work / f"tensorrt-{precision}"
            export_engine_dir(model, folder, "plugin", precision=precision, trained=False, backend="tensorrt")
            build_tensorrt(folder, precision)
            return engines.open(folder, backend="tensorrt", device="cuda", allow_untrained=True)

        out.append(Variant("tensorrt", precision, "cuda", "fifm plugin", None if reason else opener, reason))
    for precision in ("int8", "fp8"):
        out.append(Variant("tensorrt", precision, "cuda", skip=reason or "needs calibration data "
                           "(python -m calib.collect, python -m calib.quantize)"))
    return out


def time_engine(engine: Engine, cfg: FGSLConfig, batch: int, repeats: int, max_seconds: float) -> dict[str, Any]:
    """p50/p95 per-window latency and windows/s of ``infer`` at ``batch`` (one warm-up call first)."""
    clips = random_clips(cfg, batch, seed=batch)
    engine.infer(clips)
    calls: list[float] = []
    start = time.perf_counter()
    while len(calls) < repeats and (not calls or time.perf_counter() - start < max_seconds):
        t0 = time.perf_counter()
        engine.infer(clips)
        calls.append(time.perf_counter() - t0)
    per_window = np.asarray(calls) / batch * 1e3
    return {"batch": batch, "runs": len(calls), "p50_ms": float(np.percentile(per_window, 50)),
            "p95_ms": float(np.percentile(per_window, 95)), "windows_per_s": float(batch * len(calls) / sum(calls))}


def selftest(preset_name: str, batches: list[int], repeats: int, max_seconds: float,
             log: Callable[[str], None]) -> dict[str, Any]:
    """Run every variant; returns the report (``checks`` with ``ok`` False mean failure)."""
    info = device_info()
    model = selftest_model(preset_name)
    cfg = model.cfg
    clips = random_clips(cfg, 2, seed=123)
    reference = None
    checks: list[dict[str, Any]] = []
    timings: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="fgsl-selftest-") as tmp:
        for variant in variants(model, Path(tmp), info):
            if variant.opener is None:
                skipped.append({"name": variant.name, "reason": variant.skip or "unavailable"})
                log(f"skip  {variant.name}: {variant.skip}")
                continue
            log(f"run   {variant.name}")
            try:
                engine = variant.opener()
                whole = engine.infer(clips)
                streamed = stream_infer(engine, clips)
            except Exception as exc:  # a variant that breaks is a failed check, not a crashed self-test
                checks.append({"name": f"{variant.name}: opens and runs", "ok": False, "max_abs_diff": None,
                               "error": first_line(exc)})
                continue
            if reference is None:
                reference = whole  # the first variant is torch fp32 on CPU
            tolerance = tolerance_for(variant.precision, variant.device)
            for path, out in (("infer", whole), ("encode_chunk+decode_window", streamed)):
                diff = max_abs_diff(out, reference)
                checks.append({"name": f"{variant.name}: {path} vs torch fp32", "ok": diff <= tolerance,
                               "max_abs_diff": diff, "tolerance": tolerance})
            description = engine.describe()
            for batch in batches:
                t = time_engine(engine, cfg, batch, repeats, max_seconds)
                timings.append({"backend": variant.backend, "precision": variant.precision, "device": variant.device,
                                "variant": variant.name, "runs_on": description.get("device"), **t})
                log(f"      batch {batch:>3}: p50 {t['p50_ms']:.2f} ms/window, {t['windows_per_s']:.1f} windows/s")
    return {"device": info, "preset": cfg.name, "window": [cfg.window_frames, cfg.image_size, cfg.image_size],
            "checks": checks, "timings": timings, "skipped": skipped,
            "ok": all(c["ok"] for c in checks)}


def format_report(report: dict[str, Any]) -> str:
    d = report["device"]
    gpu = d.get("gpu") or d.get("note", "no GPU")
    lines = [f"FGSL engine self-test, preset {report['preset']} (window {report['window']}), "
             f"{d['cpu']} x{d['cores']}, {gpu}", "", "checks (max abs diff vs torch fp32 on CPU):"]
    for c in report["checks"]:
        value = "n/a" if c.get("max_abs_diff") is None else f"{c['max_abs_diff']:.2e}"
        bound = f" <= {c['tolerance']:g}" if "tolerance" in c else ""
        lines.append(f"  {'ok  ' if c['ok'] else 'FAIL'} {c['name']}: {value}{bound}" + (f" ({c['error']})" if c.get("error") else ""))
    lines += ["", "timings (infer):", f"  {'variant':<44} {'batch':>5} {'p50 ms/win':>11} {'p95 ms/win':>11} {'windows/s':>10}"]
    for t in report["timings"]:
        lines.append(f"  {t['variant']:<44} {t['batch']:>5} {t['p50_ms']:>11.2f} {t['p95_ms']:>11.2f} {t['windows_per_s']:>10.1f}")
    if report["skipped"]:
        lines += ["", "skipped:"] + [f"  {s['name']}: {s['reason']}" for s in report["skipped"]]
    lines += ["", "all checks passed" if report["ok"] else "SOME CHECKS FAILED"]
    return "\n".join(lines)


def _batches(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--batches must be comma-separated positive integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise UsageError(f"--batches must be comma-separated positive integers, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engines.selftest", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--preset", default="realtime", choices=sorted(PRESETS),
                        help="network to check and time, with random weights (tiny: seconds; realtime: minutes on a CPU)")
    parser.add_argument("--batches", default="1,8,32", help="batch sizes to time")
    parser.add_argument("--repeats", type=positive_int, default=10, help="timed calls per batch size")
    parser.add_argument("--max-seconds", type=positive_number, default=30.0,
                        help="stop timing a batch size after this long, in seconds (at least one call)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)

    def body(_: list[str] | None) -> int:
        batches = _batches(args.batches)
        report = selftest(args.preset, batches, args.repeats, args.max_seconds,
                          log=lambda line: print(line, file=sys.stderr, flush=True))
        print(format_report(report))
        if args.json:
            print(json.dumps(report))
        return 0 if report["ok"] else 1

    return run(body)


if __name__ == "__main__":
    raise SystemExit(main())
