"""``python -m engines.build``: compile FGSL into an engine folder for ONNX Runtime or TensorRT.

    python -m engines.build --weights RUN_DIR --backend onnxruntime --precision fp32 --out DIR
    python -m engines.build --allow-untrained --preset realtime --backend onnxruntime --out DIR

The folder gets ``model.onnx``, ``encode_chunk.onnx``, ``decode_window.onnx`` and a
``manifest.json`` (config, FIFM form, opset, weights digest, SHA-256 of every file) that
``engines.open(DIR)`` reads. An ONNX Runtime build is verified before it is declared done:
torch and ONNX Runtime run the same random clips and the streaming path, and an fp32 build
whose outputs differ by more than 1e-4 is refused. ``--precision fp16`` converts the graphs
to FP16 with float32 inputs/outputs (onnxconverter-common). TensorRT builds hand each ONNX
graph to ``engines.trt.build_engine`` (imported only then; strongly typed, so an fp16 engine
comes from the fp16 ONNX) and write ``<graph>.engine`` beside it. INT8/FP8 engines need
calibration data: ``python -m calib.collect`` then ``python -m calib.quantize``; this command
refuses them and says so.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import stat
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from fgsl.startup import quiet_exit, startup_imports

# Importing torch takes the first second or two: Ctrl-C then is no bug (fgsl.startup).
with startup_imports(__name__):
    import numpy as np

    from fgsl.cli import ArgumentParser, HelpFormatter, UsageError, positive_int, refuse_preset_with_weights, run
    from fgsl.config import DEFAULT_PRESET, PRESETS
    from fgsl.files import DIR_MODE, name_cut_for

    from . import tensorrt_backend
    from .base import GRAPHS, PRECISIONS, EngineError, stream_infer
    from .cache import sha256_file
    from .export import (DEFAULT_OPSET, FIFM_FORMS, MANIFEST, MAX_OPSET, MIN_OPSET, export_engine_dir, folder_files,
                         holds_engine_manifest, load_source, read_manifest, write_manifest)
    from .extras import ONNX_HINT, TRITON_HINT, require
    from .selftest import TOLERANCE
    from .triton import MODULES as TRITON_MODULES


def check_args(args: argparse.Namespace) -> None:
    """Refuse flag combinations that cannot work before minutes of export, not after."""
    refuse_quantized(args.precision)
    refuse_preset_with_weights(args.weights, args.preset)
    if not args.weights and not args.allow_untrained:
        raise UsageError("give --weights RUN_DIR (trained FGSL), or --preset P --allow-untrained for a benchmark engine")
    if args.backend == "onnxruntime" and args.fifm == "plugin":
        raise UsageError("--fifm plugin is a TensorRT custom op that ONNX Runtime cannot run; use conv or dft")
    if args.triton_repo and args.fifm == "plugin":
        # engines.triton.write_repository refuses these graphs too, but only after the export.
        raise UsageError("--triton-repo serves the ONNX graphs with Triton's ONNX Runtime backend, which cannot run "
                         "--fifm plugin; use conv or dft")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file: pass a folder for the engine")
    refuse_working_directory(out)
    held = [name for name in ("model.safetensors", "config.json", "checkpoint.safetensors") if (out / name).exists()]
    if held:
        # Its manifest.json would make every tool take the run folder for an engine folder.
        raise UsageError(f"--out {out} holds a weights folder ({', '.join(held)}): write the engine to a folder of its own")
    left = [p.name for p in out.iterdir()] if out.is_dir() else []
    # A manifest.json that is not an engine's (a web app's) is the user's file: a rebuild would replace it.
    if not holds_engine_manifest(out) and any(not is_engine_file(n) or n == MANIFEST for n in left):
        raise UsageError(f"--out {out} holds other files and is not an engine folder: pass a new or empty folder, "
                         "or an engine folder to rebuild")
    if args.triton_repo:
        check_triton_repo(Path(args.triton_repo), out, args.weights)
    needed = ("onnx", "onnxruntime") if args.backend == "onnxruntime" and not args.no_verify else ("onnx",)
    require(needed, "engines.build", ONNX_HINT, UsageError)
    if args.triton_repo:
        # The repository's configs are parsed back with Triton's proto after the export
        # (engines.triton.read_config): without it the build would fail only at its very end.
        require(TRITON_MODULES, "engines.build --triton-repo", TRITON_HINT, UsageError)


def refuse_working_directory(out: Path) -> None:
    """Refuse an ``--out`` that is the current directory or holds it: :func:`install` swaps the
    folder by renaming, which would leave the caller's shell in a deleted directory."""
    try:
        here = Path(os.getcwd())
    except OSError:  # the working directory is already gone: nothing to protect
        return
    if here.is_relative_to(os.path.realpath(out)):
        raise UsageError(f"--out {out} is the current directory or holds it: a build replaces the folder as a "
                         "whole; run it from elsewhere, or write the engine to another folder")


