"""Training: windows, schedule, checkpoints, --resume, the CLI end to end and DDP on CPU."""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import engines
from fgsl import tune, weights
from fgsl.checkpoint import CheckpointStateError, load_state, save_state
from fgsl.config import FGSLConfig, preset
from fgsl.data.spec import VideoItem
from fgsl.losses import assign_targets
from fgsl.train import (epoch_windows, lr_factor, lr_schedule, main, make_batch, prepare_data, rank_windows,
                        schedule_steps)
from tests.conftest import SHARED_DATA, TWO_CPU_RANKS, disk_full_when_replacing, shared_video


def _item(events, frames=64):
    return VideoItem("s", "v", Path("v.avi"), 30.0, frames, np.zeros((frames, 32, 32, 3), np.uint8), events)


def test_epoch_windows_hold_each_event_whole_and_vary_by_epoch():
    items = [_item([(10, 12, 15, 0), (40, 44, 50, 2)])]
    picks = epoch_windows(items, 16, epoch=0, seed=0)
    for event in items[0].events:
        holding = [s for _, s in picks if s <= event[0] and event[2] < s + 16]
        assert len(holding) >= 2
    assert all(0 <= s <= 64 - 16 for _, s in picks)
    assert picks == epoch_windows(items, 16, epoch=0, seed=0)
    assert picks != epoch_windows(items, 16, epoch=1, seed=0)


def test_batches_carry_the_events_inside_each_window():
    cfg = preset("tiny", window_frames=16)
    items = [_item([(10, 12, 15, 1)])]
    clips, segments, labels = make_batch(items, [(0, 4), (0, 40)], cfg, np.random.default_rng(0))
    assert clips.shape == (2, 3, 16, 32, 32) and clips.dtype == torch.float32
    assert segments[0].tolist() == [[6.0, 11.0]] and labels[0].tolist() == [1]
    assert segments[1].shape == (0, 2)
    assert assign_targets(cfg, segments, labels).positive[0].any()


def test_a_video_shorter_than_a_window_is_padded_with_its_last_frame():
    """As fgsl.infer pads it (fgsl.data.video.pad_frames): the model trains on what it is shown."""
    cfg = preset("tiny", window_frames=16)
    item = _item([(2, 4, 6, 0)], frames=10)
    item.frames[:] = np.arange(10, dtype=np.uint8)[:, None, None, None] * 20
    clips, segments, _ = make_batch([item], [(0, 0)], cfg, np.random.default_rng(0))
    clip = clips[0]  # [3, 16, S, S]
    assert all(torch.equal(clip[:, t], clip[:, 9]) for t in range(10, 16)) and not torch.equal(clip[:, 8], clip[:, 9])
    assert segments[0].tolist() == [[2.0, 6.0]]


def test_held_out_scores_that_are_undefined_are_json_null():
    """A model that spots nothing has no true positive to recognise: the official (megc) mode's
    recognition F1 and STRS are NaN (fgsl.evaluate; strict mode says 0), which metrics.jsonl
    holds as null (JSON has no NaN)."""
    from fgsl.data.spec import TrainData
    from fgsl.data.table import Annotation
    from fgsl.model import build
    from fgsl.train import evaluate_held_out

    model = build(preset("tiny"), seed=0)
    with torch.no_grad():
        model.heads.class_out.bias.fill_(-20.0)  # every score about 2e-9: nothing is spotted
    data = TrainData([], [_item([], frames=32)], [Annotation("s", "v", 2, 4, 6, "micro", "positive")], "test")
    summary = evaluate_held_out(model, data, torch.device("cpu"))
    assert (summary["tp"], summary["fn"], summary["spotting_f1"]) == (0, 1, 0.0)
    assert (summary["recognition_f1"], summary["strs"]) == (0.0, 0.0)  # strict, the top-level one
    assert summary["megc"]["recognition_f1"] is None and summary["megc"]["strs"] is None
    json.dumps(summary, allow_nan=False)


def test_ranks_json_lists_every_ranks_digest_and_is_written_whole(tmp_path, monkeypatch):
    """The digest is fgsl.weights.model_digest (what weights.save stores); rank 0 writes
    ranks.json atomically, and diverged ranks are an error after it is written."""
    from types import SimpleNamespace

    from fgsl import train as train_module
    from fgsl.model import build

    model = build(preset("tiny"), seed=0)
    digest = weights.model_digest(model)
    assert train_module.check_ranks_agree(model, SimpleNamespace(world=1, main=True), tmp_path) == [digest]
    others = iter([[digest, digest], [digest, "0" * 64], [digest, digest]])

    def gather(out, _):
        out[:] = next(others)

    monkeypatch.setattr(train_module.dist, "all_gather_object", gather)
    two = SimpleNamespace(world=2, main=True)
    assert train_module.check_ranks_agree(model, two, tmp_path) == [digest, digest]
    assert json.loads((tmp_path / "ranks.json").read_text()) == {"world_size": 2, "digests": [digest, digest]}
    with pytest.raises(RuntimeError, match="DDP ranks diverged"):
        train_module.check_ranks_agree(model, two, tmp_path)
    assert json.loads((tmp_path / "ranks.json").read_text())["digests"][1] == "0" * 64
    before = (tmp_path / "ranks.json").read_text()
    disk_full_when_replacing(monkeypatch, "ranks.json")
    with pytest.raises(OSError, match="No space left on device"):
        train_module.check_ranks_agree(model, two, tmp_path)
    assert (tmp_path / "ranks.json").read_text() == before and [p.name for p in tmp_path.iterdir()] == ["ranks.json"]


def test_learning_rate_warms_up_then_decays():
    assert lr_factor(0, 10, 100) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100) < lr_factor(20, 10, 100) < 1.0
    assert lr_factor(100, 10, 100) == pytest.approx(0.01)


