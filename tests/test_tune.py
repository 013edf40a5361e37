"""fgsl.tune: the threshold sweep scores exactly what fgsl.infer + fgsl.evaluate would, and
the chosen threshold is written into the weights' config (tensors untouched)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engines.torch_backend import TorchEngine
from fgsl import weights
from fgsl.config import FGSLConfig, preset
from fgsl.data import crop_cache
from fgsl.data.spec import load_folder
from fgsl.data.synthetic import Recipe, make_set
from fgsl.evaluate import evaluate, read_intervals
from fgsl.infer import main as infer_main
from fgsl.model import build
from fgsl.tune import DEFAULT_THRESHOLDS, best, main as tune_main, nan_as_zero, sweep
from tests.conftest import randomise_adapters, shared_video


def test_sweep_matches_infer_and_evaluate_and_writes_the_best(tmp_path, capsys):
    data = tmp_path / "val"
    make_set([shared_video("pyfeat_single_face.mp4")], data, Recipe(count=2, frames=96, amplitude=12, seed=3),
             progress=False)
    model = build(preset("tiny"), seed=0)
    randomise_adapters(model)
    with torch.no_grad():  # class scores around 0.5 instead of the 0.01 prior: intervals at every threshold
        model.heads.class_out.bias.fill_(0.0)
    weights.save(model, tmp_path / "run", trained=True)
    videos = sorted((data / "videos").glob("*.avi"))
    gt = read_intervals(data / "annotations.csv")
    thresholds = (0.05, 0.2, 0.5)
    items, _ = load_folder(model.cfg, data)
    rows = sweep(TorchEngine(weights.load(tmp_path / "run")), items, gt, thresholds)
    assert sum(r["tp"] + r["fp"] for r in rows) > 0  # the sweep has intervals to judge
    assert [r["threshold"] for r in rows] == list(thresholds)
    # Each row is what the offline CLI + evaluator give at that threshold.
    for row in rows:
        out = tmp_path / f"pred_{row['threshold']}.csv"
        assert infer_main(["--weights", str(tmp_path / "run"), "--backend", "torch", "--videos", *map(str, videos),
                           "--subjects-from", str(data / "annotations.csv"), "--threshold", str(row["threshold"]),
                           "--out", str(out), "--quiet"]) == 0
        result = evaluate(gt, read_intervals(out), mode="strict")
        spotting = result["spotting"]
        assert (row["tp"], row["fp"], row["fn"]) == (spotting["tp"], spotting["fp"], spotting["fn"])
        assert row["strs"] == pytest.approx(result["strs"])
    capsys.readouterr()
    before = weights.load(tmp_path / "run").state_dict()
    assert tune_main(["--weights", str(tmp_path / "run"), "--backend", "torch", "--videos", *map(str, videos),
                      "--gt", str(data / "annotations.csv"), "--thresholds", "0.05,0.2,0.5", "--write"]) == 0
    chosen = best(rows)["threshold"]
    assert FGSLConfig.load(tmp_path / "run" / "config.json").score_threshold == chosen
    after = weights.load(tmp_path / "run").state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the digest still checks out
    assert f"best: {chosen:g}" in capsys.readouterr().out


def test_best_takes_f1_then_strs_then_the_higher_threshold():
    rows = [{"threshold": 0.3, "f1": 0.8, "strs": 0.5}, {"threshold": 0.5, "f1": 0.8, "strs": 0.5},
            {"threshold": 0.4, "f1": 0.7, "strs": 0.7}]
    assert best(rows)["threshold"] == 0.5
    rows[0]["strs"] = 0.6
    assert best(rows)["threshold"] == 0.3


def test_bad_thresholds_are_one_error_line(tmp_path, capsys):
    assert tune_main(["--weights", str(tmp_path), "--videos", "x.avi", "--gt", "gt.csv", "--thresholds", "0.3,2"]) == 2
    assert capsys.readouterr().err.startswith("error: --thresholds")


@pytest.mark.parametrize("batch", ["0", "-2"])
def test_batch_below_one_is_one_error_line(batch, tmp_path, capsys):
    """--batch 0 was a traceback and -2 a sweep over no windows at all: refused by argparse."""
    with pytest.raises(SystemExit) as info:
        tune_main(["--weights", str(tmp_path), "--videos", "x.avi", "--gt", "gt.csv", "--batch", batch])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        f"error: argument --batch: must be at least 1, got '{batch}'")


def test_undefined_scores_count_as_zero_when_choosing():
    """NaN (no true positive to recognise) compares false with everything: max() would keep
    whichever row came first, here the threshold that found nothing."""
    assert nan_as_zero(float("nan")) == 0.0 and nan_as_zero(0.25) == 0.25
    rows = [{"threshold": 0.7, "f1": nan_as_zero(float("nan")), "strs": nan_as_zero(float("nan"))},
            {"threshold": 0.3, "f1": 0.4, "strs": 0.2}]
    assert best(rows)["threshold"] == 0.3


@pytest.fixture(scope="module")
def val_set(tmp_path_factory):
    data = tmp_path_factory.mktemp("val")
    make_set([shared_video("pyfeat_single_face.mp4")], data, Recipe(count=1, frames=64, amplitude=12, seed=3),
             progress=False)
    return data


def _trained_engine_dir(root):
    from engines.export import export_engine_dir

    model = build(preset("tiny"), seed=0)
    randomise_adapters(model)
    with torch.no_grad():  # class scores around 0.5: intervals at every threshold, some on a movement
        model.heads.class_out.bias.fill_(0.0)
    weights.save(model, root / "run", trained=True)
    export_engine_dir(root / "run", root / "engine")
    return root / "engine"


def test_write_on_an_engine_folder_stores_the_threshold_in_its_manifest(val_set, tmp_path, capsys):
    """An engine folder keeps its config in manifest.json; infer and the engines read it there."""
    import json

    import engines

    engine_dir = _trained_engine_dir(tmp_path)
    graphs = {p.name: p.read_bytes() for p in engine_dir.glob("*.onnx")}
    videos = [str(v) for v in sorted((val_set / "videos").glob("*.avi"))]
    assert tune_main(["--weights", str(engine_dir), "--backend", "onnxruntime", "--engine-device", "cpu",
                      "--videos", *videos, "--gt", str(val_set / "annotations.csv"), "--thresholds", "0.05,0.55",
                      "--write"]) == 0
    out = capsys.readouterr()
    chosen = float(out.out.split("best: ")[1].split()[0])
    assert f"to {engine_dir / 'manifest.json'}" in out.err
    assert json.loads((engine_dir / "manifest.json").read_text())["config"]["score_threshold"] == chosen
    assert engines.open(engine_dir).cfg.score_threshold == chosen  # the manifest still verifies
    assert {p.name: p.read_bytes() for p in engine_dir.glob("*.onnx")} == graphs
    assert infer_main(["--weights", str(engine_dir), "--backend", "onnxruntime", "--engine-device", "cpu", "--quiet",
                       "--videos", *videos, "--out", str(tmp_path / "pred.csv")]) == 0
    assert "UNTRAINED" not in capsys.readouterr().err  # the manifest says trained


def test_a_video_given_twice_or_two_of_one_name_are_refused_before_the_sweep(val_set, tmp_path, capsys, monkeypatch):
    """Both copies were scored against the same --gt rows, each other's intervals counting
    as false positives: a threshold chosen on wrong scores, exit 0."""
    import fgsl.tune as tune_mod

    weights.save(build(preset("tiny"), seed=0), tmp_path / "run", trained=True)
    monkeypatch.setattr(tune_mod, "sweep", lambda *a, **k: pytest.fail("the sweep ran"))
    video = next((val_set / "videos").glob("*.avi"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / video.name).symlink_to(video)
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / video.name).write_bytes(video.read_bytes())
    common = ["--weights", str(tmp_path / "run"), "--backend", "torch", "--gt", str(val_set / "annotations.csv")]
    for second, words in ((tmp_path / "other" / video.name, "are one file: its intervals would be scored twice "
                                                             "against the same --gt rows; give it once"),
                          (tmp_path / "copy" / video.name, "so their intervals could not be told apart: rename one")):
        assert tune_main([*common, "--videos", str(video), str(second)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], err
    doubled = tmp_path / "doubled.csv"  # a row copied twice: said (it was dropped with the sweep's evaluations)
    rows = (val_set / "annotations.csv").read_text().splitlines()
    doubled.write_text("\n".join([*rows, rows[-1]]) + "\n")
    assert tune_main([*common[:-1], str(doubled), "--videos", str(video), str(video)]) == 2
    assert capsys.readouterr().err.splitlines()[0] == (f"warning: --gt {doubled}: 1 ground-truth row(s) repeat an "
                                                       "earlier row exactly; each copy counts as an interval of its own")


def test_an_unwritable_folder_is_refused_before_the_sweep(val_set, tmp_path, capsys, monkeypatch):
    import os

    import fgsl.tune as tune_mod

    weights.save(build(preset("tiny"), seed=0), tmp_path / "run", trained=True)
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # (root may write anywhere)
    monkeypatch.setattr(tune_mod, "sweep", lambda *a, **k: pytest.fail("the sweep ran before --write was checked"))
    assert tune_main(["--weights", str(tmp_path / "run"), "--backend", "torch", "--videos",
                      *map(str, (val_set / "videos").glob("*.avi")), "--gt", str(val_set / "annotations.csv"),
                      "--write"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --write: cannot write {tmp_path / 'run' / 'config.json'} (no permission)"]


def test_tune_refuses_videos_its_ground_truth_lacks_untrained_weights_and_a_sweep_that_found_nothing(
        val_set, tmp_path, capsys):
    """Each of these used to write a threshold chosen by the tie-break of an all-zero sweep."""
    videos = [str(v) for v in sorted((val_set / "videos").glob("*.avi"))]
    gt = str(val_set / "annotations.csv")
    other = tmp_path / "other.avi"
    other.write_bytes((val_set / "videos" / videos[0].rsplit("/", 1)[1]).read_bytes())
    model = build(preset("tiny"), seed=0)
    weights.save(model, tmp_path / "run", trained=True)
    assert tune_main(["--weights", str(tmp_path / "run"), "--videos", str(other), "--gt", gt, "--write"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: none of the 1 --videos is in --gt {gt} (videos are matched by name, e.g. 'other'): pass the videos "
        "this ground truth describes"]
    weights.save(model, tmp_path / "random", trained=False)
    assert tune_main(["--weights", str(tmp_path / "random"), "--videos", *videos, "--gt", gt]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'random'}: untrained (random) weights; a threshold for them means nothing, so fgsl.tune "
        "takes trained weights only")
    # Trained weights that find none of the movements: a class bias of -20 puts every score near
    # sigmoid(-20) = 2e-9, far below the default thresholds (0.2-0.7). The real sweep runs on them.
    with torch.no_grad():
        model.heads.class_out.bias.fill_(-20.0)
    weights.save(model, tmp_path / "blind", trained=True)
    before = (tmp_path / "blind" / "config.json").read_text()
    assert tune_main(["--weights", str(tmp_path / "blind"), "--backend", "torch", "--videos", *videos, str(other),
                      "--gt", gt, "--write", "--quiet"]) == 2
    out, err = capsys.readouterr()
    rows = [line.split() for line in out.splitlines() if line.startswith(" ")]  # the sweep's table
    assert [(float(r[0]), r[1]) for r in rows] == [(t, "0") for t in DEFAULT_THRESHOLDS]  # no hit at any threshold
    assert "warning: 1 of the --videos are not in --gt and count as videos without movements (other)" in err
    assert err.strip().splitlines()[-1] == (
        "error: no threshold found a single movement of the ground truth (spotting F1 0 throughout): nothing to "
        "choose; nothing written")
    assert (tmp_path / "blind" / "config.json").read_text() == before


def test_tune_reads_the_videos_as_the_weights_were_trained(val_set, tmp_path, capsys, monkeypatch):
    """Weights trained on aligned crops (fgsl.train --align-faces) are tuned on aligned crops,
    as fgsl.infer reads them (fgsl.data.aligned); --no-align-faces says what it changes."""
    import fgsl.tune
    from fgsl.data.spec import load_item
    from fgsl.infer import table_names
    from fgsl.tune import format_sweep

    model = build(preset("tiny"), seed=0)
    randomise_adapters(model)
    with torch.no_grad():  # class scores around 0.5: intervals at every threshold
        model.heads.class_out.bias.fill_(0.0)
    weights.save(model, tmp_path / "run", trained=True, info={"crops": "aligned"})
    videos = sorted(str(v) for v in (val_set / "videos").glob("*.avi"))
    gt = str(val_set / "annotations.csv")
    args = ["--weights", str(tmp_path / "run"), "--backend", "torch", "--videos", *videos, "--gt", gt,
            "--thresholds", "0.05,0.5", "--quiet"]
    read = []  # how each video was read (this set's two readings happen to score alike, so ask the reader)

    def load_item_seen(*a, **k):
        read.append(k["aligned"])
        return load_item(*a, **k)

    monkeypatch.setattr(fgsl.tune, "load_item", load_item_seen)
    assert tune_main(args) == 0
    out, err = capsys.readouterr()
    assert err.splitlines()[0] == f"videos read as faces aligned with MediaPipe, cached in {crop_cache.default_dir()}"
    assert read == [True] * len(videos)
    names = table_names(videos, sorted({(r.subject, r.video) for r in read_intervals(gt)}))
    items = [load_item(model.cfg, *names[v], Path(v), [], aligned=True) for v in videos]
    rows = sweep(TorchEngine(weights.load(tmp_path / "run")), items, read_intervals(gt), (0.05, 0.5))
    assert out.startswith(format_sweep(rows) + "\n")
    read.clear()
    assert tune_main([*args, "--no-align-faces"]) == 0
    assert capsys.readouterr().err.splitlines()[0] == ("videos read as centre crops (the weights were trained on "
                                                       "aligned crops: expect lower accuracy)")
    assert read == [False] * len(videos)
