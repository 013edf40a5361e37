"""``python -m calib.report``: how far a quantised FGSL ONNX is from FP32, on real calibration windows.

Both models run with ONNX Runtime (CPU by default) on the same windows of a ``calib.collect``
file, and the report gives:

* **raw outputs**, per output tensor: max and mean absolute difference (``scores`` are logits;
  their sigmoid probabilities are compared too), and how often the top-scoring (point, class)
  of a window is the same;
* **decoded intervals** (:func:`fgsl.decode.decode`, the live spotter's and offline inference's
  decoding, at the FP32 model's own score threshold: its engine folder's ``manifest.json``
  when it lies in one (where ``fgsl.tune --write`` stores it), else the ``fgsl.config`` its
  export recorded, unless ``--threshold``; the calibration file's config only for a model without one): the fraction of windows
  whose intervals are identical (same count, labels, and onset/offset at whole model frames),
  and, matching each FP32 interval to the quantised interval of the same class with the
  highest temporal IoU, the mean IoU and the fraction matched at IoU >= 0.5;
* the time per window of each model on this machine (informative only: ONNX Runtime's CPU
  kernels are not TensorRT's).

For an ``encode_chunk`` model (input ``chunks``) only the raw comparison applies. The last
line with ``--json`` is one JSON object with all of it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from fgsl.startup import quiet_exit, startup_imports

# Importing torch and ONNX Runtime takes the first second or two: Ctrl-C then is no bug (fgsl.startup).
with startup_imports(__name__):
    import numpy as np

    from engines.base import read_onnx
    from engines.export import metadata_of
    from engines.onnx_backend import import_onnxruntime, session_options
    from engines.machine import usable_cpus
    from fgsl.cli import (ArgumentParser, HelpFormatter, UsageError, at_least, first_line, positive_int, run,
                          score_threshold)
    from fgsl.config import FGSLConfig
    from fgsl.decode import Interval, decode, temporal_iou

    from . import CalibError
    from .collect import load
    from .quantize import FP32_EXPORT, calibration_inputs, check_config, not_fp32, onnx_inputs, require_onnx


def _onnxruntime() -> Any:
    """ONNX Runtime, or one :class:`CalibError` line saying what to install."""
    return import_onnxruntime("calib.report", CalibError)


def check_providers(providers: list[str]) -> None:
    """Refuse providers this ONNX Runtime lacks, up front: it would otherwise log an error per
    session, fall back to the CPU and the report would name providers that never ran."""
    available = _onnxruntime().get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise UsageError(f"--providers: {', '.join(missing)} not available in this ONNX Runtime "
                         f"(available: {', '.join(available)})")


def model_config(onnx_path: str | Path, metadata: dict[str, str]) -> FGSLConfig | None:
    """The FGSL config of an FP32 ONNX (``metadata``: its ``metadata_props``), or ``None``: its
    ``score_threshold`` is the one chosen for these weights, not the calibration preset's default.

    In an engine folder the manifest is read first: ``fgsl.tune --write`` updates the
    threshold there (the graphs are hashed and stay as exported), so the ``fgsl.config``
    metadata inside the ONNX may hold the export-time threshold. Elsewhere the metadata is used.
    """
    from engines.export import MANIFEST, config_of, holds_engine_manifest, read_manifest

    folder = Path(onnx_path).parent
    if holds_engine_manifest(folder):  # (a web app's manifest.json beside the model is not an engine's)
        manifest = read_manifest(folder, verify=False)
        if any(Path(entry.get("file", "")).name == Path(onnx_path).name for entry in manifest.get("graphs", {}).values()):
            try:
                return config_of(manifest)
            except (KeyError, ValueError, TypeError) as exc:
                raise CalibError(f"{folder / MANIFEST}: its config is unreadable ({exc})") from None
    text = metadata.get("fgsl.config")
    try:
        return FGSLConfig.from_dict(json.loads(text), source=f"{onnx_path} (fgsl.config metadata)") if text else None
    except (ValueError, TypeError) as exc:
        raise CalibError(f"{onnx_path}: its fgsl.config metadata is unreadable ({exc})") from None


def check_same_weights(fp32: str | Path, quantized: str | Path, metadata: list[dict[str, str]]) -> None:
    """Refuse two models exported from different weights: their differences would be reported
    as quantisation error. Both carry ``fgsl.weights_sha256`` from ``engines.export`` (the
    quantisers keep ``metadata_props``; ``metadata``: the two models' own, in that order); a
    model without it is not checked."""
    digests = [meta.get("fgsl.weights_sha256") for meta in metadata]
    if None not in digests and digests[0] != digests[1]:
        raise CalibError(f"{quantized} was not made from {fp32}: they hold different weights (fgsl.weights_sha256 "
                         f"{digests[1][:12]}... vs {digests[0][:12]}...); quantise that FP32 model with calib.quantize")


def check_fp32_reference(fp32: str | Path, quantized: str | Path, models: list[Any]) -> None:
    """Refuse a ``--fp32`` model that is not FP32 (:func:`calib.quantize.not_fp32`): the report
    measures the quantised model's error against it, and with the two flags swapped it used to
    print a report with the roles reversed (its raw differences are symmetric) as if nothing
    were wrong. ``models``: the two models' :func:`read_onnx`, in flag order; when
    ``--quantized`` is the FP32 one, the line says the flags are swapped and gives them the
    right way round."""
    reason = not_fp32(models[0])
    if reason is None:
        return
    if not_fp32(models[1]) is None:
        raise CalibError(f"--fp32 {fp32} is {reason} and --quantized {quantized} is FP32: the two are swapped; "
                         f"give --fp32 {quantized} --quantized {fp32}")
    raise CalibError(f"--fp32 {fp32} is {reason}, not FP32: give {FP32_EXPORT} as --fp32")


def open_session(path: str | Path, providers: list[str], threads: int | None = None) -> Any:
    """An ONNX Runtime session with the engines' options (:func:`engines.onnx_backend.session_options`),
    or :class:`CalibError` naming the file and the reason."""
    ort = _onnxruntime()
    path = Path(path)
    if not path.is_file():
        raise CalibError(f"{path}: no such ONNX file")
    try:
        return ort.InferenceSession(str(path), session_options(threads or None), providers=providers)
    except Exception as exc:  # noqa: BLE001 (ORT raises its own exception types)
        raise CalibError(f"ONNX Runtime cannot run {path} with {', '.join(providers)}: {first_line(exc)}") from None


def run_session(session: Any, name: str, x: np.ndarray, batch: int) -> tuple[dict[str, np.ndarray], float]:
    """Outputs over all of ``x`` in batches, and the mean milliseconds per item."""
    names = [o.name for o in session.get_outputs()]
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    session.run(None, {name: x[:1]})  # warm-up (first-run allocations are not the model's time)
    start = time.perf_counter()
    for i in range(0, len(x), batch):
        for n, value in zip(names, session.run(None, {name: x[i:i + batch]})):
            parts[n].append(np.asarray(value, dtype=np.float32))
    ms = (time.perf_counter() - start) * 1000 / len(x)
    return {n: np.concatenate(v) for n, v in parts.items()}, ms


def _finite(value: Any) -> float | None:
    """``value`` as a float, or ``None`` where it is infinite or NaN: JSON has no Infinity or NaN
    (``json.dumps`` writes them, and every strict reader refuses the line)."""
    value = float(value)
    return value if np.isfinite(value) else None


def compare_raw(ref: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Per common output: max/mean absolute difference (and of sigmoid(scores)), and how many
    of the quantised model's values are not finite (an overflow); a difference that is not
    finite is ``None``."""
    out: dict[str, dict[str, Any]] = {}
    for name in ref:
        if name not in test:
            continue
        if ref[name].shape != test[name].shape:
            raise CalibError(f"output {name} differs in shape: {list(ref[name].shape)} vs {list(test[name].shape)}")
        out[name] = _differences(ref[name], test[name])
    if "scores" in ref and "scores" in test:
        with np.errstate(over="ignore", invalid="ignore"):
            p, q = (1 / (1 + np.exp(-a.astype(np.float64))) for a in (ref["scores"], test["scores"]))
        out["probabilities"] = _differences(p, q)
        b = len(ref["scores"])
        top_r = ref["scores"].reshape(b, -1).argmax(1)
        top_t = test["scores"].reshape(b, -1).argmax(1)
        out["scores"]["top1_agreement"] = float((top_r == top_t).mean())
    return out


def _differences(ref: np.ndarray, test: np.ndarray) -> dict[str, Any]:
    """Max and mean absolute difference of two outputs, the reference's largest magnitude and
    the count of the test's values that are not finite (:func:`_finite` for each number)."""
    with np.errstate(invalid="ignore"):
        diff = np.abs(ref.astype(np.float64) - test.astype(np.float64))
    return {"max_abs_diff": _finite(diff.max()), "mean_abs_diff": _finite(diff.mean()),
            "ref_abs_max": _finite(np.abs(ref).max()), "quantized_not_finite": int((~np.isfinite(test)).sum())}


def _tiou(a: Interval, b: Interval) -> float:
    """Temporal IoU of two decoded intervals (:func:`fgsl.decode.temporal_iou`, soft-NMS's; decoded
    intervals are never empty, so its guard against a zero union never applies)."""
    return float(temporal_iou(np.array([a.onset, a.offset]), np.array([[b.onset, b.offset]]))[0])


def _key(iv: Interval) -> tuple[int, int, int]:
    return (iv.label, int(np.floor(iv.onset + 0.5)), int(np.floor(iv.offset + 0.5)))


def compare_intervals(ref: list[list[Interval]], test: list[list[Interval]]) -> dict[str, Any]:
    """Decoded intervals of FP32 (``ref``) vs quantised (``test``), window by window."""
    identical = 0
    ious: list[float] = []
    unmatched_test = 0
    for r, t in zip(ref, test):
        identical += sorted(map(_key, r)) == sorted(map(_key, t))
        free = list(t)
        for iv in sorted(r, key=lambda i: -i.score):
            best, best_iou = None, 0.0
            for cand in free:
                if cand.label == iv.label and (iou := _tiou(iv, cand)) > best_iou:
                    best, best_iou = cand, iou
            if best is not None:
                free.remove(best)
            ious.append(best_iou)
        unmatched_test += len(free)
    n_ref, n_test = sum(len(r) for r in ref), sum(len(t) for t in test)
    return {
        "windows": len(ref),
        # None when neither model gives any interval: nothing was compared (two broken models agree too)
        "windows_identical": identical / len(ref) if ref and (n_ref or n_test) else None,
        "fp32_intervals": n_ref,
        "quantized_intervals": n_test,
        "mean_iou": float(np.mean(ious)) if ious else None,
        "matched_at_0.5": float(np.mean([i >= 0.5 for i in ious])) if ious else None,
        "quantized_unmatched": unmatched_test,
    }


def report(fp32: str | Path, quantized: str | Path, data_path: str | Path, *, count: int | None = None,
           batch: int = 4, threshold: float | None = None, providers: list[str] | None = None,
           threads: int | None = None, cfg: FGSLConfig | None = None) -> dict[str, Any]:
    """Run both models on the calibration windows and compare (see the module docstring)."""
    providers = providers or ["CPUExecutionProvider"]
    if batch < 1:
        raise UsageError("--batch must be at least 1")
    require_onnx("calib.report")
    check_providers(providers)
    if Path(fp32).is_dir() and (Path(fp32) / "model.onnx").is_file():  # an engine folder: its whole-model graph
        fp32 = Path(fp32) / "model.onnx"
    for path in (fp32, quantized):
        if not Path(path).is_file():
            raise CalibError(f"{path}: no such ONNX file")
    data = load(data_path)
    graphs = [(path, read_onnx(path, CalibError)) for path in (fp32, quantized)]  # each read once for the checks
    check_fp32_reference(fp32, quantized, [model for _, model in graphs])
    names, q_names = (onnx_inputs(model) for _, model in graphs)
    if names != q_names:
        raise CalibError(f"the models take different inputs: {names} vs {q_names}")
    for path, model in graphs:
        check_config(model, path, data, names)  # windows of another preset: one line, not ORT's InvalidArgument
    metadata = [metadata_of(model) for _, model in graphs]
    del graphs  # ONNX Runtime reads the files itself: do not hold these copies while it runs
    check_same_weights(fp32, quantized, metadata)
    cfg = cfg or model_config(fp32, metadata[0]) or data.cfg
    x = calibration_inputs(names, data, count)[names[0]]
    ref_session = open_session(fp32, providers, threads)
    test_session = open_session(quantized, providers, threads)
    ref, ref_ms = run_session(ref_session, names[0], x, batch)
    test, test_ms = run_session(test_session, names[0], x, batch)
    result: dict[str, Any] = {
        "fp32": str(fp32), "quantized": str(quantized), "data": str(data_path), "input": names[0],
        "items": int(len(x)), "preset": cfg.name, "providers": providers,
        "raw": compare_raw(ref, test),
        "ms_per_item": {"fp32": round(ref_ms, 2), "quantized": round(test_ms, 2)},
    }
    if {"scores", "offsets"} <= set(ref) and {"scores", "offsets"} <= set(test):
        thr = cfg.score_threshold if threshold is None else float(threshold)
        result["threshold"] = thr
        result["intervals"] = compare_intervals(decode(ref, cfg, threshold=thr), decode(test, cfg, threshold=thr))
    return result


def _fmt(value: Any) -> str:
    """A number for the readable report; ``n/a`` for none (not finite, or nothing compared)."""
    return "n/a" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))


