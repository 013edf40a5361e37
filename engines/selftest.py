"""``python -m engines.selftest [--json] [--engine DIR]``: every backend/precision this machine can run, checked and timed.

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
is one JSON object ``{device, checks, timings, skipped, status, ...}``; the exit code is 1 when a
check fails.

``--engine DIR`` checks a folder built by ``python -m engines.build`` instead of random
networks (:func:`engine_selftest`): its manifest parses, every graph and TensorRT plan has the
size and SHA-256 the manifest records, every graph carries the manifest's weights digest, and
the weights it was built from (``--weights``, else the manifest's ``source`` folder, else the
seed-0 network of an ``--allow-untrained`` build) have that digest; then what of it this
machine can run (its ONNX graphs on ONNX Runtime, its plans on TensorRT) is checked against
torch on those weights and timed, as above. A stale or tampered folder is one ``error:`` line
(exit 2); a folder nothing here can run (TensorRT plans without a GPU, plugin-form graphs
without TensorRT) is reported as skipped, exit code 3.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fgsl.startup import quiet_exit, startup_imports

# Importing torch takes the first second or two: Ctrl-C then is no bug (fgsl.startup).
with startup_imports(__name__):
    import numpy as np
    import torch

    from fgsl.cli import ArgumentParser, HelpFormatter, UsageError, first_line, missing_module, positive_int, positive_number, run
    from fgsl.config import PRESETS, FGSLConfig, preset
    from fgsl.model import FGSL, build

    from .base import Engine, EngineError, stream_infer
    from .extras import ONNX_HINT, TRT_HINT
    from .machine import machine_info

#: Max abs difference to torch fp32 allowed per precision. fp32 is the issue's bound; fp16
#: measured 4e-3 (scores) on the realtime preset with random weights, so 5e-2 leaves margin
#: while still catching a broken conversion (errors of order 1). fp32 on CUDA is "tf32":
#: cuDNN's convolutions, ONNX Runtime's CUDA provider and TensorRT's fp32 builds all use TF32
#: (10 mantissa bits) by default; measured 5e-4 (tiny) and 1e-3 (realtime) on an H100
#: (docs/engines.md), so 5e-3.
TOLERANCE = {"fp32": 1e-4, "tf32": 5e-3, "fp16": 5e-2}
#: Exit code per report status. ``skipped`` (an ``--engine`` folder nothing here can run) is
#: neither a pass nor a failure, and a script must not take it for either.
EXIT_CODES = {"passed": 0, "failed": 1, "skipped": 3}


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


def device_info() -> dict[str, Any]:
    """The machine (:func:`engines.machine.machine_info`: CPU, CPU counts, torch, the GPU or the
    fact that there is none), with what this self-test adds: ONNX Runtime's version and
    providers (which variants can run), and a note when only the CPU part runs."""
    from .onnx_backend import import_onnxruntime

    info = machine_info()  # torch is imported by this module: its "cuda" and "gpu" keys are there
    try:
        onnxruntime = import_onnxruntime()
    except EngineError:
        info["onnxruntime"] = None
    else:
        info["onnxruntime"] = onnxruntime.__version__
        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    if not info["cuda"]:
        info["note"] = "no CUDA device: CPU part only"
    return info


def reference_variant(model: FGSL) -> Variant:
    """torch fp32 on the CPU: the reference every other variant is compared with (run first)."""
    from .torch_backend import TorchEngine

    return Variant("torch", "fp32", "cpu", opener=lambda: TorchEngine(model, device="cpu"))


def onnxruntime_skip(device: str, info: dict[str, Any], fifm: str) -> str | None:
    """Why ONNX Runtime cannot run graphs of FIFM form ``fifm`` on ``device`` here (``None``: it can).
    Shared by the random-network variants and an engine folder's (``--engine``)."""
    from .onnx_backend import available

    reason = available()
    if reason:
        return reason
    if fifm == "plugin":
        return "fifm plugin is a TensorRT custom op that ONNX Runtime cannot run"
    if device == "cuda":
        if not info["cuda"]:
            return "no CUDA device"
        if "CUDAExecutionProvider" not in (info.get("onnxruntime_providers") or ()):
            return "this onnxruntime has no CUDAExecutionProvider"
    return None


