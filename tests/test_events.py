"""Event merging across overlapping windows, emission once final, and sinks that lose nothing."""

from __future__ import annotations

import csv
import errno
import io
import json
import os

import re

import pytest

from realtime.events import ConsoleSink, CsvSink, DeferredSink, EventMerger, JsonlSink, SinkError, frame_iou
from realtime.types import Candidate, Event, RealtimeError, validate_event_line


def cand(onset: int, offset: int, score: float = 0.8, track: int = 0, kind: str = "micro",
         label: str = "positive") -> Candidate:
    apex = (onset + offset) // 2
    return Candidate(track, onset, apex, offset, onset / 30, apex / 30, offset / 30, label, score, kind)


def test_frame_iou_counts_inclusive_frames():
    assert frame_iou(cand(0, 9), cand(0, 9)) == 1.0
    assert frame_iou(cand(0, 9), cand(10, 19)) == 0.0
    assert frame_iou(cand(0, 9), cand(5, 14)) == pytest.approx(5 / 15)


def test_same_movement_from_two_windows_is_emitted_once_with_the_best_score():
    merger = EventMerger("flow")
    assert merger.add(0, [cand(40, 48, 0.6)], final_before=20, now_s=1.7) == []
    assert merger.add(0, [cand(41, 48, 0.9)], final_before=30, now_s=2.0) == []
    assert merger.pending == 1
    events = merger.add(0, [], final_before=49, now_s=2.3)
    assert len(events) == 1 and events[0].onset == 41 and events[0].score == 0.9
    assert events[0].emitted_s == 2.3 and events[0].delay_s == pytest.approx(2.3 - 48 / 30)
    assert merger.add(0, [], final_before=200, now_s=9.0) == []  # never twice


def test_a_late_report_of_an_emitted_movement_is_not_a_second_event():
    """A track's last window starts wherever its last frames do, earlier than the next regular
    window would have: it can report a movement whose event is already out. Without a merge
    gap too, a candidate overlapping an emitted event (IoU >= iou) is that movement again,
    even at a higher score; one that overlaps less is a movement of its own."""
    merger = EventMerger("flow")
    assert [e.onset for e in merger.add(0, [cand(10, 12, 0.8)], final_before=20, now_s=1)] == [10]
    assert merger.add(0, [cand(10, 12, 0.99), cand(11, 13, 0.9)], final_before=0, now_s=2, track_ended=True) == []
    merger.add(1, [cand(10, 19, 0.8)], final_before=20, now_s=1)
    assert [e.onset for e in merger.add(1, [cand(18, 40, 0.7)], final_before=0, now_s=2, track_ended=True)] == [18]


def test_a_merge_gap_makes_ramps_and_late_fragments_one_movement():
    """With ``gap_s`` (the FGSL spotter's, as offline): a fragment overlapping or within the
    gap of a better candidate is the same movement, even after that one was emitted."""
    plain, gapped = EventMerger("fgsl"), EventMerger("fgsl", gap_s=0.25)
    for merger in (plain, gapped):  # main interval 30-39; a ramp 40-44 (0.03 s later, IoU 0)
        merger.add(0, [cand(30, 39, 0.9), cand(40, 44, 0.5), cand(60, 66, 0.6)], final_before=0, now_s=0)
    assert [e.onset for e in plain.add(0, [], final_before=70, now_s=3)] == [30, 40, 60]
    assert [e.onset for e in gapped.add(0, [], final_before=70, now_s=3)] == [30, 60]  # 60 is 0.5 s away
    # A later window reports a piece of the emitted movement: not a second event.
    assert gapped.add(0, [cand(36, 41, 0.95)], final_before=80, now_s=4) == []
    # Elsewhere, still new.
    assert [e.onset for e in gapped.add(0, [cand(90, 96, 0.7)], final_before=100, now_s=5)] == [90]


def test_weaker_duplicate_does_not_replace_and_distinct_movements_both_survive():
    merger = EventMerger("flow")
    merger.add(0, [cand(10, 18, 0.9), cand(30, 36, 0.5)], final_before=0, now_s=0)
    merger.add(0, [cand(11, 18, 0.7)], final_before=0, now_s=0)
    events = merger.add(0, [], final_before=100, now_s=4)
    assert [(e.onset, e.score) for e in events] == [(10, 0.9), (30, 0.5)]