def is_engine_file(name: str) -> bool:
    """Whether a file name in an engine folder is the engine's own: its manifest, a graph, a
    TensorRT plan, or what an older build that failed or was killed left of one (graphs, and
    the temporary files ``fgsl.files.atomic_output`` names ``.<file>.<random>.tmp``). A rebuild
    replaces these; any other file in the folder is the user's and is kept (:func:`install`)."""
    ours = {MANIFEST} | {f"{graph}.{ext}" for graph in GRAPHS for ext in ("onnx", "engine")}
    return name in ours or (name.startswith(tuple(f".{n}." for n in ours)) and name.endswith(".tmp"))


def check_triton_repo(repo: Path, out: Path, weights_dir: str | None) -> None:
    """Refuse a ``--triton-repo`` the build cannot write, before minutes of export: a file, a
    folder inside the engine folder (which a rebuild replaces as a whole) or inside the weights
    folder, or a folder that is itself a weights or engine folder (its model folders would be
    mixed into the run's files)."""
    if repo.exists() and not repo.is_dir():
        raise UsageError(f"--triton-repo {repo} is a file: pass a folder for the Triton model repository")
    where = repo.resolve()
    for flag, folder in (("--out", out), ("--weights", weights_dir)):
        if folder is not None and where.is_relative_to(Path(folder).resolve()):
            raise UsageError(f"--triton-repo {repo} is inside {flag} {folder}: write the Triton model repository "
                             "to a folder of its own")
    held = [path.name for path in folder_files(repo) if path.exists()]
    if held:
        raise UsageError(f"--triton-repo {repo} holds a weights or engine folder ({', '.join(held)}): write the "
                         "Triton model repository to a folder of its own")


#: What a staging folder's name adds to ``out``'s: the dot, ``.build-``, mkdtemp's 8 characters, ``.old``.
STAGING_ADDS = 1 + len(".build-") + 8 + len(".old")


def staging_stem(out: Path) -> str:
    """``out``'s name as its staging folders carry it: cut to fit a file name's 255 bytes."""
    return name_cut_for(out.name, STAGING_ADDS)


def staging_folder(out: Path) -> Path:
    """A new hidden sibling of ``out`` to build into: on the same file system, so that
    :func:`install` moves the finished engine into place by renaming, never by copying (beside
    the folder a link names, for a link)."""
    given, out = out, Path(os.path.realpath(out))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{staging_stem(out)}.build-", dir=out.parent))
    except OSError as exc:  # mkdtemp names its random folder, which means nothing to the user
        raise OSError(exc.errno, exc.strerror, str(given)) from None
    os.chmod(staging, DIR_MODE)  # mkdtemp's 0700 would lock out a server running as another user
    return staging


def naming_out(exc: EngineError | OSError, staging: Path, out: Path) -> Exception:
    """``exc`` (an :class:`EngineError` or :class:`OSError`) with the hidden staging folder in
    its message replaced by ``out``: the user never sees the staging folder, which is gone."""
    def named(text: Any) -> Any:
        return None if text is None else str(text).replace(str(staging), str(out))

    if isinstance(exc, OSError):
        return OSError(exc.errno, exc.strerror, named(exc.filename), None, named(exc.filename2)) if exc.strerror else exc
    return EngineError(named(str(exc)))