def tensorrt_skip(cuda: bool) -> str | None:
    """Why TensorRT cannot run here (``None``: it can).

    The GPU is asked about first: probing tensorrt imports it, which loads its CUDA libraries,
    for nothing on a machine that has no GPU to run it on.
    """
    if not cuda:
        return "no CUDA device (TensorRT objects are never created without one)"
    from .trt import import_tensorrt

    try:
        import_tensorrt("the tensorrt backend", TRT_HINT)  # missing, libraries not loadable, or too old
    except EngineError as exc:
        return str(exc)
    return None


def variants(model: FGSL, work: Path, info: dict[str, Any]) -> list[Variant]:
    """Every variant this self-test knows, each openable or skipped with its reason."""
    from .export import export_engine_dir
    from .onnx_backend import OnnxEngine
    from .torch_backend import TorchEngine

    found = [reference_variant(model)]
    cuda = info["cuda"]
    found.append(Variant("torch", "fp32", "cuda", opener=(lambda: TorchEngine(model, device="cuda")) if cuda else None,
                         skip=None if cuda else "no CUDA device"))

    def onnx_variant(precision: str, fifm: str, device: str) -> Variant:
        def opener() -> Engine:
            folder = work / f"onnxruntime-{precision}-{fifm}"
            if not (folder / "manifest.json").exists():
                export_engine_dir(model, folder, fifm, precision=precision, trained=False)
            return OnnxEngine.from_dir(folder, device=device, allow_untrained=True)

        skip = onnxruntime_skip(device, info, fifm)
        if not skip and precision == "fp16":
            skip = missing_module(("onnxconverter_common",), "fp16 conversion", ONNX_HINT)
        return Variant("onnxruntime", precision, device, f"fifm {fifm}", None if skip else opener, skip)

    for device in ("cpu", "cuda"):
        found += [onnx_variant("fp32", "conv", device), onnx_variant("fp32", "dft", device),
                  onnx_variant("fp16", "conv", device)]
    found += tensorrt_variants(model, work, cuda)
    return found


def tensorrt_variants(model: FGSL, work: Path, cuda: bool) -> list[Variant]:
    """TensorRT fp32/fp16 (plugin FIFM) when a GPU and tensorrt exist (:func:`tensorrt_skip`);
    int8/fp8 always skipped here."""
    reason = tensorrt_skip(cuda)
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


# ---------------------------------------------------------------------- a built engine folder (--engine)
#: Manifest keys this check reads (``engines.export.export_engine_dir`` writes them all).
ENGINE_KEYS = ("config", "graphs", "precision", "fifm", "weights_sha256")


@dataclass(frozen=True)
class EngineFolder:
    """An engine folder whose files and weights digest were verified (:func:`check_engine_dir`)."""

    path: Path
    manifest: dict[str, Any]
    model: FGSL              #: the torch reference: the very weights the folder was built from
    reference: str           #: where those weights came from (a weights folder, or what network)
    verified: list[str]      #: the files whose size and SHA-256 matched the manifest


def _digest_line(got: str, want: str) -> str:
    return f"weights_sha256 {got[:12]}... vs {want[:12]}... in its manifest"


def _reference_weights(folder: Path, manifest: dict[str, Any], weights_dir: str | Path | None) -> tuple[FGSL, str]:
    """The torch model the folder was built from, proven by its digest (the manifest's
    ``weights_sha256``): ``weights_dir``, else the manifest's ``source`` folder, else the
    seed-0 network of the manifest's config (what ``engines.build --allow-untrained`` exports)."""
    from fgsl import weights

    from .export import config_of

    want = manifest["weights_sha256"]
    given = weights_dir is not None
    source = Path(weights_dir) if given else Path(manifest["source"]) if manifest.get("source") else None
    if source is not None and (given or source.is_dir()):
        model = weights.load(source, allow_untrained=True)  # a missing or broken folder: its one line
        got = weights.model_digest(model)
        if got != want and given:
            raise EngineError(f"{source}: not the weights {folder} was built from ({_digest_line(got, want)})")
        if got != want:
            raise EngineError(f"{source}: these weights changed since {folder} was built from them "
                              f"({_digest_line(got, want)}); rebuild it, or pass --weights with the ones it was built from")
        return model, str(source)
    model = build(config_of(manifest), seed=0)
    if weights.model_digest(model) == want:
        return model, f"untrained {model.cfg.name!r} network (seed 0)"
    raise EngineError(f"{folder}: the weights it was built from are not here to compare with (source: "
                      f"{manifest.get('source') or 'an in-memory model'}); pass --weights RUN_DIR")