def _documented_lr(step: int, peak: float, warmup: int, total: int) -> float:
    """docs/training.md, written out: linear warm-up over ``warmup`` steps, then cosine to 1 %."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup))))


def _rates(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
           steps: int) -> list[float]:
    """The learning rate each of ``steps`` optimiser steps takes, the scheduler stepped after each."""
    taken = []
    for _ in range(steps):
        taken.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return taken


def test_lr_schedule_is_the_documented_warm_up_and_cosine_at_every_step():
    """The torch scheduler gives what the hand-set schedule gave, to the bit (so a run trains
    the same weights), and what docs/training.md says at warm-up start and end, mid-decay and
    the last step."""
    peak, warmup, total = 1e-3, 10, 100
    optimizer = torch.optim.AdamW(torch.nn.Linear(2, 1).parameters(), lr=peak)
    taken = _rates(optimizer, lr_schedule(optimizer, peak, warmup, total), total)
    assert taken == [peak * lr_factor(step, warmup, total) for step in range(total)]
    for step in (0, warmup - 1, warmup, 55, total - 1):
        assert taken[step] == pytest.approx(_documented_lr(step, peak, warmup, total), rel=1e-12), step
    assert taken[0] == pytest.approx(peak / warmup) and taken[warmup - 1] == pytest.approx(peak)
    assert taken[55] == pytest.approx(peak * 0.505) and taken[-1] == pytest.approx(peak * 0.0103, rel=1e-2)


def test_lr_schedule_resumed_at_a_step_goes_on_where_the_run_stopped(tmp_path):
    """--resume rebuilds the schedule from the checkpoint's step count and the run's own --lr,
    also from an optimiser state saved before there was a scheduler (no ``initial_lr``)."""
    peak, warmup, total, stop = 1e-3, 10, 100, 37
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=peak)
    scheduler = lr_schedule(optimizer, peak, warmup, total)
    unbroken = _rates(optimizer, scheduler, stop)
    save_state({"optimizer": optimizer.state_dict()}, tmp_path / "c.safetensors")
    unbroken += _rates(optimizer, scheduler, total - stop)
    for drop_initial_lr in (False, True):
        saved = load_state(tmp_path / "c.safetensors")["optimizer"]
        if drop_initial_lr:
            saved["param_groups"][0].pop("initial_lr")
        again = torch.optim.AdamW(model.parameters(), lr=0.5)
        again.load_state_dict(saved)
        assert _rates(again, lr_schedule(again, peak, warmup, total, stop), total - stop) == unbroken[stop:]
    again = torch.optim.AdamW(model.parameters(), lr=0.5)
    again.load_state_dict(load_state(tmp_path / "c.safetensors")["optimizer"])
    assert _rates(again, lr_schedule(again, 2 * peak, warmup, total, stop), 1) == [2 * unbroken[stop]]


def test_each_optimiser_step_takes_the_scheduled_rate():
    """fgsl.train's step: the update is made at step k's rate (the scheduler moves on after
    the optimiser, not before), and that rate is what metrics.jsonl records."""
    from types import SimpleNamespace

    from torch.optim.swa_utils import AveragedModel

    from fgsl.train import _optimiser_step

    peak, warmup, total = 0.1, 3, 12
    model = torch.nn.Linear(1, 1, bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=peak)  # plain SGD: the update is exactly -lr * grad
    run = SimpleNamespace(model=model, params=list(model.parameters()), optimizer=optimizer, ema=AveragedModel(model),
                          scaler=torch.amp.GradScaler("cuda", enabled=False),
                          scheduler=lr_schedule(optimizer, peak, warmup, total), step=0)
    for step in range(total):
        before = model.weight.detach().clone()
        model.weight.grad = torch.full_like(model.weight, 0.5)  # under the clipping norm of 1
        recorded = _optimiser_step(run)
        expected = peak * lr_factor(step, warmup, total)
        assert recorded == expected and run.step == step + 1
        assert torch.allclose(before - model.weight.detach(), torch.tensor([[0.5 * expected]])), step


def _shards(picks, world):
    return [rank_windows(picks, rank, world) for rank in range(world)]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_ranks_share_an_epochs_windows_disjointly_each_once(world):
    picks = [(i % 3, i) for i in range(12)]
    shards = _shards(picks, world)
    assert all(len(shard) == 12 // world for shard in shards)
    assert sorted(w for shard in shards for w in shard) == sorted(picks)  # every window once, no rank shares one
    if world == 1:
        assert shards[0] == picks  # in the order epoch_windows shuffled them


def test_ranks_pad_an_epoch_that_does_not_divide_by_repeating_windows_on_other_ranks():
    """DDP needs as many batches on every rank: 13 windows over 4 ranks are 4 each, 3 windows
    shown twice, each time on another rank (DistributedSampler, drop_last=False)."""
    picks = [(0, i) for i in range(13)]
    shards = _shards(picks, 4)
    assert [len(shard) for shard in shards] == [4, 4, 4, 4]
    shown = [w for shard in shards for w in shard]
    assert set(shown) == set(picks)
    twice = {w for w in picks if shown.count(w) == 2}
    assert len(twice) == 3 and all(shown.count(w) <= 2 for w in picks)
    assert all(len(set(shard)) == len(shard) for shard in shards)  # never twice on the same rank


def test_an_epochs_shards_depend_on_seed_and_epoch_alone_so_a_resumed_run_takes_the_same_batches():
    """A run resumed at epoch 2 (a new process: other global RNG states, no epochs 0 and 1
    before it) trains on the batches an unbroken run would have, on every rank."""
    cfg = preset("tiny")
    items = [_item([(40, 45, 50, 1), (150, 155, 162, 0)], frames=300) for _ in range(2)]
    torch.manual_seed(0)
    np.random.seed(0)
    unbroken = [_shards(epoch_windows(items, cfg.window_frames, e, 7), 2) for e in range(3)]
    torch.manual_seed(123)
    np.random.seed(123)
    assert _shards(epoch_windows(items, cfg.window_frames, 2, 7), 2) == unbroken[2]
    assert unbroken[1] != unbroken[2] and _shards(epoch_windows(items, cfg.window_frames, 2, 8), 2) != unbroken[2]
    picks = epoch_windows(items, cfg.window_frames, 2, 7)
    assert picks != sorted(picks)  # shuffled, not in video order


def test_the_schedule_counts_every_epochs_own_steps():
    """Epochs differ in window count (background windows that would cut an event are dropped at
    random). The schedule was epoch 0's steps times --epochs, so a run ended before its last
    epoch's final steps when a later epoch had more windows: it must be the steps
    ``_train_epoch`` takes, epoch by epoch (micro-batches of this rank's shard, one optimiser
    step per --accum of them and one at the epoch's end)."""
    cfg = preset("tiny")
    items = [_item([(12, 15, 20, 1), (60, 63, 70, 0), (100, 104, 108, 2)], frames=150) for _ in range(3)]
    counts = [len(epoch_windows(items, cfg.window_frames, e, 0)) for e in range(6)]
    assert len(set(counts)) > 1  # the case at stake
    for batch, world, accum, epochs in [(1, 1, 1, 6), (2, 1, 1, 2), (4, 2, 1, 5), (3, 3, 2, 6), (2, 1, 3, 4)]:
        taken = 0
        for e in range(epochs):
            shard = rank_windows(epoch_windows(items, cfg.window_frames, e, 0), 0, world)
            micro_batches = [shard[i: i + batch] for i in range(0, len(shard), batch)]
            taken += sum(1 for i in range(len(micro_batches)) if (i + 1) % accum == 0 or i + 1 == len(micro_batches))
        args = argparse.Namespace(epochs=epochs, batch=batch, accum=accum, max_steps=None, seed=0)
        assert schedule_steps(items, cfg.window_frames, args, world) == taken
        args.max_steps = taken - 1
        assert schedule_steps(items, cfg.window_frames, args, world) == taken - 1  # --max-steps ends it sooner
        args.max_steps = taken + 5
        assert schedule_steps(items, cfg.window_frames, args, world) == taken


def test_training_state_round_trips_without_pickles(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    save_state({"optimizer": opt.state_dict(), "epoch": 3, "best": [0.5, 0.25], "rng": torch.get_rng_state()},
               tmp_path / "c.safetensors")
    state = load_state(tmp_path / "c.safetensors")
    again = torch.optim.AdamW(model.parameters())
    again.load_state_dict(state["optimizer"])
    assert torch.equal(again.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert state["epoch"] == 3 and state["best"] == [0.5, 0.25]
    # A numpy generator's state (128-bit ints), as a mid-epoch checkpoint keeps it, goes on drawing the same.
    rng = np.random.default_rng([7, 1, 0])
    rng.random(5)
    save_state({"rng": rng.bit_generator.state}, tmp_path / "r.safetensors")
    again = np.random.default_rng()
    again.bit_generator.state = load_state(tmp_path / "r.safetensors")["rng"]
    assert again.bit_generator.state == rng.bit_generator.state and again.random(3).tolist() == rng.random(3).tolist()
    (tmp_path / "c.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointStateError, match="corrupt"):
        load_state(tmp_path / "c.safetensors")


@pytest.fixture(scope="module")
def face_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faces")
    shutil.copy(shared_video("pyfeat_single_face.mp4"), folder)
    return folder


SMALL = ["--preset", "tiny", "--synthetic-count", "2", "--synthetic-frames", "48", "--batch", "4", "--quiet"]


def _train(*args, launcher=(sys.executable, "-m", "fgsl.train"), timeout: float = 600):
    return subprocess.run([*launcher, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("best,said", [([0.0, 0.0], True), ([0.25, 0.1], False), (None, False)])
def test_weights_no_validation_chose_are_said_to_be_unchosen(tmp_path, capsys, best, said):
    """Spotting F1 0 in every epoch at every threshold: the first epoch and the sweep's first
    threshold are kept by default, which fgsl.tune would refuse; training says so. A run that
    found something (or had no validation) says nothing."""
    from types import SimpleNamespace

    from fgsl.model import build
    from fgsl.train import say_nothing_chosen

    weights.save(build(preset("tiny"), seed=0), tmp_path, trained=True, score_threshold=0.7,
                 info={"epoch": 0, "validation": {"threshold": 0.7, "spotting_f1": 0.0}})
    say_nothing_chosen(SimpleNamespace(best=best, out=tmp_path))
    err = capsys.readouterr().err
    assert (err == "warning: no validation found a single movement (spotting F1 0 in every epoch, at every threshold): "
                   "the weights kept (epoch 0) and their score threshold 0.7 were not chosen by anything; train longer "
                   "or on more data, or choose the threshold with python -m fgsl.tune on other validation videos\n"
            ) if said else err == "", err


def test_train_cli_writes_weights_metrics_checkpoint_and_resumes(tmp_path, face_dir):
    out = tmp_path / "run"
    first = _train(*SMALL, "--data", f"synthetic={face_dir}", "--out", str(out), "--epochs", "2")
    assert first.returncode == 0, first.stderr
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs, final = lines[:-1], lines[-1]
    assert [r["epoch"] for r in epochs] == [0, 1]
    assert all({"loss", "cls", "reg", "lr", "windows_per_s", "validation"} <= set(r) for r in epochs)
    assert all(r["validation"]["threshold"] in tune.DEFAULT_THRESHOLDS for r in epochs)
    # The saved weights are the best validation epoch, with that epoch's threshold.
    saved = [r for r in epochs if r.get("saved_best")][-1]
    assert weights.info(out)["epoch"] == saved["epoch"]
    assert FGSLConfig.load(out / "config.json").score_threshold == saved["validation"]["threshold"]
    # The test set is scored once, at the end, on those weights.
    assert final["final"] and final["epoch"] == saved["epoch"] and {"megc", "strict"} <= set(final["held_out"])
    assert final["score_threshold"] == saved["validation"]["threshold"]
    # Said when no epoch's validation found a movement: then nothing chose those weights or that threshold.
    unchosen = all(r["validation"]["spotting_f1"] == 0 for r in epochs)
    assert ("warning: no validation found a single movement" in first.stderr) == unchosen, first.stderr
    assert sorted(p.name for p in (out / "data").iterdir()) == ["test", "train", "val"]
    assert weights.is_trained(out) and "synthetic" in weights.info(out)["data"]
    assert weights.info(out)["crops"] == "centre"  # what the live spotter checks against its aligned crops
    assert engines.open(out).describe()["preset"] == "tiny"
    state = load_state(out / "checkpoint.safetensors")
    assert state["epoch"] == 1 and (state["batch"], state["accum"], state["processes"]) == (4, 1, 1)
    again = _train(*SMALL, "--data", f"synthetic={face_dir}", "--out", str(out), "--epochs", "3")
    assert again.returncode == 2 and again.stderr.strip().splitlines()[-1] == (
        f"error: --out {out} holds a run (model.safetensors, checkpoint.safetensors, metrics.jsonl): "
        "pass --resume to continue it, or another folder")

    resumed = _train(*SMALL, "--data", f"synthetic={face_dir}", "--out", str(out), "--epochs", "3", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    lines = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if not r.get("final")]
    assert [r["epoch"] for r in lines] == [0, 1, 2] and lines[2]["step"] > lines[1]["step"]
    # The schedule goes on from the checkpoint's step (3 epochs' schedule now), not from step 0.
    from fgsl.data.spec import load_folder

    cfg = preset("tiny")
    per_epoch = math.ceil(len(epoch_windows(load_folder(cfg, out / "data" / "train")[0], cfg.window_frames, 0, 0)) / 4)
    total = 3 * per_epoch
    assert lines[2]["lr"] == pytest.approx(1e-3 * lr_factor(lines[2]["step"] - 1, max(1, min(100, total // 10 or 1)), total))
    done = _train(*SMALL, "--data", f"synthetic={face_dir}", "--out", str(out), "--epochs", "3", "--resume")
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].endswith(
        "and its held-out test is scored (" + str(out / "metrics.jsonl") + "): nothing left to do"), done.stderr
    # A run that stopped after its last checkpoint but before scoring is resumed only to be scored.
    kept = [line for line in (out / "metrics.jsonl").read_text().splitlines() if not json.loads(line).get("final")]
    (out / "metrics.jsonl").write_text("\n".join(kept) + "\n")
    scored = _train(*SMALL, "--data", f"synthetic={face_dir}", "--out", str(out), "--epochs", "3", "--resume")
    assert scored.returncode == 0, scored.stderr
    assert "nothing left to train, scoring the held-out test only" in scored.stderr and "held-out test (epoch" in scored.stderr
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert rows[:len(kept)] == kept and json.loads(rows[-1])["final"] is True and len(rows) == len(kept) + 1
    # Resumed with other data flags or other face videos, it would train, choose epochs and
    # score on other sets than it started with.
    made = (out / "data" / "test" / "synthetic.json").read_text()
    other = face_dir.parent / "other_faces"
    other.mkdir()
    shutil.copy(shared_video("liveportrait_d13_talking_portrait.mp4"), other)
    for changed in (["--data", f"synthetic={face_dir}", "--amplitude", "6"], ["--data", f"synthetic={other}"]):
        refused = _train(*SMALL, *changed, "--out", str(out), "--epochs", "4", "--resume")
        assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith(
            f"error: --resume: {out / 'data' / 'train'} was made from other videos or data flags"), refused.stderr
    assert (out / "data" / "test" / "synthetic.json").read_text() == made


def test_resume_refuses_a_run_that_lost_its_weights(tmp_path, face_dir, capsys):
    """model.safetensors deleted, then --resume: the best epoch's weights are saved only when an
    epoch beats them, so the run ended "done" (exit 0) with no weights at all."""
    flags = [*SMALL[2:], "--data", f"synthetic={face_dir}", "--out", str(tmp_path / "run")]
    assert main(["--preset", "tiny", *flags, "--epochs", "1"]) == 0
    (tmp_path / "run" / "model.safetensors").unlink()
    capsys.readouterr()
    assert main(["--preset", "tiny", *flags, "--epochs", "2", "--resume"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: --resume: {tmp_path / 'run'} has lost model.safetensors (the best epoch's weights, which the rest of "
        "the run only replaces when an epoch beats them): put them back, or train in a new folder")


def test_a_damaged_checkpoint_is_refused_on_resume(tmp_path, face_dir, capsys):
    """Flipped bits in its tensors were resumed from (the run later "diverged", blaming the
    learning rate); a tensor of another shape was torch's size-mismatch traceback."""
    from fgsl.checkpoint import save_state

    flags = [*SMALL[2:], "--data", f"synthetic={face_dir}", "--out", str(tmp_path / "run")]
    assert main(["--preset", "tiny", *flags, "--epochs", "1"]) == 0
    path = tmp_path / "run" / "checkpoint.safetensors"
    whole = path.read_bytes()
    path.write_bytes(whole[:-100] + bytes([whole[-100] ^ 0xFF]) + whole[-99:])  # inside the tensor data
    capsys.readouterr()
    assert main(["--preset", "tiny", *flags, "--epochs", "2", "--resume"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {path}: corrupt (tensor checksum does not match the one written at save time)")
    path.write_bytes(whole)
    state = load_state(path)
    name = next(iter(state["model"]))
    state["model"][name] = torch.zeros(3, 3)  # written whole, by other code: its own checksum matches
    save_state(state, path)
    assert main(["--preset", "tiny", *flags, "--epochs", "2", "--resume"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"error: --resume: {path} does not fit this model (") and "size mismatch" in last, last


def test_train_cli_errors_are_one_line(tmp_path):
    (tmp_path / "made").mkdir()
    (tmp_path / "made" / "synthetic.json").write_text('{"recipe": {}}')
    (tmp_path / "fake.mp4").write_text("not a video")
    for args, words in [
        (["--data", "imagenet", "--out", str(tmp_path / "a")], "kind must be one of"),
        (["--data", "casme2", "--out", str(tmp_path / "b")], "needs a file"),
        (["--data", "table=" + str(tmp_path / "none.csv"), "--video-root", str(tmp_path), "--out", str(tmp_path / "c")],
         "annotation file not found"),
        (["--out", str(tmp_path / "d"), "--resume"], "does not exist"),
        (["--out", str(tmp_path / "e"), "--epochs", "100001"], "argument --epochs: must be at most 100000"),
        (["--out", str(tmp_path / "e2"), "--data", "synthetic="], "nothing after '=' (an unset shell variable?)"),
        (["--out", str(tmp_path / "f"), "--val", "loso:1"], "--val for synthetic data is auto"),
        (["--out", str(tmp_path / "g"), "--data", f"synthetic={tmp_path / 'made'}"],
         "that is a set fgsl.data.synthetic made, not a folder of source face videos"),
        (["--out", str(tmp_path / "h"), "--backbone", str(tmp_path / "made" / "synthetic.json")], "synthetic.json"),
        (["--out", str(tmp_path / "i"), "--data", f"synthetic={tmp_path / 'fake.mp4'}"], "fake.mp4"),
        (["--out", str(tmp_path / "j"), "--video-root", str(tmp_path)],  # was ignored without a word
         "--video-root is where annotated data's videos are; synthetic data is made from the --data videos"),
    ]:
        run = _train("--preset", "tiny", *args)
        assert run.returncode == 2, run.stderr
        assert run.stderr.strip().splitlines()[-1].startswith("error: ") and words in run.stderr
        assert "Traceback" not in run.stderr
        out = Path(args[args.index("--out") + 1])
        assert not out.exists(), f"{args}: a refused run left {out}"  # refused before the folder is made


@pytest.mark.slow
def test_torchrun_ddp_on_cpu_keeps_both_ranks_identical(tmp_path, face_dir):
    out = tmp_path / "ddp"
    run = _train(*SMALL, "--data", f"synthetic={face_dir}", "--out", str(out), "--epochs", "20", "--max-steps", "5",
                 launcher=(*TWO_CPU_RANKS, "-m", "fgsl.train"))
    assert run.returncode == 0, run.stderr
    ranks = json.loads((out / "ranks.json").read_text())
    assert ranks["world_size"] == 2 and len(ranks["digests"]) == 2
    assert ranks["digests"][0] == ranks["digests"][1]
    assert load_state(out / "checkpoint.safetensors")["step"] == 5


@pytest.mark.slow
@pytest.mark.timeout(1500)  # about 3 min on 2 idle cores; several times that on a busy machine
def test_tiny_learns_synthetic_micro_expressions_end_to_end(tmp_path):
    """The acceptance pipeline at a smaller budget: train, then fgsl.infer + fgsl.evaluate on
    held-out synthetic videos. The full run (docs/benchmarks.md) reaches far more; this
    budget (about 3 minutes of training on 2 cores) must already spot a fair share."""
    out = tmp_path / "run"
    run = _train("--preset", "tiny", "--data", f"synthetic={SHARED_DATA}", "--out", str(out), "--synthetic-count", "16",
                 "--epochs", "100", "--max-steps", "6000", "--eval-every", "1000", "--quiet",
                 timeout=1400)  # within the test's own 1500 s: a busy machine took 18 min to train this
    assert run.returncode == 0, run.stderr
    videos = sorted(str(p) for p in (out / "data" / "test" / "videos").iterdir())
    pred = tmp_path / "pred.csv"
    truth = out / "data" / "test" / "annotations.csv"
    infer = subprocess.run([sys.executable, "-m", "fgsl.infer", "--weights", str(out), "--videos", *videos,
                            "--subjects-from", str(truth), "--out", str(pred), "--quiet"], capture_output=True, text=True)
    assert infer.returncode == 0, infer.stderr
    scored = subprocess.run([sys.executable, "-m", "fgsl.evaluate", "--gt", str(truth),
                             "--pred", str(pred), "--json"], capture_output=True, text=True)
    assert scored.returncode == 0, scored.stderr
    strict = json.loads(scored.stdout)["strict"]
    assert strict["spotting"]["f1"] >= 0.3, strict
    assert strict["strs"] >= 0.15, strict


def _cli_error(capsys, *argv: str) -> str:
    """fgsl.train's CLI in this process: exit status 2, no traceback; its last stderr line."""
    try:
        code = main(["--preset", "tiny", *argv])
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("flag, value, words", [
    ("--lr", "nan", "argument --lr: must be a finite number"),
    ("--lr", "-1", "argument --lr: must be from 1e-09 to 1, got '-1'"),
    ("--lr", "1e308", "argument --lr: must be from 1e-09 to 1, got '1e308'"),  # saved NaN weights as trained
    ("--weight-decay", "nan", "argument --weight-decay: must be a finite number"),
    ("--ema", "nan", "argument --ema: must be a finite number"),
    ("--ema", "1.5", "error: --ema must be below 1"),
    ("--warmup", "-5", "error: argument --warmup: must be at least 0, got '-5'"),
    ("--max-minutes", "nan", "argument --max-minutes: must be a finite number"),
    ("--max-minutes", "0", "argument --max-minutes: must be a positive number"),
    ("--max-steps", "-1", "error: argument --max-steps: must be at least 1, got '-1'"),
    ("--checkpoint-every", "-1", "error: argument --checkpoint-every: must be at least 0, got '-1'"),
    ("--synthetic-frames", "5", "error: argument --synthetic-frames: must be at least 15, got '5'"),
    ("--batch", "0", "error: argument --batch: must be at least 1, got '0'"),
    ("--epochs", "1.5", "error: argument --epochs: must be a whole number, got '1.5'"),
    ("--seed", "-1", "error: argument --seed: must be at least 0, got '-1'"),  # a traceback from numpy
    ("--seed", str(2**80), f"error: argument --seed: must be at most {2**32 - 1}, got '{2**80}'"),  # from torch
    ("--synthetic-frames", "100000", "error: argument --synthetic-frames: must be at most 3000, got '100000'"),
    ("--amplitude", "inf", "argument --amplitude: must be a finite number"),
])
def test_train_cli_refuses_numbers_that_cannot_train(capsys, tmp_path, flag, value, words):
    assert words in _cli_error(capsys, "--out", str(tmp_path / "run"), flag, value)
    assert not (tmp_path / "run").exists()


def test_samm_training_names_or_takes_its_micro_sheet(capsys, tmp_path):
    """fgsl.data.datasets refuses several candidate SAMM micro sheets and asks for
    --micro-sheet, which fgsl.train lacked: a run on such a layout could not choose one."""
    from tests.fixtures.datasets import make_fixtures as fx

    (tmp_path / "SAMMLV").mkdir()
    long = Path(shutil.copy(fx.SAMM_LONG_FILE, tmp_path / "SAMMLV" / "long.xlsx"))
    for folder in ("SAMM", "A_old"):
        (tmp_path / folder).mkdir()
        shutil.copy(fx.SAMM_MICRO_FILE, tmp_path / folder / "SAMM_Micro_FACS_Codes_v2.xlsx")
    data = ["--data", f"samm={long}", "--video-root", str(tmp_path / "videos"), "--out", str(tmp_path / "run")]
    assert _cli_error(capsys, *data).startswith(f"error: {long}: several SAMM micro-expression sheets (emotions)")
    chosen = tmp_path / "SAMM" / "SAMM_Micro_FACS_Codes_v2.xlsx"
    # Given, the sheet is read (and the run goes on to look for the videos, which this test has none of).
    assert _cli_error(capsys, *data, "--micro-sheet", str(chosen)).startswith("error: video 006/006_1 not found")
    shutil.rmtree(tmp_path / "A_old")  # one candidate left: taken, and named
    assert main(["--preset", "tiny", *data]) == 2
    assert (f"micro-expression sheet (emotions): {chosen} (found beside {long}; --micro-sheet to choose)"
            in capsys.readouterr().err.splitlines())
    assert _cli_error(capsys, "--data", "synthetic", "--micro-sheet", str(chosen), "--out", str(tmp_path / "r2")) == (
        "error: --micro-sheet is SAMM's micro-expression sheet: it applies to --data samm=FILE, not synthetic")
    assert not (tmp_path / "run").exists() and not (tmp_path / "r2").exists()


def test_a_run_whose_weights_stop_being_numbers_stops_with_one_line_and_saves_nothing(capsys, tmp_path, face_dir,
                                                                                     monkeypatch):
    """A learning rate far too high (here the schedule's factor) makes the weights inf/NaN:
    they were saved as trained weights (exit 0), on which inference silently found nothing."""
    import fgsl.train as train_module

    monkeypatch.setattr(train_module, "lr_factor", lambda *args, **kwargs: 1e30)
    line = _cli_error(capsys, *SMALL[2:], "--data", f"synthetic={face_dir}", "--out", str(tmp_path / "run"),
                      "--epochs", "1", "--val", "none")
    assert line.startswith("error: training diverged in epoch 0 (step ") and line.endswith("Lower --lr (now 0.001)")
    assert not (tmp_path / "run" / weights.WEIGHTS_FILE).exists()


def test_train_cli_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--lr LR peak learning rate (at most 1) (default: 0.001)" in text and "(default: 0.995)" in text
    assert "checked after every optimiser step" in text
    assert "--checkpoint-every N also checkpoint the training state every N optimiser steps within an epoch" in text


def test_train_refuses_a_file_or_a_run_folder_as_out(capsys, tmp_path):
    (tmp_path / "afile").write_text("")
    assert _cli_error(capsys, "--out", str(tmp_path / "afile")) == f"error: --out {tmp_path / 'afile'} is a file: pass a folder for the run"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text("{}\n")
    assert _cli_error(capsys, "--out", str(tmp_path / "run")) == (
        f"error: --out {tmp_path / 'run'} holds a run (metrics.jsonl): pass --resume to continue it, or another folder")
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == "{}\n"


def test_resume_refuses_another_model_or_another_step_size(capsys, tmp_path):
    save_state({"config": preset("tiny").to_dict(), "batch": 4, "accum": 1, "processes": 1}, tmp_path / "checkpoint.safetensors")
    line = _cli_error(capsys, "--out", str(tmp_path), "--resume", "--preset", "realtime")
    assert line.startswith(f"error: --resume: {tmp_path / 'checkpoint.safetensors'} holds a tiny model, which differs "
                           "from --preset realtime in name, ") and "image_size" in line
    assert _cli_error(capsys, "--out", str(tmp_path), "--resume", "--batch", "16") == (
        "error: --resume: the run took 4 windows per optimiser step (--batch 4 x --accum 1 x 1 process(es)), this one 16 "
        "(--batch 16 x --accum 1 x 1): its steps and learning-rate schedule count those; resume with the same")
    # A mid-epoch checkpoint counts each process's own micro-batches: the same windows per step split otherwise is refused.
    save_state({"config": preset("tiny").to_dict(), "batch": 4, "accum": 1, "processes": 1, "epoch": -1,
                "within": {"epoch": 0, "ranks": [{"batches": 2}]}}, tmp_path / "checkpoint.safetensors")
    assert _cli_error(capsys, "--out", str(tmp_path), "--resume", "--batch", "2", "--accum", "2") == (
        f"error: --resume: {tmp_path / 'checkpoint.safetensors'} was written in the middle of epoch 0, which counts each "
        "process's own micro-batches (--batch 4 x --accum 1 x 1 process(es)): resume it with those")
    # ... and its position counts the windows and augmentations of its own seed.
    save_state({"config": preset("tiny").to_dict(), "batch": 4, "accum": 1, "processes": 1, "epoch": -1, "seed": 5,
                "within": {"epoch": 0, "ranks": [{"batches": 2}]}}, tmp_path / "checkpoint.safetensors")
    assert _cli_error(capsys, "--out", str(tmp_path), "--resume", "--batch", "4", "--seed", "6") == (
        f"error: --resume: {tmp_path / 'checkpoint.safetensors'} was written in the middle of epoch 0 of a run with "
        "--seed 5, whose windows and augmentations its position counts: resume it with that seed")
    # A run on annotated data resumed with another split would train on its own test subjects.
    table = tmp_path / "gt.csv"
    table.write_text("subject,video,onset,offset,emotion\n")
    data = {"kind": "table", "file": str(table.resolve()), "video_root": str(tmp_path.resolve()), "split": "loso:0",
            "val": "auto", "skip_bad_rows": False}
    save_state({"config": preset("tiny").to_dict(), "batch": 8, "accum": 1, "processes": 1, "epoch": 0, "data": data},
               tmp_path / "checkpoint.safetensors")
    line = _cli_error(capsys, "--out", str(tmp_path), "--resume", "--data", f"table={table}", "--video-root",
                      str(tmp_path), "--split", "loso:1")
    assert line == ("error: --resume: the run was trained on other data (split 'loso:0' -> 'loso:1'): its subject "
                    "split, validation and test set would change; resume with the run's own data flags")
    # ... or read its videos framed otherwise (--align-faces: aligned face crops instead of centre crops).
    line = _cli_error(capsys, "--out", str(tmp_path), "--resume", "--data", f"table={table}", "--video-root",
                      str(tmp_path), "--split", "loso:0", "--align-faces")
    assert line == ("error: --resume: the run was trained on other data (crops 'centre' -> 'aligned'): the crops its "
                    "weights learned would change; resume with the run's own data flags")


def test_synthetic_data_can_come_from_one_video_file(tmp_path):
    """``--data synthetic=<one face video>`` (docs/training.md) as well as a folder of them."""
    video = shared_video("pyfeat_single_face.mp4")
    args = argparse.Namespace(data=f"synthetic={video}", align_faces=False, split=None, val="none", synthetic_count=1, resume=False,
                              synthetic_frames=32, amplitude=12.0, seed=0, quiet=True, micro_sheet=None, video_root=None)
    env = argparse.Namespace(main=True, barrier=lambda: None)
    data = prepare_data(preset("tiny"), args, tmp_path, env)
    assert [item.name for item in data.train] == ["pyfeat_single_face_train000"]
    assert [item.name for item in data.held_out] == ["pyfeat_single_face_test000"] and not data.val
    assert f"synthetic from {video}" in data.description



def test_held_out_scored_only_when_the_last_epoch_has_its_final_line(tmp_path):
    """A run scored, resumed to train further and stopped before scoring again is not "scored":
    its earlier final line is for other weights."""
    from fgsl.train import held_out_scored

    metrics = tmp_path / "metrics.jsonl"
    assert not held_out_scored(tmp_path)
    epoch = lambda n: json.dumps({"epoch": n, "step": 10 * n})  # noqa: E731
    final = json.dumps({"final": True, "epoch": 1, "held_out": {}})
    for lines, scored in (([epoch(0), epoch(1)], False), ([epoch(0), epoch(1), final], True),
                          ([epoch(0), epoch(1), final, epoch(2)], False),
                          ([epoch(0), epoch(1), final, epoch(2), final, '{"final": tr'], True)):
        metrics.write_text("\n".join(lines) + "\n")
        assert held_out_scored(tmp_path) is scored, lines


def _records(run):
    """metrics.jsonl without its timings (windows_per_s, elapsed_s)."""
    import fgsl.train as train_module

    timing = ("windows_per_s", "elapsed_s")
    return [{k: v for k, v in json.loads(line).items() if k not in timing}
            for line in (run / train_module.METRICS).read_text().splitlines()]


def _assert_same_training_state(a, b):
    """Two runs' final checkpoints hold the same weights, EMA, AdamW state, steps and normalisers, to the bit."""
    ends = [load_state(run / "checkpoint.safetensors") for run in (a, b)]
    assert ends[0]["step"] == ends[1]["step"] > 0
    for key in ("model", "ema"):
        assert ends[0][key].keys() == ends[1][key].keys()
        assert all(torch.equal(ends[0][key][k], ends[1][key][k]) for k in ends[0][key]), key
    assert ends[0]["optimizer"]["state"].keys() == ends[1]["optimizer"]["state"].keys()
    for k, state in ends[0]["optimizer"]["state"].items():
        assert all(torch.equal(state[name], ends[1]["optimizer"]["state"][k][name]) for name in state), k
    assert ends[0]["normalisers"] == ends[1]["normalisers"] and ends[0]["within"] is ends[1]["within"] is None


def _stop_after_first_epoch(monkeypatch):
    """Make fgsl.train stop as Ctrl-C would right after epoch 0's checkpoint (exit 130)."""
    import fgsl.train as train_module

    real = train_module._train_epoch

    def train_epoch(run, epoch, *rest):
        if epoch == 1:
            raise KeyboardInterrupt
        return real(run, epoch, *rest)

    monkeypatch.setattr(train_module, "_train_epoch", train_epoch)


def test_a_resumed_run_trains_the_weights_and_metrics_of_an_unbroken_one_bit_for_bit(tmp_path, face_dir, monkeypatch):
    """A run stopped after its first epoch and resumed with ``--resume`` draws the windows, the
    augmentations (flips, shifts, gain) and the loss normaliser the unbroken run drew: same
    weights to the bit, same epoch records (timings aside), same epoch and threshold chosen."""
    flags = [*SMALL[2:], "--data", f"synthetic={face_dir}", "--epochs", "2"]
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    assert main(["--preset", "tiny", *flags, "--out", str(unbroken)]) == 0
    shutil.copytree(unbroken / "data", broken / "data")  # the same synthetic sets, not made again
    with monkeypatch.context() as patch:
        _stop_after_first_epoch(patch)
        assert main(["--preset", "tiny", *flags, "--out", str(broken)]) == 130
    assert load_state(broken / "checkpoint.safetensors")["epoch"] == 0
    assert main(["--preset", "tiny", *flags, "--out", str(broken), "--resume"]) == 0

    # (Not the files' bytes: safetensors writes its header's keys in hash-map order.)
    assert weights.read_metadata(broken) == weights.read_metadata(unbroken)  # info and the weights' sha256
    assert (broken / weights.CONFIG_FILE).read_text() == (unbroken / weights.CONFIG_FILE).read_text()
    # The saved weights may be an earlier epoch's (the best validation one); the checkpoint has the last.
    _assert_same_training_state(unbroken, broken)
    assert load_state(unbroken / "checkpoint.safetensors")["best"] == load_state(broken / "checkpoint.safetensors")["best"]
    ends = [load_state(run / "checkpoint.safetensors") for run in (unbroken, broken)]
    assert ends[0]["normaliser"] == ends[1]["normaliser"]
    assert ends[0]["normalisers"] == [ends[0]["normaliser"]]  # one process: its own
    assert [(r["epoch"], r.get("final", False)) for r in _records(unbroken)][:2] == [(0, False), (1, False)]
    assert _records(unbroken)[2]["final"] and len(_records(unbroken)) == 3
    assert _records(broken) == _records(unbroken)


def _stop_after_a_checkpoint_within(monkeypatch, epoch):
    """Make fgsl.train stop as Ctrl-C would right after its first mid-epoch checkpoint in ``epoch``."""
    import fgsl.train as train_module

    real = train_module._checkpoint_within

    def checkpoint_within(run, at, position):
        real(run, at, position)
        if at == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_checkpoint_within", checkpoint_within)


@pytest.mark.parametrize("accum", [1, 2])
def test_a_run_resumed_mid_epoch_trains_the_weights_and_metrics_of_an_unbroken_one_bit_for_bit(tmp_path, face_dir,
                                                                                                monkeypatch, accum):
    """``--checkpoint-every`` (2 steps; 1 with ``--accum 2``), stopped right after a mid-epoch checkpoint in epoch 0 and
    again in epoch 1, each time resumed: the batches already trained are skipped, the
    augmentation generator, the running loss sums and the normaliser go on from the
    checkpoint, so the weights, the final training state and the metrics lines (timings aside)
    are those of an unbroken run without the flag. With ``--accum 2`` a checkpoint comes only
    after an optimiser step, never between the micro-batches of one."""
    flags = [*SMALL[2:], "--data", f"synthetic={face_dir}", "--epochs", "2", "--accum", str(accum)]
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    assert main(["--preset", "tiny", *flags, "--out", str(unbroken)]) == 0
    per_epoch, every = _records(unbroken)[0]["step"], 2 // accum
    assert per_epoch > every  # room for a checkpoint inside each epoch
    shutil.copytree(unbroken / "data", broken / "data")
    for epoch, resume in ((0, []), (1, ["--resume"])):
        with monkeypatch.context() as patch:
            _stop_after_a_checkpoint_within(patch, epoch)
            assert main(["--preset", "tiny", *flags, "--checkpoint-every", str(every), "--out", str(broken), *resume]) == 130
        state = load_state(broken / "checkpoint.safetensors")
        assert state["epoch"] == epoch - 1 and state["within"]["epoch"] == epoch and state["step"] % every == 0
        (position,) = state["within"]["ranks"]
        assert 0 < position["batches"] and position["seen"] == 4 * position["batches"]  # --batch 4
        assert position["batches"] % accum == 0  # right after a step: no gradients pending
        assert state["step"] == epoch * per_epoch + position["batches"] // accum
        # A mid-epoch checkpoint writes no metrics line and no weights for inference (epoch 0's are the last saved).
        assert (epoch == 0 and not (broken / "metrics.jsonl").exists()) or [r["epoch"] for r in _records(broken)] == [0]
        assert (broken / weights.WEIGHTS_FILE).exists() == (epoch == 1)
    assert main(["--preset", "tiny", *flags, "--checkpoint-every", str(every), "--out", str(broken), "--resume"]) == 0

    assert weights.read_metadata(broken) == weights.read_metadata(unbroken)  # info and the weights' sha256
    assert (broken / weights.CONFIG_FILE).read_text() == (unbroken / weights.CONFIG_FILE).read_text()
    _assert_same_training_state(unbroken, broken)
    assert load_state(unbroken / "checkpoint.safetensors")["best"] == load_state(broken / "checkpoint.safetensors")["best"]
    assert len(_records(unbroken)) == 3 and _records(broken) == _records(unbroken)


def test_an_epoch_cut_short_by_max_minutes_is_saved_and_resumed_where_it_stopped(tmp_path, face_dir, monkeypatch):
    """``--max-minutes`` running out mid-epoch: that epoch is validated and saved (a metrics
    line with ``stopped_after_batch``, the held-out test scored), and its checkpoint keeps where
    it stopped, so ``--resume`` trains the rest of the epoch rather than skip it: the training
    state ends as the unbroken run's. (The budget is simulated: it runs out at step 2.)"""
    import fgsl.train as train_module

    flags = [*SMALL[2:], "--data", f"synthetic={face_dir}", "--epochs", "2"]
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    assert main(["--preset", "tiny", *flags, "--out", str(unbroken)]) == 0
    shutil.copytree(unbroken / "data", broken / "data")
    with monkeypatch.context() as patch:
        patch.setattr(train_module._Run, "out_of_budget", lambda run: run.step >= 2)
        assert main(["--preset", "tiny", *flags, "--max-minutes", "600", "--out", str(broken)]) == 0
    state = load_state(broken / "checkpoint.safetensors")
    assert (state["epoch"], state["step"], state["within"]["epoch"], state["within"]["ranks"][0]["batches"]) == (-1, 2, 0, 2)
    cut, final = _records(broken)
    assert (cut["epoch"], cut["step"], cut["stopped_after_batch"], final["final"]) == (0, 2, 2, True)
    assert weights.info(broken)["epoch"] == 0
    assert main(["--preset", "tiny", *flags, "--max-minutes", "600", "--out", str(broken), "--resume"]) == 0
    _assert_same_training_state(unbroken, broken)
    losses = ("epoch", "step", "lr", "loss", "cls", "reg")
    assert [{k: r[k] for k in losses} for r in _records(broken)[2:4]] == [{k: r[k] for k in losses} for r in _records(unbroken)[:2]]


STOP_AFTER_FIRST_EPOCH = """\
import sys
sys.path.insert(0, {root!r})
import fgsl.train as train
real = train._train_epoch

def train_epoch(run, epoch, *rest):
    if epoch == 1:
        raise KeyboardInterrupt  # as Ctrl-C right after epoch 0's checkpoint
    return real(run, epoch, *rest)

train._train_epoch = train_epoch
sys.exit(train.main())
"""


@pytest.mark.slow
def test_a_resumed_ddp_run_trains_the_weights_of_an_unbroken_one_bit_for_bit(tmp_path, face_dir):
    """Under torchrun each rank resumes with its own loss normaliser (it follows the rank's own
    shard) and draws its own augmentations again: the weights are those of the unbroken run."""
    stop = tmp_path / "stop_after_first_epoch.py"
    stop.write_text(STOP_AFTER_FIRST_EPOCH.format(root=str(Path(__file__).resolve().parents[1])))
    flags = [*SMALL, "--data", f"synthetic={face_dir}", "--epochs", "2", "--val", "none"]
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    first = _train(*flags, "--out", str(unbroken), launcher=(*TWO_CPU_RANKS, "-m", "fgsl.train"))
    assert first.returncode == 0, first.stderr
    shutil.copytree(unbroken / "data", broken / "data")
    cut = _train(*flags, "--out", str(broken), launcher=(*TWO_CPU_RANKS, str(stop)))
    assert cut.returncode != 0 and "interrupted" in cut.stderr, cut.stderr
    state = load_state(broken / "checkpoint.safetensors")
    assert state["epoch"] == 0 and len(set(state["normalisers"])) == 2  # the ranks' normalisers differ
    resumed = _train(*flags, "--out", str(broken), "--resume", launcher=(*TWO_CPU_RANKS, "-m", "fgsl.train"))
    assert resumed.returncode == 0, resumed.stderr
    assert weights.read_metadata(broken) == weights.read_metadata(unbroken)  # the last epoch's (no validation)
    assert json.loads((broken / "ranks.json").read_text()) == json.loads((unbroken / "ranks.json").read_text())
    ends = [load_state(run / "checkpoint.safetensors") for run in (unbroken, broken)]
    assert ends[0]["normalisers"] == ends[1]["normalisers"] and ends[0]["step"] == ends[1]["step"]


STOP_AFTER_A_CHECKPOINT_WITHIN = """\
import sys
sys.path.insert(0, {root!r})
import fgsl.train as train
real = train._checkpoint_within

def checkpoint_within(run, epoch, position):
    real(run, epoch, position)
    if epoch == 1:
        raise KeyboardInterrupt  # as Ctrl-C right after epoch 1's first mid-epoch checkpoint, on every rank

train._checkpoint_within = checkpoint_within
sys.exit(train.main())
"""


@pytest.mark.slow
def test_a_ddp_run_resumed_mid_epoch_trains_the_weights_of_an_unbroken_one_bit_for_bit(tmp_path, face_dir):
    """Under torchrun each rank checkpoints its own position, generator state and loss sums
    mid-epoch, and resumes from its own: the weights are those of the unbroken run."""
    stop = tmp_path / "stop_after_a_checkpoint_within.py"
    stop.write_text(STOP_AFTER_A_CHECKPOINT_WITHIN.format(root=str(Path(__file__).resolve().parents[1])))
    flags = [*SMALL, "--data", f"synthetic={face_dir}", "--epochs", "2", "--val", "none", "--batch", "2"]
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    first = _train(*flags, "--out", str(unbroken), launcher=(*TWO_CPU_RANKS, "-m", "fgsl.train"))
    assert first.returncode == 0, first.stderr
    shutil.copytree(unbroken / "data", broken / "data")
    cut = _train(*flags, "--checkpoint-every", "1", "--out", str(broken), launcher=(*TWO_CPU_RANKS, str(stop)))
    assert cut.returncode != 0 and "interrupted" in cut.stderr, cut.stderr
    state = load_state(broken / "checkpoint.safetensors")
    assert (state["epoch"], state["within"]["epoch"]) == (0, 1) and len(state["within"]["ranks"]) == 2
    assert state["within"]["ranks"][0]["rng"] != state["within"]["ranks"][1]["rng"]  # each rank its own generator
    resumed = _train(*flags, "--checkpoint-every", "1", "--out", str(broken), "--resume",
                     launcher=(*TWO_CPU_RANKS, "-m", "fgsl.train"))
    assert resumed.returncode == 0, resumed.stderr
    assert "after batch 1 of the epoch" in resumed.stderr
    assert weights.read_metadata(broken) == weights.read_metadata(unbroken)  # the last epoch's (no validation)
    assert json.loads((broken / "ranks.json").read_text()) == json.loads((unbroken / "ranks.json").read_text())
    _assert_same_training_state(unbroken, broken)
    assert _records(broken) == _records(unbroken)


RANK_1_CLOCK_RUNS_FAST = """\
import os
import sys
import time
sys.path.insert(0, {root!r})
if os.environ.get("RANK") == "1":  # this rank's --max-minutes runs out within a second
    real = time.monotonic
    time.monotonic = lambda: real() * 10_000
import fgsl.train as train
sys.exit(train.main())
"""


@pytest.mark.slow
def test_ddp_ranks_stop_for_max_minutes_together_on_rank_0s_clock(tmp_path, face_dir):
    """Each process counts ``--max-minutes`` from its own start: a rank whose minutes ran out
    first left the loop while the other waited at the next all-reduce for ever (torchrun hung).
    Rank 0's clock decides for all: here it has time left, so both train every epoch."""
    script = tmp_path / "rank_1_clock_runs_fast.py"
    script.write_text(RANK_1_CLOCK_RUNS_FAST.format(root=str(Path(__file__).resolve().parents[1])))
    out = tmp_path / "run"
    done = _train(*SMALL, "--data", f"synthetic={face_dir}", "--epochs", "2", "--val", "none", "--max-minutes", "30",
                  "--out", str(out), launcher=(*TWO_CPU_RANKS, str(script)), timeout=300)
    assert done.returncode == 0, done.stderr
    records = [r for r in _records(out) if not r.get("final")]
    assert [r["epoch"] for r in records] == [0, 1] and not any("stopped_after_batch" in r for r in records)


def test_more_torchrun_processes_than_gpus_is_one_line_per_rank_not_cudas_traceback(tmp_path, face_dir, monkeypatch,
                                                                                    capsys):
    """``torchrun --nproc-per-node 2`` on a one-GPU machine: rank 1 asked for ``cuda:1``
    (CUDA's "invalid device ordinal" traceback) while rank 0 waited for it in the process
    group. Every rank refuses now, rank 0 too. A GPU cannot exist here, so torch is told there
    is one; the check comes before anything touches CUDA or the process group."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: pytest.fail(f"set_device({device}) was called"))
    for rank in ("0", "1"):
        for name, value in {"WORLD_SIZE": "2", "RANK": rank, "LOCAL_RANK": rank, "LOCAL_WORLD_SIZE": "2"}.items():
            monkeypatch.setenv(name, value)
        out = tmp_path / f"run{rank}"
        assert main([*SMALL, "--data", f"synthetic={face_dir}", "--out", str(out)]) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            "error: torchrun started 2 processes on this machine and it has 1 visible CUDA device(s): one process per "
            "GPU (--nproc-per-node 1), or none visible (CUDA_VISIBLE_DEVICES=) to train on the CPU")
        assert not out.exists()


@pytest.mark.skipif(__import__("importlib.util").util.find_spec("triton") is not None,
                    reason="triton is installed here: Python prefers it to a folder of that name")
def test_a_folder_named_triton_where_the_command_runs_is_one_line_not_dynamos_traceback(tmp_path, face_dir):
    """``python -m`` imports from the current folder first: a ``triton/`` folder there (a Triton
    model repository) became the triton package, and building the optimiser died in
    torch._dynamo ("module 'triton' has no attribute 'language'", exit 1)."""
    (tmp_path / "triton").mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-m", "fgsl.train", *SMALL, "--data", f"synthetic={face_dir}",
                           "--max-steps", "1", "--val", "none", "--out", "run"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: the folder {tmp_path.resolve() / 'triton'} would be imported as the triton package (it is on Python's "
        "import path, where python -m puts the current folder), which breaks torch's optimiser: run from another "
        "folder, or rename that one"], proc.stderr
    assert not (tmp_path / "run").exists()