def leftovers(out: Path, staging: Path) -> list[str]:
    """What builds of ``out`` killed outright (SIGKILL, power loss) left beside it, one
    description each, for a warning.

    Only told, never deleted: a build of the same folder still running in another process has a
    staging folder of the same shape (no lock tells them apart on every file system, NFS
    included), and a ``.old`` folder left by a build killed during its swap holds the previous
    engine with the user's files that were not moved yet. Matched exactly: the name
    :func:`staging_folder` gives (``tempfile.mkdtemp``'s 8 characters), so no other folder
    beside it (another engine's, the user's) is ever named."""
    pattern = re.compile(rf"\.{re.escape(staging_stem(out))}\.build-[a-z0-9_]{{8}}(\.old)?")
    found = []
    for path in sorted(out.parent.iterdir()):
        match = pattern.fullmatch(path.name)
        if not match or path == staging or not path.is_dir() or path.is_symlink():
            continue
        if match.group(1):
            found.append(f"{path}: the previous {out.name}, set aside by a build killed while swapping in "
                         "the new one (your own files in it were not moved yet); move out what you need, then "
                         "delete it")
        else:
            found.append(f"{path}: an unfinished build of {out.name} (killed, or still running in another "
                         "process); delete it once no build of it is running")
    return found


def install(staging: Path, out: Path) -> None:
    """Put the verified engine in ``staging`` where ``out`` is, keeping the user's files.

    Until here ``out`` is untouched, so a build that fails its check, or is interrupted, leaves
    the engine that was there as it was. A rebuild swaps folders by two renames (the old
    folder is set aside first and put back if the second rename fails), then moves every file
    of the old folder that is not the engine's (:func:`is_engine_file`: notes, calibration
    data, a quantised model written beside the graphs) into the new one; the old graphs,
    plans and manifest are dropped with the set-aside folder.
    """
    out = Path(os.path.realpath(out))  # a link to the folder: replace the folder it names
    if not out.exists():
        os.rename(staging, out)
        return
    old = out.with_name(staging.name + ".old")
    os.chmod(staging, stat.S_IMODE(out.stat().st_mode))  # a rebuild keeps the folder's permissions
    os.rename(out, old)
    try:
        os.rename(staging, out)
    except BaseException:
        os.rename(old, out)
        raise
    for path in old.iterdir():
        if not is_engine_file(path.name):
            os.rename(path, out / path.name)
    shutil.rmtree(old)


def refuse_quantized(precision: str) -> None:
    """int8/fp8 are not this command's: they need calibration data, and say where to go."""
    if precision in ("int8", "fp8"):
        raise UsageError(
            f"{precision} engines are built from a calibrated Q/DQ ONNX model: collect data with "
            "`python -m calib.collect --videos ... --out calib.npz`, then `python -m calib.quantize --onnx "
            f"DIR/model.onnx --data calib.npz --mode {precision} --out q.onnx`; engines.build makes fp32/fp16 only")


def verify(model: Any, folder: Path, precision: str, batch: int = 2) -> dict[str, float]:
    """Torch vs the built ONNX Runtime engine on random clips (whole model and streaming path).

    Returns the max abs differences; an fp32 build beyond the self-test's fp32 bound
    (``engines.selftest.TOLERANCE["fp32"]``, the issue's 1e-4) raises.
    """
    from .onnx_backend import OnnxEngine
    from .selftest import random_clips
    from .torch_backend import TorchEngine

    cfg = model.cfg
    clips = random_clips(cfg, batch)
    ref = TorchEngine(model).infer(clips)
    engine = OnnxEngine.from_dir(folder, allow_untrained=True)
    whole = engine.infer(clips)
    streamed = stream_infer(engine, clips)
    diffs = {f"{path}.{k}": float(np.abs(out[k] - ref[k]).max()) for path, out in (("model", whole), ("stream", streamed))
             for k in ("scores", "offsets")}
    worst, bound = max(diffs.values()), TOLERANCE["fp32"]
    if precision == "fp32" and not worst <= bound:
        raise EngineError(f"{folder}: the exported engine disagrees with torch (max abs diff {worst:.3g} > "
                          f"{bound:g}); not using it")
    return diffs