def check_engine_dir(folder: str | Path, weights_dir: str | Path | None = None) -> EngineFolder:
    """Verify a built engine folder before running it: the manifest parses, every graph and
    TensorRT plan has the size and SHA-256 it records, every graph was exported from the
    weights it records, and those weights are at hand for the torch reference.

    A stale or tampered folder is one :class:`EngineError` line naming the file: a check of
    the folder must not run graphs that are not the ones the manifest describes.
    """
    from .export import MANIFEST, check_file, check_graph_metadata, config_of, read_manifest, read_metadata

    folder = Path(folder)
    if not folder.is_dir():
        raise EngineError(f"{folder}: no such engine folder")
    manifest = read_manifest(folder)  # it parses, and every graph has its recorded size and SHA-256
    missing = [key for key in ENGINE_KEYS if key not in manifest]
    if missing or not manifest["graphs"]:
        raise EngineError(f"{folder / MANIFEST}: incomplete engine manifest (no {', '.join(missing) or 'graphs'}); "
                          "rebuild it with `python -m engines.build`")
    cfg = config_of(manifest)  # an unreadable config is its own one line (ConfigError)
    verified = [entry["file"] for entry in manifest["graphs"].values()]
    for graph, entry in (manifest.get("plans") or {}).items():
        check_file(folder / entry["file"], entry, f"TensorRT engine {graph!r}")
        verified.append(entry["file"])
    for graph, entry in manifest["graphs"].items():
        meta = read_metadata(folder / entry["file"])
        check_graph_metadata(meta, folder / entry["file"], graph, fifm=manifest["fifm"],
                             precision=manifest["precision"], cfg=cfg)
        got = meta.get("fgsl.weights_sha256")
        if got != manifest["weights_sha256"]:
            raise EngineError(f"{folder / entry['file']}: exported from other weights than {MANIFEST} records "
                              f"({_digest_line(str(got), manifest['weights_sha256'])}); "
                              "rebuild it with `python -m engines.build`")
    model, reference = _reference_weights(folder, manifest, weights_dir)
    return EngineFolder(folder, manifest, model, reference, verified)


def threshold_note(checked: EngineFolder) -> str | None:
    """A line when the engine's score threshold is not its weights folder's. The weights digest
    covers tensors only, so ``fgsl.tune --write`` on the weights folder after the build leaves a
    verified engine deciding at the old threshold: not a failure (both are someone's choice),
    but the user should know which one ``--weights ENGINE`` runs with."""
    from .export import config_of

    built, reference = config_of(checked.manifest).score_threshold, checked.model.cfg.score_threshold
    if built == reference:
        return None
    return (f"{checked.path} decides at score threshold {built:g}, its weights {checked.reference} at {reference:g} "
            f"(tuned after the build?): the engine's own is used; rebuild it to decide at {reference:g}")


def engine_variants(folder: EngineFolder, info: dict[str, Any]) -> list[Variant]:
    """What of ``folder`` this machine can run, opened as ``engines.open`` opens it: its ONNX
    graphs on ONNX Runtime (CPU; CUDA where the provider is), its TensorRT plans where a GPU
    and tensorrt are; each skipped with its reason otherwise."""
    import engines

    precision, fifm = folder.manifest["precision"], folder.manifest["fifm"]

    def opener(backend: str, device: str) -> Callable[[], Engine]:
        return lambda: engines.open(folder.path, backend=backend, device=device, allow_untrained=True)

    found: list[Variant] = []
    for device in ("cpu", "cuda"):
        skip = onnxruntime_skip(device, info, fifm)
        found.append(Variant("onnxruntime", precision, device, f"fifm {fifm}",
                             None if skip else opener("onnxruntime", device), skip))
    if folder.manifest.get("plans"):
        skip = tensorrt_skip(info["cuda"])
        found.append(Variant("tensorrt", precision, "cuda", f"fifm {fifm}", None if skip else opener("tensorrt", "cuda"),
                             skip))
    return found


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