def print_report(r: dict[str, Any]) -> None:
    print(f"{r['quantized']} vs {r['fp32']} on {r['items']} {r['input']} from {r['data']} "
          f"(preset {r['preset']!r}, {', '.join(r['providers'])})")
    for name, d in r["raw"].items():
        extra = f", top-1 (point, class) agreement {d['top1_agreement']:.3f}" if "top1_agreement" in d else ""
        print(f"  {name:>13}: max |diff| {_fmt(d['max_abs_diff'])}, mean |diff| {_fmt(d['mean_abs_diff'])} "
              f"(fp32 max |value| {_fmt(d['ref_abs_max'])}){extra}")
        if d["quantized_not_finite"]:
            print(f"  {'':>13}  the quantized {name} are not finite: {d['quantized_not_finite']} inf/NaN values "
                  "(an overflow: the quantized model is broken)")
    if "intervals" in r:
        iv = r["intervals"]
        print(f"  intervals at score >= {r['threshold']:g}: {iv['fp32_intervals']} fp32, {iv['quantized_intervals']} "
              f"quantized; windows identical {_fmt(iv['windows_identical'])}, mean IoU {_fmt(iv['mean_iou'])}, "
              f"matched at IoU>=0.5 {_fmt(iv['matched_at_0.5'])}, unmatched quantized {iv['quantized_unmatched']}")
        if not iv["fp32_intervals"]:
            print("  (no FP32 interval reaches the threshold: lower it with --threshold to compare intervals)")
    ms = r["ms_per_item"]
    print(f"  time per item on this machine: fp32 {ms['fp32']} ms, quantized {ms['quantized']} ms")


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m calib.report",
                       description="Compare a quantised FGSL ONNX with FP32 (ONNX Runtime) on calibration windows.",
                       formatter_class=HelpFormatter)
    p.add_argument("--fp32", required=True, help="the FP32 ONNX model, or the engine folder holding it (model.onnx)")
    p.add_argument("--quantized", required=True, help="the quantised ONNX model (calib.quantize)")
    p.add_argument("--data", required=True, help="calibration windows (calib.collect .npz)")
    p.add_argument("--count", type=positive_int, help="use only the first N windows")
    p.add_argument("--batch", type=positive_int, default=4, help="windows per run")
    p.add_argument("--threshold", type=score_threshold,
                   help="decoding score threshold, in [0, 1) (default: the FP32 model's score_threshold)")
    p.add_argument("--providers", default="CPUExecutionProvider", help="ONNX Runtime providers, comma-separated")
    cpus = usable_cpus() or 1  # (more threads than CPUs: 300 on 2 cores ran for minutes instead of seconds)
    p.add_argument("--threads", type=at_least(1, most=cpus), help=f"ONNX Runtime intra-op threads (1-{cpus}: this "
                   "machine's usable CPUs)")
    p.add_argument("--json", action="store_true", help="end with one JSON line")
    args = p.parse_args(argv)

    def body(_: list[str] | None) -> int:
        r = report(args.fp32, args.quantized, args.data, count=args.count, batch=args.batch, threshold=args.threshold,
                   providers=[s.strip() for s in args.providers.split(",") if s.strip()], threads=args.threads)
        print_report(r)
        if args.json:
            print(json.dumps(r, allow_nan=False))  # (compare_raw leaves no inf or NaN: strict JSON)
        sys.stdout.flush()
        return 0

    return run(body)


if __name__ == "__main__":
    quiet_exit(main())