def build_tensorrt(folder: Path, precision: str, device: str = "cuda") -> dict[str, Any]:
    """One TensorRT engine per ONNX graph of ``folder`` (``<graph>.engine``, by
    ``engines.trt.build_engine``), recorded with their SHA-256 under ``plans`` in the manifest."""
    trt = tensorrt_backend(device)
    manifest = read_manifest(folder)
    plans: dict[str, Any] = {}
    for graph, entry in manifest["graphs"].items():
        plan = folder / f"{graph}.engine"
        info = trt.build_engine(folder / entry["file"], plan, precision=precision, device=device)
        plans[graph] = {"file": plan.name, "sha256": sha256_file(plan), "bytes": plan.stat().st_size,
                        "tensorrt": info.get("tensorrt"), "gpu": info.get("gpu")}
    manifest["plans"] = plans
    write_manifest(folder, manifest)
    return manifest


def build_into(staging: Path, out: Path, source: Any, args: argparse.Namespace) -> None:
    """Export, verify (or compile for TensorRT) and write the Triton repository from
    ``staging``; the messages name ``out``, where the engine goes once all of it succeeded."""
    model = source.model
    export_engine_dir(source, staging, args.fifm, args.opset, precision=args.precision, backend=args.backend)
    print(f"exported {', '.join(GRAPHS)} ({model.cfg.name}, fifm {args.fifm}, opset {args.opset}, {args.precision}) "
          f"from {source.origin} to {out}", file=sys.stderr)
    if args.backend == "onnxruntime":
        if args.no_verify:
            print("not verified (--no-verify)", file=sys.stderr)
        else:
            diffs = verify(model, staging, args.precision)
            print("torch vs onnxruntime, max abs diff: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()),
                  file=sys.stderr)
    else:
        build_tensorrt(staging, args.precision)
    if args.triton_repo:
        from .triton import read_config, write_repository

        configs = write_repository(staging, args.triton_repo, max_batch=args.triton_max_batch)
        for config in configs:
            read_config(config)  # parse it back with Triton's own proto
        print(f"Triton model repository: {args.triton_repo} ({', '.join(c.parent.name for c in configs)})",
              file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m engines.build", description=__doc__.split("\n\n")[0],
                            formatter_class=HelpFormatter)
    parser.add_argument("--weights", help="weights folder (model.safetensors + config.json)")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help=f"with --allow-untrained and no --weights (default: {DEFAULT_PRESET})")
    parser.add_argument("--allow-untrained", action="store_true", help="accept random weights (benchmarks only)")
    parser.add_argument("--backend", required=True, choices=("onnxruntime", "tensorrt"),
                        help="onnxruntime: ONNX graphs, verified against torch; tensorrt: also a TensorRT engine per graph")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="fp32 or fp16 here; int8/fp8 come from calib.collect + calib.quantize")
    parser.add_argument("--fifm", choices=FIFM_FORMS, default="conv",
                        help="FIFM export form: conv (portable, default), dft (ONNX DFT ops), plugin (TensorRT only)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset {MIN_OPSET}-{MAX_OPSET} (default {DEFAULT_OPSET})")
    parser.add_argument("--out", required=True, help="engine folder to write")
    parser.add_argument("--no-verify", action="store_true", help="skip the torch vs ONNX Runtime check")
    parser.add_argument("--triton-repo", metavar="DIR",
                        help="also write a Triton Inference Server model repository of the ONNX graphs here")
    parser.add_argument("--triton-max-batch", type=positive_int, default=32, help="Triton max_batch_size (default 32)")
    args = parser.parse_args(argv)

    def body(_: list[str] | None) -> int:
        check_args(args)
        if args.backend == "tensorrt":
            tensorrt_backend("cuda")  # a missing TensorRT or GPU fails before minutes of export
        source = load_source(args.weights, allow_untrained=args.allow_untrained, preset_name=args.preset)
        out = Path(args.out)
        # Everything is built and checked in a hidden sibling folder; --out changes only at the
        # end (install), so a failed or interrupted rebuild leaves the engine that was there.
        staging = staging_folder(out)
        for line in leftovers(Path(os.path.realpath(out)), staging):
            warnings.warn(line)
        try:
            build_into(staging, out, source, args)
            install(staging, out)
        except (EngineError, OSError) as exc:  # name the user's folder, not the hidden one
            raise naming_out(exc, staging, out) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        print(out)
        return 0

    return run(body)


if __name__ == "__main__":
    quiet_exit(main())