def run_variants(found: list[Variant], cfg: FGSLConfig, batches: list[int], repeats: int, max_seconds: float,
                 log: Callable[[str], None]) -> dict[str, Any]:
    """Check and time ``found`` in order; the first that runs (:func:`reference_variant`) is the
    reference. Returns ``{checks, timings, skipped}``: the random networks' and an engine folder's
    self-test compare and time the same way."""
    clips = random_clips(cfg, 2, seed=123)
    reference = None
    checks: list[dict[str, Any]] = []
    timings: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for variant in found:
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
    return {"checks": checks, "timings": timings, "skipped": skipped}


def _report(info: dict[str, Any], cfg: FGSLConfig, results: dict[str, Any], status: str | None = None) -> dict[str, Any]:
    """The report both modes print and return. ``status`` is ``passed``/``failed`` from the
    checks unless given (``skipped``: nothing ran, which is not a pass, so ``ok`` is False)."""
    ok = all(c["ok"] for c in results["checks"]) and status != "skipped"
    return {"device": info, "preset": cfg.name, "window": [cfg.window_frames, cfg.image_size, cfg.image_size],
            **results, "ok": ok, "status": status or ("passed" if ok else "failed")}


def selftest(preset_name: str, batches: list[int], repeats: int, max_seconds: float,
             log: Callable[[str], None]) -> dict[str, Any]:
    """Run every variant; returns the report (``checks`` with ``ok`` False mean failure)."""
    info = device_info()
    model = selftest_model(preset_name)
    with tempfile.TemporaryDirectory(prefix="fgsl-selftest-") as tmp:
        results = run_variants(variants(model, Path(tmp), info), model.cfg, batches, repeats, max_seconds, log)
    return _report(info, model.cfg, results)


def engine_selftest(folder: str | Path, weights_dir: str | Path | None, batches: list[int], repeats: int,
                    max_seconds: float, log: Callable[[str], None]) -> dict[str, Any]:
    """Check a built engine folder (:func:`check_engine_dir`), then run what of it this machine
    can against torch on the weights it was built from, as :func:`selftest` runs its variants.

    ``status`` is ``passed``, ``failed``, or ``skipped`` when no backend here can run the folder
    (a TensorRT folder without a GPU): then nothing is run, and ``ok`` is False.
    """
    info = device_info()
    checked = check_engine_dir(folder, weights_dir)
    manifest, model = checked.manifest, checked.model
    log(f"ok    {checked.path}: manifest, {len(checked.verified)} file digests and the weights digest "
        f"({checked.reference})")
    note = threshold_note(checked)
    found = engine_variants(checked, info)
    runnable = any(v.opener is not None for v in found)
    if runnable:
        results = run_variants([reference_variant(model), *found], model.cfg, batches, repeats, max_seconds, log)
    else:
        results = {"checks": [], "timings": [],
                   "skipped": [{"name": v.name, "reason": v.skip or "unavailable"} for v in found]}
    report = _report(info, model.cfg, results, None if runnable else "skipped")
    report["engine"] = {"folder": str(checked.path), "backend": manifest.get("backend"),
                        "precision": manifest["precision"], "fifm": manifest["fifm"],
                        "weights_sha256": manifest["weights_sha256"], "reference": checked.reference,
                        "verified": checked.verified, "notes": [note] if note else []}
    return report


