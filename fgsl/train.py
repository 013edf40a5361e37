"""``python -m fgsl.train --preset P --data SPEC --out RUN_DIR``: train FGSL, one GPU to many.

The same command runs under ``torchrun --nproc-per-node N -m fgsl.train ...`` (DDP:
gloo on CPU, NCCL on CUDA; each rank reads a different shard of the epoch's windows,
rank 0 alone logs, evaluates and saves).

What one run does
-----------------
* **Data** (:mod:`fgsl.data.spec`): videos loaded once at the model's size and fps.
* **Windows, positive-aware**: every epoch, for each training event two windows that
  contain it whole (at random positions), plus one background window per quarter window of
  video (random jitter); no window cuts an event; shuffled with the epoch's seed and dealt
  out to the ranks by a ``DistributedSampler`` (:func:`rank_windows`).
  Random horizontal flip, shifts of up to 2 pixels and brightness, drawn from a generator of
  the seed, the epoch and the rank (:func:`epoch_rng`), which also seeds torch for the epoch.
* **Targets** (:func:`fgsl.losses.assign_targets`): events wholly inside the window.
* **Optimisation**: AdamW on the trainable parameters (IGA, neck, FIFM, heads; plus the
  encoder when it is trained from scratch), linear warm-up then cosine decay per step
  (a ``LambdaLR`` of :func:`lr_factor`),
  gradient accumulation (``--accum``), gradient clipping at 1.0, mixed precision on CUDA
  (bf16 where supported, else fp16 with a gradient scaler), and an EMA of the weights
  (``--ema``; the EMA weights are what is evaluated and saved).
* **Backbone**: ``--backbone FILE`` loads converted VideoMAE V2 weights
  (``python -m fgsl.convert_backbone``) and keeps them frozen. Without one there is nothing
  to keep frozen, so the encoder trains from scratch (and the run says so); the ``tiny``
  preset is meant for exactly that.
* **Every epoch** (``--eval-every``): the *validation* videos (``--val``; synthetic data: a
  set made from the part of each source between the training and the test part; annotated
  data: a training subject) go through the same windowing, decoding and merging as ``fgsl.infer``
  at every candidate score threshold and are scored with the MEGC STR metric
  (:func:`fgsl.tune.sweep`); the best threshold is that epoch's, and the epoch with the best
  validation spotting F1 (then STRS) is saved as ``RUN_DIR/model.safetensors`` +
  ``config.json`` with its threshold as ``score_threshold``, so ``RUN_DIR`` is a weights
  folder for ``fgsl.infer`` and ``engines.open``. A line goes to ``RUN_DIR/metrics.jsonl``;
  the full training state is checkpointed to ``RUN_DIR/checkpoint.safetensors`` (``--resume``
  continues from it as the unbroken run would have gone on, on the CPU to the bit, with the same
  flags and processes: see :func:`_restore`; without ``--resume`` a folder holding a run is refused,
  :func:`open_run`). ``--checkpoint-every N`` also checkpoints every N optimiser steps within
  an epoch, with where each rank is in it (:func:`_position`), and ``--resume`` goes on from
  there just as exactly.
  Without validation (``--val none``) the last epoch is saved with the preset's threshold.
* **At the end**: the saved weights are scored once on the held-out test videos (the line
  with ``"final": true`` in ``metrics.jsonl``); the test set chooses nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from fgsl.startup import quiet_exit, startup_imports

# Importing torch and OpenCV takes the first second or two: Ctrl-C then is no bug (fgsl.startup).
with startup_imports(__name__):
    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.optim.lr_scheduler import LambdaLR
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    from torch.utils.data import DistributedSampler
    from tqdm import tqdm

    from fgsl import tune, weights
    from fgsl.checkpoint import CheckpointStateError, load_state, save_state
    from fgsl.cli import (ArgumentParser, HelpFormatter, UsageError, at_least, non_negative_number, number_between, positive_int,
                          positive_number, register_user_error, run)
    from fgsl.config import PRESETS, FGSLConfig, preset
    from fgsl.data import spec as data_spec
    from fgsl.data.aligned import ALIGNED
    from fgsl.data.synthetic import MAX_FRAMES, Recipe, make_set
    from fgsl.data.table import Annotation
    from fgsl.data.video import CROPS, normalise, pad_frames
    from fgsl.files import atomic_write
    from fgsl.infer import spot_frames, to_detections
    from fgsl.losses import FGSLLoss, assign_targets
    from fgsl.messages import first_line
    from fgsl.model import FGSL
    from realtime.types import RealtimeError  # (light: no MediaPipe)


class TrainingDiverged(RuntimeError):
    """The weights stopped being numbers (too high a learning rate): nothing is saved."""


# RealtimeError: --align-faces with a MediaPipe that cannot start (not installed, no libEGL).
register_user_error(data_spec.DataSpecError, CheckpointStateError, RealtimeError, TrainingDiverged)
#: ``--seed`` up to what every generator it seeds takes (torch, numpy).
MAX_SEED = 2**32 - 1

CHECKPOINT = weights.CHECKPOINT_FILE
METRICS = "metrics.jsonl"
RANKS = "ranks.json"


# ---------------------------------------------------------------------------- distributed
#: What the work :meth:`Dist.main_first` runs returns.
T = TypeVar("T")
#: Rendezvous-store counters of :meth:`Dist.main_first`: rank 0's state (0 working, 1 done,
#: -1 failed) and the ranks done.
MAIN_FIRST, MAIN_FIRST_DONE = "fgsl_main_first", "fgsl_main_first_done"


class RankStopped(RuntimeError):
    """A rank stops because another failed (which said why)."""


register_user_error(RankStopped)  # one line: the failing rank's own error says what went wrong


class Dist:
    """Rank/world/device of this process; a no-op when not launched by torchrun."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available()
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", self.local + 1))
        gpus = torch.cuda.device_count() if cuda else 0
        if cuda and local_world > gpus:
            # A rank past the last GPU failed set_device with CUDA's "invalid device ordinal" (a
            # traceback) while the others waited for it: every rank refuses, before CUDA.
            raise UsageError(f"torchrun started {local_world} processes on this "
                             f"machine and it has {gpus} visible CUDA device(s): one process per GPU (--nproc-per-node "
                             f"{gpus}), or none visible (CUDA_VISIBLE_DEVICES=) to train on the CPU")
        self.device = torch.device(f"cuda:{self.local}" if cuda else "cpu")
        if cuda:
            torch.cuda.set_device(self.device)
        if self.world > 1:
            dist.init_process_group("nccl" if cuda else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def main_first(self, work: Callable[[], T]) -> T:
        """``work()`` on rank 0, then on the other ranks once rank 0 has done it, and back
        when every rank has: for work that leaves on disk what makes it fast the second time
        (the aligned-crop cache, :mod:`fgsl.data.crop_cache`), so that it is done once, not
        once per rank at the same time.

        The ranks wait by polling the rendezvous store, not at a barrier, whose timeout (30
        minutes with gloo, 10 with NCCL) reading a data set may pass: rank 0 while it aligns,
        and every rank while the others finish (they align again where the cache could not be
        written: a read-only or full folder, or one per machine). A rank 0 that fails tells
        the others, which stop with one line instead of waiting."""
        if self.world == 1:
            return work()
        store = dist.distributed_c10d._get_default_store()
        if self.main:
            try:
                result = work()
            except BaseException:
                store.add(MAIN_FIRST, -1)
                raise
            store.add(MAIN_FIRST, 1)
        else:
            while (state := store.add(MAIN_FIRST, 0)) == 0:
                time.sleep(0.5)
            if state < 0:
                raise RankStopped(f"rank {self.rank}: rank 0 failed (its error is above); stopping")
            result = work()
        store.add(MAIN_FIRST_DONE, 1)
        while store.add(MAIN_FIRST_DONE, 0) < self.world:
            time.sleep(0.5)
        return result

    def close(self) -> None:
        """Tear the process group down, and leave only once every rank has (at most 10 s of
        waiting, for a rank that failed): a rank that exited while another was still closing
        its gloo connections aborted that one after a finished run ("terminate called without
        an active exception", SIGABRT, torchrun's exit status an error; seen in CI). The
        rendezvous store outlives the group, so it counts who is done."""
        if self.world > 1 and dist.is_initialized():
            store = dist.distributed_c10d._get_default_store()
            dist.destroy_process_group()
            store.add("fgsl_closed", 1)
            deadline = time.monotonic() + 10
            while store.add("fgsl_closed", 0) < self.world and time.monotonic() < deadline:
                time.sleep(0.01)


# ---------------------------------------------------------------------------- data
def prepare_data(cfg: FGSLConfig, args: argparse.Namespace, out: Path, env: Dist) -> data_spec.TrainData:
    kind, value = data_spec.parse(args.data)
    if args.micro_sheet and kind != "samm":
        raise UsageError(f"--micro-sheet is SAMM's micro-expression sheet: it applies to --data samm=FILE, not {kind}")
    if kind != "synthetic":
        root = Path(args.video_root) if args.video_root else None
        sheet = Path(args.micro_sheet) if args.micro_sheet else None
        if kind == "samm" and sheet is None:
            from fgsl.data.datasets import find_samm_micro_sheet

            sheet = find_samm_micro_sheet(value)  # (several candidates: an error listing them)
            if env.main:
                print(f"micro-expression sheet (emotions): {sheet} (found beside {value}; --micro-sheet to choose)",
                      file=sys.stderr)

        def read() -> data_spec.TrainData:
            with warnings.catch_warnings():
                if not env.main:
                    warnings.simplefilter("ignore")  # rank 0 says what reading the videos finds
                return data_spec.load_annotated(cfg, kind, Path(value), root, args.split, args.skip_bad_rows, args.val,
                                                sheet, aligned=args.align_faces, progress=env.main and not args.quiet)

        # Aligned crops: rank 0 aligns each video once, into the crop cache, and the other
        # ranks then read its entries. Centre crops are not cached: every rank decodes them.
        return env.main_first(read) if args.align_faces else read()
    if args.split:
        raise UsageError("--split does not apply to synthetic data (held-out videos come from unseen parts of each source)")
    if args.video_root:  # (it was ignored without a word)
        raise UsageError("--video-root is where annotated data's videos are; synthetic data is made from the --data "
                         "videos themselves: drop it")
    if args.val not in ("auto", "none"):
        raise UsageError("--val for synthetic data is auto (a validation set from frames between the training and test parts) or none")
    source = Path(value) if value else data_spec.default_face_videos()
    if not source.exists():
        raise data_spec.DataSpecError(f"--data synthetic={source}: no such folder or video file")
    if (source / "synthetic.json").is_file():
        raise data_spec.DataSpecError(
            f"--data synthetic={source}: that is a set fgsl.data.synthetic made, not a folder of source face videos; "
            f"train on it as annotated data: --data table={source / 'annotations.csv'} --video-root {source / 'videos'}")
    videos = [source] if source.is_file() else data_spec.video_files(source)
    if not videos:
        raise data_spec.DataSpecError(f"{source}: no videos to inject micro-expressions into")
    few = max(1, args.synthetic_count // 4)
    parts = [("train", args.synthetic_count, args.seed), ("test", few, args.seed + 1)]
    if args.val == "auto":
        parts.append(("val", few, args.seed + 2))  # frames between the training and the test part
    loaded = {}
    for part, count, seed in parts:
        recipe = Recipe(count=count, frames=args.synthetic_frames, amplitude=args.amplitude, part=part, seed=seed,
                        align=args.align_faces)
        folder = out / "data" / part
        made = made_from(folder)
        if args.resume and made is not None and made != (asdict(recipe), _names(videos)):
            # A resumed run goes on with its own data: new sets would change what validation
            # chooses epochs by and what the final test scores.
            raise UsageError(f"--resume: {folder} was made from other videos or data flags (--data, --amplitude, "
                             "--synthetic-count, --synthetic-frames, --seed, --align-faces); resume with the run's own")
        if env.main and made != (asdict(recipe), _names(videos)):
            make_set(videos, folder, recipe, progress=not args.quiet)
        env.barrier()
        loaded[part] = data_spec.load_folder(cfg, folder)
    val, val_truth = loaded.get("val", ([], []))
    return data_spec.TrainData(
        loaded["train"][0], *loaded["test"],
        f"synthetic from {source} (amplitude {args.amplitude} px of a 128 px face crop, {args.synthetic_count} videos per face"
        f"{', faces aligned as the live spotter aligns them' if args.align_faces else ''})",
        val, val_truth,
    )


def made_from(folder: Path) -> tuple[dict[str, Any], list[str]] | None:
    """(recipe, source videos) of a finished synthetic set in ``folder``, or None: a set is
    reused only when both match (another folder of faces with the same flags is another set)."""
    try:
        meta = json.loads((folder / "synthetic.json").read_text())
        if not isinstance(meta.get("recipe"), dict):
            return None
        return meta["recipe"], _names(Path(source["video"]) for source in meta["sources"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _names(videos: Iterable[Path]) -> list[str]:
    return sorted({str(Path(v).resolve()) for v in videos})  # (a video with two faces is two sources)


def cutting_starts(events: Sequence[tuple[int, int, int, int]], window: int, last: int) -> np.ndarray:
    """For every window start 0..``last``, whether that window would cut one of ``events``
    (``(onset, apex, offset, label)``): overlap it without holding it whole. One pass per event
    here, so that :func:`epoch_windows`, called for every epoch up front to count the schedule
    (:func:`schedule_steps`), looks each start up instead of testing it against every event."""
    cuts = np.zeros(last + 1, bool)
    starts = np.arange(last + 1)
    for onset, _, offset, _ in events:
        overlaps = (starts <= offset) & (starts + window - 1 >= onset)
        holds = (starts <= onset) & (starts + window - 1 >= offset)
        cuts |= overlaps & ~holds
    return cuts


def epoch_windows(items: list[data_spec.VideoItem], window: int, epoch: int, seed: int) -> list[tuple[int, int]]:
    """(video index, start) pairs for one epoch, shuffled: positives around events +
    background (:func:`rank_windows` deals them out to the ranks).

    Background windows start every quarter window (jittered), so natural movements, the
    source of false alarms, are seen from many offsets.

    No window cuts an event: a visible but unlabelled movement would teach the model that
    movements are background. Background windows whose jittered start would cut one are
    moved (a few tries) or dropped.
    """
    rng = np.random.default_rng(seed * 100_003 + epoch)
    out: list[tuple[int, int]] = []
    for v, item in enumerate(items):
        last = max(0, len(item.frames) - window)
        cuts = cutting_starts(item.events, window, last)
        for onset, _, offset, _ in item.events:
            starts = [s for s in range(max(0, offset - window + 1), min(onset, last) + 1) if not cuts[s]]
            if starts:
                out.extend((v, int(rng.choice(starts))) for _ in range(2))
        for base in range(0, last + 1, max(1, window // 4)):
            for _ in range(4):
                start = int(min(last, base + rng.integers(0, max(1, window // 4))))
                if not cuts[start]:
                    out.append((v, start))
                    break
    order = rng.permutation(len(out))  # from the epoch's own seed: a resumed run draws the same
    return [out[i] for i in order]


def schedule_steps(items: list[data_spec.VideoItem], window: int, args: argparse.Namespace, world: int) -> int:
    """The optimiser steps of the whole run (the learning-rate schedule's length): each epoch's
    own, up to ``--max-steps``.

    An epoch's window count varies a little (background windows that would cut an event are
    dropped at random, :func:`epoch_windows`), so the count of the first epoch times
    ``--epochs`` (what this was) cut the last epoch's final steps when a later epoch had more
    windows, and left the rate above its floor when they had fewer. Each rank takes
    ``ceil(windows / world)`` windows (:func:`rank_windows`), in micro-batches of ``--batch``,
    with one optimiser step per ``--accum`` of them and one at the epoch's end
    (:func:`_train_epoch`)."""
    total = 0
    for epoch in range(args.epochs):
        per_rank = math.ceil(len(epoch_windows(items, window, epoch, args.seed)) / world)
        total += math.ceil(math.ceil(per_rank / args.batch) / args.accum)
        if args.max_steps and total >= args.max_steps:
            return args.max_steps
    return max(1, total)


def rank_windows(picks: list[tuple[int, int]], rank: int, world: int) -> list[tuple[int, int]]:
    """This rank's shard of the epoch's (already shuffled) windows, in training order, as
    :class:`DistributedSampler` deals them (``shuffle=False``: :func:`epoch_windows` shuffles
    with the epoch's own seed, so the windows and their order stay those training has always
    used, and runs and their documented results reproduce).

    Every rank must take the same number of micro-batches, or DDP's gradient all-reduce would
    wait forever for the rank that ran out. So, when ``len(picks)`` does not divide by
    ``world``, ``drop_last=False`` pads the epoch by showing the first ``-len(picks) % world``
    windows twice (each on another rank than its first showing); the shards are disjoint and
    every window is seen exactly once only when it divides (always with one process).
    ``drop_last=True`` would keep shards disjoint by never showing up to ``world - 1`` windows
    instead; windows are drawn afresh every epoch, so either costs little.
    """
    sampler = DistributedSampler(picks, world, rank, shuffle=False, drop_last=False)  # type: ignore[arg-type]
    return [picks[i] for i in sampler]


def shift(frames: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Translate a clip by whole pixels, repeating the edge: the face crop is never exact."""
    if dy == 0 and dx == 0:
        return frames
    h, w = frames.shape[1:3]
    padded = np.pad(frames, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
    return padded[:, 2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w]


def epoch_rng(seed: int, epoch: int, rank: int) -> np.random.Generator:
    """The random generator of one rank's epoch: its first draw seeds torch for the epoch
    (:func:`_train_epoch`), the rest are :func:`make_batch`'s augmentations (flips, shifts, gain).

    Like the epoch's windows (:func:`epoch_windows`), it depends on the seed, the epoch and the
    rank alone, not on what ran before in the process: a resumed run (a new process, no
    earlier epochs, validation drawn or not) draws what the unbroken run drew, on every rank,
    with nothing to checkpoint; and each rank augments its shard differently.
    """
    return np.random.default_rng([seed, epoch, rank])


def make_batch(items: list[data_spec.VideoItem], picks: list[tuple[int, int]], cfg: FGSLConfig,
               rng: np.random.Generator) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Normalised clips ``[B, 3, T, S, S]`` of the picked windows, and the events wholly inside
    each (window frames, class). Each clip is flipped at random, shifted by up to 2 pixels and
    its normalised values scaled by 0.9 to 1.1: the model must not learn one face crop's exact
    framing or exposure. A window running past the video's end is padded as inference pads it."""
    clips, segments, labels = [], [], []
    t = cfg.window_frames
    for v, start in picks:
        item = items[v]
        frames = pad_frames(item.frames[start : start + t], t)  # a video shorter than one window
        if rng.random() < 0.5:
            frames = frames[:, :, ::-1]
        frames = shift(frames, *rng.integers(-2, 3, size=2))
        clip = normalise(frames) * rng.uniform(0.9, 1.1)
        clips.append(clip)
        inside = [(on - start, off - start, c) for on, _, off, c in item.events if on >= start and off < start + t]
        segments.append(torch.tensor([[a, b] for a, b, _ in inside], dtype=torch.float32).reshape(-1, 2))
        labels.append(torch.tensor([c for _, _, c in inside], dtype=torch.long))
    return torch.from_numpy(np.stack(clips).astype(np.float32)), segments, labels


# ---------------------------------------------------------------------------- evaluation
def evaluate_held_out(model: FGSL, data: data_spec.TrainData, device: torch.device) -> dict[str, Any]:
    """Spot the held-out videos like ``fgsl.infer`` does and score them like ``fgsl.evaluate``."""
    from engines.torch_backend import TorchEngine
    from fgsl.evaluate import evaluate_all, to_json

    engine = TorchEngine(model, device=str(device))
    predictions = []
    for item in data.held_out:
        intervals = spot_frames(engine, item.frames, batch=8)
        for det in to_detections(intervals, model.cfg, item.name, item.source_fps, item.source_frames):
            predictions.append(Annotation(item.subject, item.name, det.onset, det.apex, det.offset, "micro", det.emotion))
    results = evaluate_all(data.held_out_truth, predictions)  # as `python -m fgsl.evaluate` scores it
    summary: dict[str, Any] = {}
    for mode, result in results.items():
        spot = result["spotting"]
        summary[mode] = to_json({  # NaN ("undefined", e.g. no true positive) -> null in metrics.jsonl
            "spotting_f1": spot["f1"],
            "recognition_f1": result["recognition"]["f1"],
            "strs": result["strs"],
            "tp": spot["tp"],
            "fp": spot["fp"],
            "fn": spot["fn"],
        })
    summary.update(summary["strict"])
    return summary


def validate(model: FGSL, data: data_spec.TrainData, device: torch.device) -> dict[str, Any]:
    """Score the validation videos at every candidate threshold (:func:`fgsl.tune.sweep`);
    the best one (:func:`fgsl.tune.best`) is this epoch's threshold and score."""
    from engines.torch_backend import TorchEngine

    rows = tune.sweep(TorchEngine(model, device=str(device)), data.val, data.val_truth, tune.DEFAULT_THRESHOLDS, batch=8)
    choice = tune.best(rows)
    return {"threshold": choice["threshold"], "spotting_f1": choice["f1"], "recognition_f1": choice["recognition_f1"],
            "strs": choice["strs"], "tp": choice["tp"], "fp": choice["fp"], "fn": choice["fn"],
            "f1_by_threshold": {str(r["threshold"]): round(r["f1"], 4) for r in rows}}


# ---------------------------------------------------------------------------- training
def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1, then cosine decay to 1 % of the peak: the factor of ``--lr`` at
    optimiser step ``step`` (0-based) of ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))


def lr_schedule(optimizer: torch.optim.Optimizer, peak: float, warmup: int, total: int, step: int = 0) -> LambdaLR:
    """The learning-rate schedule (:func:`lr_factor` times ``peak``), positioned to give the
    rate of optimiser step ``step``: step it after every optimiser step.

    It is rebuilt from the step count rather than restored from a checkpoint of its own: the
    step count is what the checkpoint keeps, and a resumed run counts its schedule with its
    own flags (``--lr``, and ``--epochs``/``--max-steps``, which set ``total``), as it always
    has. ``initial_lr`` is where torch schedulers keep the peak they scale; setting it is how a
    scheduler is started past step 0 (a loaded optimiser state may carry another run's).
    """
    for group in optimizer.param_groups:
        group["initial_lr"] = peak
    return LambdaLR(optimizer, partial(lr_factor, warmup=warmup, total=total), last_epoch=step - 1)


def build_model(cfg: FGSLConfig, args: argparse.Namespace, env: Dist) -> FGSL:
    torch.manual_seed(args.seed)
    model = FGSL(cfg)
    if args.backbone:
        from fgsl.convert_backbone import load_into

        load_into(model, args.backbone)
    else:
        model.encoder.requires_grad_(True)
        if env.main:
            print("no --backbone given: training the encoder from scratch (use converted VideoMAE V2 weights for real data)",
                  file=sys.stderr)
    return model.to(env.device)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def open_run(out: Path, cfg: FGSLConfig, args: argparse.Namespace, world: int) -> dict[str, Any] | None:
    """Check ``--out`` before anything is read or written; return the checkpoint to resume from.

    A folder that holds a run is continued (``--resume``) or left alone: training afresh into
    it would append a second run's lines to the first one's metrics.jsonl. A resumed run must
    build the same model (the checkpoint's weights fit no other) and take as many windows per
    optimiser step: the step count and the learning-rate schedule are counted in its steps.
    """
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file: pass a folder for the run")
    held = [name for name in (weights.WEIGHTS_FILE, CHECKPOINT, METRICS) if (out / name).exists()]
    if not args.resume:
        if held:
            raise UsageError(f"--out {out} holds a run ({', '.join(held)}): pass --resume to continue it, or another folder")
        return None
    if not (out / CHECKPOINT).is_file():
        raise UsageError(f"--resume: {out / CHECKPOINT} does not exist")
    state = load_state(out / CHECKPOINT)
    saved, here = state.get("config"), json.loads(cfg.to_json())  # tuples as the checkpoint's lists
    differ = [key for key in here if saved and saved.get(key) != here[key]]
    if differ:
        raise UsageError(f"--resume: {out / CHECKPOINT} holds a {saved.get('name')} model, which differs from --preset "
                         f"{args.preset} in {', '.join(differ)}: resume with the run's preset")
    took, takes = [state.get(k) for k in ("batch", "accum", "processes")], [args.batch, args.accum, world]
    if None not in took and math.prod(took) != math.prod(takes):
        raise UsageError(f"--resume: the run took {math.prod(took)} windows per optimiser step (--batch {took[0]} x --accum "
                         f"{took[1]} x {took[2]} process(es)), this one {math.prod(takes)} (--batch {args.batch} x --accum "
                         f"{args.accum} x {world}): its steps and learning-rate schedule count those; resume with the same")
    if state.get("within") and state.get("seed", args.seed) != args.seed:
        raise UsageError(f"--resume: {out / CHECKPOINT} was written in the middle of epoch {state['within']['epoch']} of "
                         f"a run with --seed {state['seed']}, whose windows and augmentations its position counts: "
                         "resume it with that seed")
    if state.get("within") and took != takes:
        raise UsageError(f"--resume: {out / CHECKPOINT} was written in the middle of epoch {state['within']['epoch']}, "
                         f"which counts each process's own micro-batches (--batch {took[0]} x --accum {took[1]} x "
                         f"{took[2]} process(es)): resume it with those")
    saved_data, data_now = state.get("data"), data_identity(args)
    if saved_data is not None:
        if saved_data.get("kind") != "synthetic":
            saved_data = {**IDENTITY_DEFAULTS, **saved_data}
        keys = [k for k in {**saved_data, **data_now} if saved_data.get(k) != data_now.get(k)]
        if keys:
            differ = ", ".join(f"{k} {saved_data.get(k)!r} -> {data_now.get(k)!r}" for k in keys)
            change = ("the crops its weights learned" if keys == ["crops"]
                      else "its subject split, validation and test set")
            raise UsageError(f"--resume: the run was trained on other data ({differ}): {change} would change; resume "
                             "with the run's own data flags")
    if state["epoch"] + 1 >= args.epochs and held_out_scored(out):
        raise UsageError(f"--resume: the run has done {state['epoch'] + 1} epoch(s) of --epochs {args.epochs} and its "
                         f"held-out test is scored ({out / METRICS}): nothing left to do")
    gone = [name for name in (weights.WEIGHTS_FILE, weights.CONFIG_FILE) if not (out / name).is_file()]
    if gone and state.get("epoch", -1) >= 0:  # (epoch 0 done: its weights were saved; an epoch cut short has none yet)
        # The best epoch's weights are saved only when an epoch beats them: resumed without them,
        # the run ended "done" with no weights at all.
        raise UsageError(f"--resume: {out} has lost {' and '.join(gone)} (the best epoch's weights, which the rest "
                         "of the run only replaces when an epoch beats them): put them back, or train in a new folder")
    return state


def data_identity(args: argparse.Namespace) -> dict[str, Any]:
    """What a resumed run must keep of its data flags: the annotation file, its videos, the
    subject split, the validation choice and the crops read (``--align-faces``; synthetic sets
    are compared by recipe and source videos in :func:`prepare_data`, so only ``--val`` here)."""
    kind, value = data_spec.parse(args.data)
    if kind == "synthetic":
        return {"kind": kind, "val": args.val}
    identity = {"kind": kind, "file": str(Path(value).resolve()), "video_root": str(Path(args.video_root).resolve())
                if args.video_root else None, "split": args.split, "val": args.val, "skip_bad_rows": args.skip_bad_rows}
    if args.micro_sheet:  # (only when given: runs before the flag keep their identity)
        identity["micro_sheet"] = str(Path(args.micro_sheet).resolve())
    return {**identity, "crops": ALIGNED if args.align_faces else CROPS}


#: Annotated-data identity entries that runs saved before them lack, with the value those
#: runs had (synthetic identities have none: their recipe records ``--align-faces``).
IDENTITY_DEFAULTS = {"crops": CROPS}


def held_out_scored(out: Path) -> bool:
    """Whether the last epoch in ``metrics.jsonl`` is followed by a final held-out line (a run
    resumed to train further and stopped before scoring has only its earlier run's). A run
    that stopped after its last checkpoint but before that line (a crash, Ctrl-C) is resumed
    only to score it."""
    try:
        lines = (out / METRICS).read_text().splitlines()
    except FileNotFoundError:
        return False
    scored = False
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by the crash
            continue
        if isinstance(record, dict):
            scored = record.get("final") is True or (scored and "epoch" not in record)
    return scored


def train(args: argparse.Namespace) -> dict[str, Any]:
    env = Dist()
    try:
        result = _train(args, env)
        # Every rank ends together: a rank that tears gloo down while rank 0 still scores the
        # held-out test can be aborted (SIGABRT, "terminate called without an active exception").
        env.barrier()
        return result
    finally:
        env.close()


@dataclass
class _Run:
    """One training run's parts, and how far it has come: what each step of :func:`_train`
    reads and what the checkpoint saves (``step``, ``best``)."""

    args: argparse.Namespace
    env: Dist
    cfg: FGSLConfig
    out: Path
    data: data_spec.TrainData
    model: FGSL
    ddp: torch.nn.Module  # the model, wrapped for DDP when there are several processes
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    ema: AveragedModel
    criterion: FGSLLoss
    scaler: torch.amp.GradScaler
    amp: torch.dtype | None
    total_steps: int
    warmup: int
    scheduler: LambdaLR = field(init=False)  # made by _train once the step count is known (lr_schedule)
    step: int = 0
    best: list[float] | None = None
    started: float = 0.0
    deadline: float | None = None

    @property
    def crops(self) -> str:
        """What the model sees, recorded with the weights (aligned crops with ``--align-faces``),
        so the live spotter can say when it feeds other crops and ``fgsl.infer`` reads videos the same way."""
        return ALIGNED if self.args.align_faces else CROPS

    def past_deadline(self) -> bool:
        """``--max-minutes`` has run out on this process's clock."""
        return bool(self.deadline and time.monotonic() > self.deadline)

    def out_of_budget(self) -> bool:
        """The schedule's last step is done, or ``--max-minutes`` has run out. Every rank calls
        it at the same point and gets the same answer: rank 0's clock decides. Each process
        counts the minutes from its own start, and a rank that stopped while another went on
        would leave that one waiting at its next all-reduce for ever."""
        if self.step >= self.total_steps:
            return True
        if not self.deadline:
            return False
        late = self.past_deadline()
        if self.env.world > 1:
            verdict = torch.tensor([int(late)], device=self.env.device)
            dist.broadcast(verdict, src=0)
            late = bool(verdict.item())
        return late


def _train(args: argparse.Namespace, env: Dist) -> dict[str, Any]:
    """Set up (or resume) a run, train it epoch by epoch, then check the ranks and score the test."""
    run, state = _set_up(args, env)
    start_epoch, resume_at = _restore(run, state) if state else (0, None)
    run.scheduler = lr_schedule(run.optimizer, args.lr, run.warmup, run.total_steps, run.step)
    if env.main:
        data = run.data
        print(f"FGSL {run.cfg.name}: {len(data.train)} training video(s) ({sum(len(i.events) for i in data.train)} "
              f"events), {len(data.val)} validation video(s), {len(data.held_out)} held-out video(s); "
              f"{data.description}; device {env.device}, {env.world} process(es)", file=sys.stderr)
    run.started = time.monotonic()
    run.deadline = run.started + args.max_minutes * 60 if args.max_minutes else None
    history = []
    for epoch in range(start_epoch, args.epochs):
        if run.out_of_budget():
            break
        record, stopped = _train_epoch(run, epoch, resume_at if epoch == start_epoch else None)
        normalisers, positions = _gather_ranks(run, stopped)
        if env.main:
            _end_of_epoch(run, epoch, record, normalisers, positions)
        history.append(record)
        env.barrier()
    ranks = check_ranks_agree(run.model, env, run.out)
    if env.main:
        say_nothing_chosen(run)
    final = score_on_test(run.data, run.out, env) if env.main else None
    return {"epochs": len(history), "step": run.step, "best": run.best, "history": history, "rank_digests": ranks,
            "final": final}


def _set_up(args: argparse.Namespace, env: Dist) -> tuple[_Run, dict[str, Any] | None]:
    """The run's parts and the checkpoint to resume from (None for a new run). Everything that
    can be refused is, before the run folder exists: ``--out`` and the checkpoint, a bad
    ``--backbone``, then the data (a synthetic set makes its own folder under out/data once its
    videos have faces)."""
    out = Path(args.out)
    cfg = preset(args.preset)
    state = open_run(out, cfg, args, env.world)
    model = build_model(cfg, args, env)
    data = prepare_data(cfg, args, out, env)
    if not data.train or not any(item.events for item in data.train):
        raise data_spec.DataSpecError("no training events: nothing to learn from")
    if env.main:
        out.mkdir(parents=True, exist_ok=True)
    env.barrier()

    params = model.trainable_parameters()
    amp = autocast_dtype(env.device)
    total_steps = schedule_steps(data.train, cfg.window_frames, args, env.world)
    run = _Run(  # (arguments run in this order: the EMA copies the model before DDP wraps it)
        args, env, cfg, out, data, model,
        params=params,
        optimizer=torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay),
        ema=AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.ema), use_buffers=True),
        criterion=FGSLLoss(),
        scaler=torch.amp.GradScaler("cuda", enabled=amp == torch.float16),
        amp=amp,
        ddp=torch.nn.parallel.DistributedDataParallel(model) if env.world > 1 else model,
        total_steps=total_steps,
        warmup=max(1, min(args.warmup, total_steps // 10 or 1)),
    )
    return run, state


def _restore(run: _Run, state: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
    """Load a ``--resume`` checkpoint into the run; returns the epoch to start from, and this
    rank's position in it when the checkpoint was written mid-epoch (:func:`_position`). A run
    whose schedule is done and whose held-out test is scored is refused (nothing to do); one
    whose schedule is done but not scored goes on to score it.

    Resumed with the flags and the number of processes it ran with, a run goes on exactly as
    it would have without the break (on the CPU, to the bit; ``tests/test_train.py``): the
    checkpoint holds the weights, the EMA, the optimiser and scaler, the step count (the
    learning-rate schedule is rebuilt from it, :func:`lr_schedule`), the best validation score
    and every rank's loss normaliser; what is random comes from the seed, the epoch and the
    rank alone (windows: :func:`epoch_windows`; augmentations and torch's generators:
    :func:`epoch_rng`).
    With another number of processes (the same windows per step), each rank takes rank 0's
    normaliser, and the shards and augmentations are other ones (a mid-epoch checkpoint is
    refused then, :func:`open_run`: its position counts this rank's own batches).
    """
    start_epoch, run.step, run.best = state["epoch"] + 1, state["step"], state["best"]
    within = state.get("within")
    position = within["ranks"][run.env.rank] if within else None
    trained = run.step >= run.total_steps or start_epoch >= run.args.epochs
    if trained and held_out_scored(run.out):  # (the epochs were checked before the data was prepared, in open_run)
        raise UsageError(f"--resume: the run has done {run.step} steps, and this schedule ends at step {run.total_steps} "
                         f"(--epochs, --max-steps), and its held-out test is scored: nothing left to do")
    try:
        run.model.load_state_dict(state["model"])
        run.ema.load_state_dict(state["ema"])
        run.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            run.scaler.load_state_dict(state["scaler"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:  # a tensor of another shape: torch's traceback
        raise UsageError(f"--resume: {run.out / CHECKPOINT} does not fit this model ({first_line(exc, skip_heading=True)}): damaged, or "
                         "written by other code; train in a new folder") from None
    normalisers = state.get("normalisers")  # every rank's (rank 0's alone in checkpoints before them)
    same_ranks = isinstance(normalisers, list) and len(normalisers) == run.env.world
    run.criterion.normaliser = normalisers[run.env.rank] if same_ranks else state["normaliser"]
    if run.env.main:
        print(f"resumed from {run.out / CHECKPOINT} at epoch {start_epoch}, step {run.step}"
              + (f", after batch {position['batches']} of the epoch" if position else "")
              + (": nothing left to train, scoring the held-out test only" if trained else ""), file=sys.stderr)
    return start_epoch, position


def _train_epoch(run: _Run, epoch: int, position: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One pass over this rank's shard of the epoch's windows, or its rest after ``position``
    (a mid-epoch checkpoint's: :func:`_position`), stopping early when the budget runs out.
    Returns the epoch's metrics record (mean losses, speed) and, for an epoch cut short, where
    it stopped (None when it ran to its end). Its random draws come from the seed, the epoch
    and the rank (:func:`epoch_rng`), so a resumed run makes them too; one resumed mid-epoch
    sets the generator to the state it had after the batches already trained, which are
    skipped without being drawn again. Every ``--checkpoint-every`` optimiser steps it
    checkpoints its position (:func:`_checkpoint_within`)."""
    args, env, cfg = run.args, run.env, run.cfg
    rng = epoch_rng(args.seed, epoch, env.rank)
    torch.manual_seed(int(rng.integers(2**63)))  # (CPU and CUDA: nothing in FGSL draws from them today)
    picks = rank_windows(epoch_windows(run.data.train, cfg.window_frames, epoch, args.seed), env.rank, env.world)
    run.model.train()
    totals = {"loss": 0.0, "cls": 0.0, "reg": 0.0}
    seen, done = 0, 0
    lr = run.scheduler.get_last_lr()[0]
    if position:
        rng.bit_generator.state = position["rng"]
        totals, seen, done, lr = dict(position["totals"]), position["seen"], position["batches"], position["lr"]
    seen_before, tick = seen, time.monotonic()
    micro_batches = [picks[i : i + args.batch] for i in range(0, len(picks), args.batch)]
    bar = tqdm(total=len(micro_batches), initial=done, desc=f"epoch {epoch}", unit="batch",
               disable=not env.main or args.quiet, file=sys.stderr)
    stopped = None
    for i, group in enumerate(micro_batches[done:], start=done):
        clips, segments, labels = make_batch(run.data.train, group, cfg, rng)
        targets = assign_targets(cfg, segments, labels)
        with torch.autocast(env.device.type, dtype=run.amp, enabled=run.amp is not None):
            outputs = run.ddp(clips.to(env.device))
        losses = run.criterion({k: v.float() for k, v in outputs.items()}, targets)
        run.scaler.scale(losses["loss"] / args.accum).backward()
        for key in totals:
            totals[key] += float(losses[key].detach()) * len(group)
        seen += len(group)
        stepped = (i + 1) % args.accum == 0 or i + 1 == len(micro_batches)
        if stepped:
            lr = _optimiser_step(run)
        rate = (seen - seen_before) * env.world / max(1e-9, time.monotonic() - tick)
        bar.set_postfix(loss=f"{totals['loss'] / seen:.3f}", win_s=f"{rate:.1f}")
        bar.update(1)
        if not stepped or i + 1 == len(micro_batches):  # (an epoch's end is checkpointed by _end_of_epoch)
            continue
        if run.out_of_budget():
            # --max-minutes: keep where the epoch stopped, so --resume trains its rest. The
            # schedule's end (--epochs, --max-steps) leaves no rest to train.
            stopped = None if run.step >= run.total_steps else _position(i + 1, lr, rng, totals, seen)
            break
        if args.checkpoint_every and run.step % args.checkpoint_every == 0:
            _checkpoint_within(run, epoch, _position(i + 1, lr, rng, totals, seen))
    bar.close()
    record = {
        "epoch": epoch,
        "step": run.step,
        "lr": lr,  # that of the epoch's last step
        **{k: v / max(1, seen) for k, v in totals.items()},
        "windows_per_s": (seen - seen_before) * env.world / max(1e-9, time.monotonic() - tick),
        "elapsed_s": time.monotonic() - run.started,
    }
    if stopped:
        record["stopped_after_batch"] = stopped["batches"]  # of this rank's len(micro_batches)
    return record, stopped


def _position(batches: int, lr: float, rng: np.random.Generator, totals: dict[str, float], seen: int) -> dict[str, Any]:
    """Where this rank is in its epoch, right after an optimiser step (no gradients pending):
    what :func:`_train_epoch` needs to go on from there exactly. ``batches``: micro-batches of
    this rank's shard trained; ``rng``: the augmentation generator's state after them (a dict
    with 128-bit ints, which the checkpoint's JSON skeleton stores exactly); ``totals`` and
    ``seen``: the running loss sums, so the epoch's metrics line is the unbroken run's;
    ``lr``: the rate of the last step, which that line records. (The loss normaliser is
    checkpointed for every rank anyway: :func:`_gather_ranks`.)"""
    return {"batches": batches, "lr": lr, "rng": rng.bit_generator.state, "totals": dict(totals), "seen": seen}


def _gather_ranks(run: _Run, position: dict[str, Any] | None) -> tuple[list[float], list[dict[str, Any]] | None]:
    """Every rank's loss normaliser and, for an epoch under way, every rank's position (every
    rank must call it; each rank's follow its own shard)."""
    normalisers = gather(run.criterion.normaliser, run.env)
    positions = gather(position, run.env) if position is not None else None
    return normalisers, positions


def _checkpoint_within(run: _Run, epoch: int, position: dict[str, Any]) -> None:
    """``--checkpoint-every``: checkpoint the training state in the middle of ``epoch`` (every
    rank calls it at the same step), so that a crash loses at most N steps of an epoch that may
    take hours. The weights for inference (``model.safetensors``) stay the best validated
    epoch's, and nothing goes to metrics.jsonl: the epoch is not over. Ranks wait for rank 0's
    write, so a rank that dies right after cannot take torchrun's other ranks down mid-write."""
    normalisers, positions = _gather_ranks(run, position)
    if run.env.main:
        save_state(_state(run, epoch, normalisers, positions), run.out / CHECKPOINT)
    run.env.barrier()


def _optimiser_step(run: _Run) -> float:
    """Apply the accumulated gradients: unscaling, clipping at 1.0, the step at the scheduled
    learning rate, the EMA of the weights, then the schedule moves on to the next step's rate.
    Returns the learning rate this step took (metrics.jsonl records it)."""
    lr = run.optimizer.param_groups[0]["lr"]
    run.scaler.unscale_(run.optimizer)
    torch.nn.utils.clip_grad_norm_(run.params, 1.0)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.ema.update_parameters(run.model)
    run.scheduler.step()
    run.step += 1
    return lr


def _end_of_epoch(run: _Run, epoch: int, record: dict[str, Any], normalisers: list[float],
                  positions: list[dict[str, Any]] | None = None) -> None:
    """Rank 0, after each epoch: validate when due and save the weights if they are the best so
    far (without validation data: the latest), append the record to metrics.jsonl, print one
    line, and checkpoint the whole training state for ``--resume`` (with ``normalisers``, every
    rank's loss normaliser: each rank's follows its own shard). An epoch that the budget cut
    short (``positions``: where each rank stopped) is validated and saved all the same, and its
    checkpoint holds those positions, so ``--resume`` trains the rest of it rather than skip it."""
    args, data, out = run.args, run.data, run.out
    ema = run.ema.module
    if not (math.isfinite(record["loss"]) and all(bool(torch.isfinite(p).all()) for p in ema.parameters())):
        raise TrainingDiverged(f"training diverged in epoch {epoch} (step {run.step}): the loss or the weights are "
                               f"not finite; nothing of this epoch is saved. Lower --lr (now {args.lr:g})")
    # (rank 0 alone here: its own clock, which decides for every rank in out_of_budget)
    due = epoch % args.eval_every == 0 or epoch == args.epochs - 1 or run.step >= run.total_steps or run.past_deadline()
    if data.val and due:
        record["validation"] = checked = validate(ema, data, run.env.device)
        score = (checked["spotting_f1"], checked["strs"])
        if run.best is None or score > tuple(run.best):
            run.best = list(score)
            kept = {k: v for k, v in checked.items() if k != "f1_by_threshold"}
            weights.save(ema, out, trained=True, score_threshold=checked["threshold"],
                         info={"data": data.description, "crops": run.crops, "epoch": epoch, "step": run.step,
                               "validation": kept})
            record["saved_best"] = True
    elif not data.val or not (out / weights.WEIGHTS_FILE).is_file():
        weights.save(ema, out, trained=True,
                     info={"data": data.description, "crops": run.crops, "epoch": epoch, "step": run.step})
    with (out / METRICS).open("a") as f:
        f.write(json.dumps(record) + "\n")
    checked = record.get("validation")
    summary = (f"validation spotting F1 {checked['spotting_f1']:.3f} STRS {checked['strs']:.3f} "
               f"at threshold {checked['threshold']:g}" if checked else "no validation")
    print(f"epoch {epoch}: loss {record['loss']:.4f} ({record['windows_per_s']:.1f} windows/s), {summary}",
          file=sys.stderr)
    save_state(_state(run, epoch, normalisers, positions), out / CHECKPOINT)


def _state(run: _Run, epoch: int, normalisers: list[float], positions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The training state ``--resume`` continues from, after ``epoch`` or (``positions``, every
    rank's :func:`_position`) within it. ``epoch`` is always the last epoch done (-1: none), so
    a checkpoint stays what older code and :func:`open_run` read; ``within`` says where the
    next one stands."""
    args = run.args
    return {
        "model": run.model.state_dict(), "ema": run.ema.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
        "epoch": epoch - 1 if positions else epoch, "step": run.step,
        "within": {"epoch": epoch, "ranks": positions} if positions else None,
        "best": run.best, "normaliser": run.criterion.normaliser, "normalisers": normalisers,
        "config": run.cfg.to_dict(), "batch": args.batch, "accum": args.accum, "processes": run.env.world,
        "seed": args.seed,
        "data": data_identity(args),
    }


def say_nothing_chosen(run: _Run) -> None:
    """Warn when no validation found a single movement (spotting F1 0 in every epoch, at
    every threshold): the weights kept are then the epoch of the best STRS (all 0: the first)
    and their threshold the sweep's first, a default rather than a choice. ``fgsl.tune``
    refuses that case; training ends as it always does, but says so."""
    if run.best is None or run.best[0] > 0:
        return
    kept = weights.info(run.out)
    print(f"warning: no validation found a single movement (spotting F1 0 in every epoch, at every threshold): the "
          f"weights kept (epoch {kept.get('epoch')}) and their score threshold "
          f"{kept.get('validation', {}).get('threshold')} were not chosen by anything; train "
          f"longer or on more data, or choose the threshold with python -m fgsl.tune on other validation videos",
          file=sys.stderr)


def score_on_test(data: data_spec.TrainData, out: Path, env: Dist) -> dict[str, Any] | None:
    """Score the saved weights (best validation epoch, its threshold) on the held-out videos,
    once, after training: the test set chooses nothing. Appended to metrics.jsonl."""
    if not data.held_out or not (out / weights.WEIGHTS_FILE).is_file():
        return None
    chosen = weights.load(out, device=env.device)
    final = {"final": True, "epoch": weights.info(out).get("epoch"), "score_threshold": chosen.cfg.score_threshold,
             "held_out": evaluate_held_out(chosen, data, env.device)}
    with (out / METRICS).open("a") as f:
        f.write(json.dumps(final) + "\n")
    held = final["held_out"]
    print(f"held-out test (epoch {final['epoch']}, threshold {final['score_threshold']:g}): spotting F1 "
          f"{held['spotting_f1']:.3f} STRS {held['strs']:.3f} (TP {held['tp']}, FP {held['fp']}, FN {held['fn']})",
          file=sys.stderr)
    return final


def gather(value: Any, env: Dist) -> list[Any]:
    """Every rank's ``value``, in rank order (every rank must call it)."""
    if env.world == 1:
        return [value]
    values: list[Any] = [None] * env.world
    dist.all_gather_object(values, value)
    return values


def check_ranks_agree(model: FGSL, env: Dist, out: Path) -> list[str]:
    """Digest of every rank's weights; DDP must keep them identical (written to ranks.json)."""
    digests = gather(weights.model_digest(model), env)
    if env.world > 1 and env.main:
        atomic_write(out / RANKS, (json.dumps({"world_size": env.world, "digests": digests}, indent=2) + "\n").encode())
        if len(set(digests)) != 1:
            raise RuntimeError(f"DDP ranks diverged: weight digests {digests}")
    return digests



def refuse_triton_shadowed() -> None:
    """Refuse a folder named ``triton`` that Python would import as the triton package.

    ``python -m`` puts the current folder first on the import path, so where triton is not
    installed (CPU machines) a ``triton/`` folder there (a Triton model repository, say) is
    imported as a namespace package; torch then takes triton as present, and building the
    optimiser died in ``torch._dynamo`` with "module 'triton' has no attribute 'language'".
    An installed triton is a regular package, which Python prefers to any such folder."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("triton")
    except (ImportError, ValueError):
        return
    if spec is None or spec.origin is not None or not spec.submodule_search_locations:
        return
    folders = ", ".join(str(Path(f).resolve()) for f in spec.submodule_search_locations)
    raise UsageError(f"the folder {folders} would be imported as the triton package (it is on Python's import "
                     "path, where python -m puts the current folder), which breaks torch's optimiser: run from "
                     "another folder, or rename that one")

def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m fgsl.train", description="Train FGSL (see docs/training.md).",
                            formatter_class=HelpFormatter)
    parser.add_argument("--preset", default="realtime", choices=sorted(PRESETS), help="model size (fgsl.config)")
    parser.add_argument("--data", default="synthetic", help="synthetic[=DIR or VIDEO] | table=CSV | casme2=FILE | casme3=FILE | samm=FILE")
    parser.add_argument("--video-root", help="folder holding the data set's videos (annotated data)")
    parser.add_argument("--split", help="held-out subjects: loso:K (default loso:0) or subjects:A,B")
    parser.add_argument("--val", default="auto",
                        help="validation (chooses the epoch and score threshold): auto (synthetic: a validation set "
                             "from frames between the training and test parts; annotated: the first training subject), none, or for annotated "
                             "data loso:K / subjects:A,B over the training subjects")
    parser.add_argument("--micro-sheet", metavar="FILE",
                        help="--data samm=FILE: the SAMM micro-expression sheet with the emotions (default: the one "
                             "found beside FILE, named at the start; several found is an error listing them)")
    parser.add_argument("--skip-bad-rows", action="store_true",
                        help="drop contradictory annotation rows with a warning (the public files have a few)")
    parser.add_argument("--out", required=True,
                        help="run folder (weights, checkpoint, metrics.jsonl); one that holds a run needs --resume")
    parser.add_argument("--backbone", help="converted VideoMAE V2 weights (python -m fgsl.convert_backbone)")
    # (at most 100000: every epoch's windows are drawn up front, which took 16 s for 100000 epochs of a
    # tiny set; 1e9 stalled for hours without a word)
    parser.add_argument("--epochs", type=at_least(1, most=100_000), default=40,
                        help="passes over the training windows (1-100000)")
    parser.add_argument("--max-steps", type=positive_int, help="stop after this many optimiser steps")
    parser.add_argument("--max-minutes", type=positive_number,
                        help="stop after this many minutes of training (data preparation not counted), checked after "
                             "every optimiser step; the epoch cut short is still validated and saved, and --resume "
                             "trains the rest of it")
    parser.add_argument("--checkpoint-every", type=at_least(0), default=0, metavar="N",
                        help="also checkpoint the training state every N optimiser steps within an epoch, so that "
                             "a crash in a long epoch loses at most N steps: --resume goes on from there exactly "
                             "(0: at each epoch's end only; the weights for inference stay the best validated epoch's)")
    parser.add_argument("--batch", type=positive_int, default=8, help="windows per process per micro-batch")
    parser.add_argument("--accum", type=positive_int, default=1, help="micro-batches per optimiser step")
    parser.add_argument("--lr", type=number_between(1e-9, 1.0), default=1e-3, help="peak learning rate (at most 1)")
    parser.add_argument("--weight-decay", type=non_negative_number, default=0.05, help="AdamW weight decay")
    parser.add_argument("--warmup", type=at_least(0), default=100, help="warm-up steps (at most a tenth of the run)")
    parser.add_argument("--ema", type=non_negative_number, default=0.995,
                        help="EMA decay of the weights, below 1 (0: the latest weights, no average)")
    parser.add_argument("--eval-every", type=positive_int, default=1, help="validate every N epochs (and after the last)")
    parser.add_argument("--seed", type=at_least(0, MAX_SEED), default=0, help="seed of the weights, the windows and the synthetic sets")
    parser.add_argument("--resume", action="store_true",
                        help="continue from RUN_DIR/checkpoint.safetensors (same --preset and windows per optimiser step)")
    parser.add_argument("--synthetic-count", type=positive_int, default=32, help="synthetic training videos per face")
    parser.add_argument("--synthetic-frames", type=at_least(Recipe.max_frames, MAX_FRAMES), default=192,
                        help=f"frames per synthetic video ({Recipe.max_frames}-{MAX_FRAMES}: room for the longest "
                             "event, and memory)")
    parser.add_argument("--amplitude", type=positive_number, default=12.0,
                        help="synthetic peak displacement, px of the 128 px face crop (default %(default)s; see docs/training.md)")
    parser.add_argument("--align-faces", action="store_true",
                        help="read faces aligned by the live spotter's face pipeline (MediaPipe) instead of centre "
                             "crops: synthetic sets are made from aligned faces, annotated videos are read aligned; "
                             "the weights then suit realtime.cam --weights, and fgsl.infer reads videos the same way "
                             "(see docs/training.md)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    def body(_: list[str] | None) -> int:
        if args.ema >= 1:
            raise UsageError(f"--ema must be below 1 (1 would keep the first weights forever), got {args.ema:g}")
        refuse_triton_shadowed()
        result = train(args)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"done: {result['epochs']} epoch(s), {result['step']} steps; weights in {args.out}", file=sys.stderr)
        return 0

    return run(body)


if __name__ == "__main__":
    quiet_exit(main())