def test_tracks_are_independent_and_ending_a_track_flushes_it():
    merger = EventMerger("fgsl")
    merger.add(0, [cand(10, 18, track=0)], final_before=0, now_s=0)
    merger.add(1, [cand(10, 18, track=1)], final_before=0, now_s=0)
    assert merger.pending == 2  # same frames, other face: not a duplicate
    done = merger.add(1, [], final_before=0, now_s=1.0, track_ended=True)
    assert [e.track for e in done] == [1] and done[0].spotter == "fgsl"
    rest = merger.finish(now_s=2.0)
    assert [e.track for e in rest] == [0] and merger.pending == 0


def test_event_lines_follow_the_schema(tmp_path):
    event = EventMerger("flow").add(3, [cand(5, 9, kind="macro", track=3)], 100, 1.0)[0]
    line = event.to_json()
    validate_event_line(line)
    assert line["track"] == 3 and line["kind"] == "macro" and line["delay_s"] >= 0
    broken = dict(line, label="angry")
    with pytest.raises(ValueError, match="label"):
        validate_event_line(broken)
    with pytest.raises(ValueError, match="onset"):
        validate_event_line(dict(line, onset=20))
    for key in ("score", "delay_s"):
        with pytest.raises(ValueError, match=f"lacks '{key}'"):
            validate_event_line({k: v for k, v in line.items() if k != key})
    validate_event_line(dict(line, untrained=True))  # the one key a sink may add
    for change, message in [({"track": "0"}, "'track' has type str"), ({"track": True}, "'track' has type bool"),
                            ({"kind": "meso"}, "kind 'meso'"), ({"spotter": "lbp"}, "spotter 'lbp'"),
                            ({"score": 1.5}, "score 1.5"), ({"track": -1}, "track id"),
                            ({"onset_s": line["offset_s"] + 1}, "onset_s <= offset_s"),
                            ({"emitted_s": line["offset_s"] - 0.5}, "offset_s <= emitted_s"),
                            ({"delay_s": line["delay_s"] + 0.5}, "delay_s is not"),
                            ({"untrained": False}, "outside the schema"), ({"note": "x"}, "outside the schema")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            validate_event_line(dict(line, **change))


def _event(onset: int, kind: str = "micro") -> Event:
    return EventMerger("flow").add(0, [cand(onset, onset + 6, kind=kind)], 10_000, 50.0)[0]


def test_ctrl_c_in_one_sink_still_writes_the_whole_batch_to_the_others(tmp_path):
    """Ctrl-C while the console blocks (a paused terminal): the batch's events are out of the
    merger already, so unless the files get them now they are lost."""

    class BlockedConsole:
        def __init__(self) -> None:
            self.lines = 0

        def write(self, event: Event) -> None:
            if self.lines == 1:
                raise KeyboardInterrupt
            self.lines += 1

        def close(self) -> None:
            pass

    from realtime.pipeline import Pipeline
    from realtime.spotters.flow import FlowSpotter

    console = BlockedConsole()
    pipeline = Pipeline(tracker=None, spotter=FlowSpotter(), sinks=[console, JsonlSink(tmp_path / "e.jsonl")])
    with pytest.raises(KeyboardInterrupt):
        pipeline._write([_event(10), _event(40), _event(70)])
    pipeline.close()
    assert [json.loads(line)["onset"] for line in (tmp_path / "e.jsonl").read_text().splitlines()] == [10, 40, 70]
    assert console.lines == 1 and pipeline.event_count == 3  # the interrupted console is not tried again


def test_file_sinks_flush_every_event_before_close(tmp_path):
    jsonl, table = JsonlSink(tmp_path / "e.jsonl"), CsvSink(tmp_path / "sub" / "p.csv", "s01", "clip")
    for sink in (jsonl, table):
        sink.write(_event(10))
        sink.write(_event(40, kind="macro"))
    # Read while still open: a crash now must not lose the events already written.
    lines = (tmp_path / "e.jsonl").read_text().splitlines()
    assert len(lines) == 2
    for line in lines:
        validate_event_line(json.loads(line))
    rows = list(csv.reader((tmp_path / "sub" / "p.csv").open()))
    assert rows == [["subject", "video", "onset", "offset", "emotion"], ["s01", "clip", "10", "16", "positive"]]
    jsonl.close()
    table.close()


def test_console_sink_prints_one_line_per_event(capsys):
    ConsoleSink().write(_event(10))
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "MICRO" in out and "onset 10" in out


class FailingStream(io.StringIO):
    """A stdout whose writes fail as ``errno_`` says (a log on a full disk, a terminal giving EIO)."""

    def __init__(self, errno_: int) -> None:
        super().__init__()
        self.errno, self.tries = errno_, 0

    def write(self, text: str) -> int:
        self.tries += 1
        raise OSError(self.errno, os.strerror(self.errno))


@pytest.mark.parametrize("code, kept", [(errno.ENOSPC, True), (errno.EIO, True), (errno.EPIPE, False)])
def test_a_console_that_fails_falls_silent_and_keeps_why_unless_the_reader_left(code, kept):
    """Any write error silences the console without raising (the run and its files go on);
    the error is kept for the end of the run, except a closed pipe (``| head``), which is no error."""
    stream = FailingStream(code)
    console = ConsoleSink(stream)
    console.write(_event(10))
    console.write(_event(40))
    assert console.silenced and stream.tries == 1  # not tried again
    assert (console.failure is not None and console.failure.errno == code) is kept


def test_a_deferred_sink_leaves_its_file_alone_until_opened(tmp_path):
    """``realtime.cam`` opens its files at the first face: a run without one truncates nothing."""
    path = tmp_path / "e.jsonl"
    path.write_text("an earlier run\n")
    never = DeferredSink(lambda: JsonlSink(path))
    never.close()
    assert path.read_text() == "an earlier run\n"
    sink = DeferredSink(lambda: JsonlSink(path))
    assert not sink.opened
    sink.write(_event(10))  # the first event opens it, if nothing did before
    sink.close()
    assert sink.opened and [json.loads(line)["onset"] for line in path.read_text().splitlines()] == [10]


def test_a_deferred_file_that_cannot_be_made_is_a_sink_error(tmp_path):
    """Made mid-run, a file that cannot be made is dropped like one that fails later (Pipeline)."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SinkError, match="cannot write here"):
        DeferredSink(lambda: JsonlSink(blocker / "e.jsonl")).open()


def test_unwritable_sink_path_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RealtimeError, match="cannot write"):
        JsonlSink(blocker / "e.jsonl")


FULL_DISK = "/dev/full"  # every write fails with ENOSPC, as on a full disk


@pytest.mark.skipif(not os.path.exists(FULL_DISK), reason="no /dev/full on this system")
def test_a_full_disk_is_one_sink_error_and_the_other_sinks_keep_every_event():
    from realtime.pipeline import Pipeline
    from realtime.spotters.flow import FlowSpotter

    with pytest.raises(SinkError, match=r"^/dev/full: cannot write events any more \(No space left on device\)$"):
        CsvSink(FULL_DISK, "s01", "clip")  # its header already fails
    console, events = io.StringIO(), [_event(10), _event(40), _event(70)]
    screen = ConsoleSink(console)
    pipeline = Pipeline(tracker=None, spotter=FlowSpotter(), sinks=[JsonlSink(FULL_DISK), screen])
    pipeline._write(events)  # the failure waits until the step's work is done (step/finish raise it)
    assert console.getvalue().count("MICRO") == 3  # the console got the whole batch
    assert pipeline.sinks == [screen] and pipeline.event_count == 3
    with pytest.raises(SinkError, match="No space left on device"):
        pipeline._raise_sink_failure()
    pipeline._write([_event(100)])  # the failed file is not tried again, and nothing new fails
    pipeline._raise_sink_failure()
    assert console.getvalue().count("MICRO") == 4
    pipeline.close()  # closing the failed file does not raise again