def format_report(report: dict[str, Any]) -> str:
    d = report["device"]
    gpu = d.get("gpu") or d.get("note", "no GPU")
    e = report.get("engine")
    what = (f"of {e['folder']} ({e['backend']} {e['precision']}, fifm {e['fifm']}), " if e else "") + \
        f"preset {report['preset']} (window {report['window']})"
    lines = [f"FGSL engine self-test {what}, {d['cpu']} x{d['cpus']}, {gpu}"]
    if e:
        lines.append(f"verified: manifest, SHA-256 of {', '.join(e['verified'])}, weights {e['weights_sha256'][:12]}... "
                     f"({e['reference']})")
        lines += [f"note: {line}" for line in e.get("notes", [])]
    if report["checks"]:  # (none where nothing here runs the folder: the skipped list says why)
        lines += ["", "checks (max abs diff vs torch fp32 on CPU):"]
    for c in report["checks"]:
        value = "n/a" if c.get("max_abs_diff") is None else f"{c['max_abs_diff']:.2e}"
        bound = f" <= {c['tolerance']:g}" if "tolerance" in c else ""
        lines.append(f"  {'ok  ' if c['ok'] else 'FAIL'} {c['name']}: {value}{bound}" + (f" ({c['error']})" if c.get("error") else ""))
    if report["timings"]:
        lines += ["", "timings (infer):",
                  f"  {'variant':<44} {'batch':>5} {'p50 ms/win':>11} {'p95 ms/win':>11} {'windows/s':>10}"]
    for t in report["timings"]:
        lines.append(f"  {t['variant']:<44} {t['batch']:>5} {t['p50_ms']:>11.2f} {t['p95_ms']:>11.2f} {t['windows_per_s']:>10.1f}")
    if report["skipped"]:
        lines += ["", "skipped:"] + [f"  {s['name']}: {s['reason']}" for s in report["skipped"]]
    lines += ["", {"passed": "all checks passed", "failed": "SOME CHECKS FAILED",
                   "skipped": f"SKIPPED: no backend on this machine runs {(e or {}).get('folder')} (its files and "
                              "weights are verified; see skipped)"}[report["status"]]]
    return "\n".join(lines)


#: The largest batch ``--batches`` times. Its random input alone is batch x 3 x T x H x W float32
#: (2.5 GB at 256 windows of the realtime preset, 10 GB of the accurate one), the model's
#: activations several times that; the spotter and the engines run far smaller batches (infer's
#: ``--batch`` 4, the TensorRT profile's 32). Larger, a run measures the machine's memory, not
#: the engine, and ends in a MemoryError traceback or the kernel's OOM killer.
MAX_BATCH = 256


def _batches(text: str) -> list[int]:
    """``--batches``: comma-separated batch sizes from 1 to :data:`MAX_BATCH`, else one error line."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--batches must be comma-separated positive integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise UsageError(f"--batches must be comma-separated positive integers, got {text!r}")
    if max(values) > MAX_BATCH:
        raise UsageError(f"--batches: at most {MAX_BATCH} windows per call, got {max(values)}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m engines.selftest", description=__doc__.split("\n\n")[0],
                            formatter_class=HelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="network to check and time, with random weights (tiny: seconds; realtime: minutes on a "
                             "CPU; default realtime)")
    parser.add_argument("--engine", metavar="DIR",
                        help="check a folder built by engines.build instead: its manifest, file and weights digests, "
                             "and its engine against torch on the weights it was built from")
    parser.add_argument("--weights", metavar="RUN_DIR",
                        help="with --engine: the weights folder it was built from (default: the one its manifest names)")
    parser.add_argument("--batches", default="1,8,32", help=f"comma-separated batch sizes to time, 1 to {MAX_BATCH} (default: %(default)s)")
    parser.add_argument("--repeats", type=positive_int, default=10, help="timed calls per batch size")
    parser.add_argument("--max-seconds", type=positive_number, default=30.0,
                        help="stop timing a batch size after this long, in seconds (at least one call)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)

    def body(_: list[str] | None) -> int:
        batches = _batches(args.batches)
        if args.engine and args.preset:
            raise UsageError("--preset picks a random network; an --engine folder's manifest names its own preset")
        if args.weights and not args.engine:
            raise UsageError("--weights is the torch reference of an --engine folder; give --engine DIR too")

        def log(line: str) -> None:
            print(line, file=sys.stderr, flush=True)

        if args.engine:
            report = engine_selftest(args.engine, args.weights, batches, args.repeats, args.max_seconds, log)
        else:
            report = selftest(args.preset or "realtime", batches, args.repeats, args.max_seconds, log)
        print(format_report(report))
        if args.json:
            print(json.dumps(report))
        return EXIT_CODES[report["status"]]

    return run(body)


if __name__ == "__main__":
    quiet_exit(main())
