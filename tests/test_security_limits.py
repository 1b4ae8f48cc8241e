"""Limits hold for all work: the request deadline stops batches per file and video decoding
per frame, video frames are bounded in pixels, rate and memory, a request keeps its
concurrency slot until its work has stopped, and batch CSVs never carry a formula."""
from __future__ import annotations

import csv
import dataclasses
import io
import logging
import threading
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.batch import csv_text, read_results, run_batch
from app.inputs import InputError
from app.ui_common import guard
from runtime.deadline import Deadline, RequestTimeout, using


@pytest.fixture
def limits():
    """Apply serving limits for one test (app.settings.configure), then restore. A time
    limit under the 1 s the settings accept keeps the tests fast: it is set past the check."""
    from app.settings import configure, current, load_settings

    before = current()

    def apply(request_timeout_s: float | None = None, **kw):
        s = load_settings(kw, environ={})
        if request_timeout_s is not None:
            s = dataclasses.replace(s, request_timeout_s=request_timeout_s)
        return configure(s)

    yield apply
    configure(before)


def _files(tmp: Path, names: list[str]) -> list[Path]:
    paths = []
    for name in names:
        (tmp / name).write_bytes(name.encode())
        paths.append(tmp / name)
    return paths


def _slow(seconds: float):
    """An analysis that takes ``seconds`` per file and never looks at the deadline."""
    def analyse(path: Path) -> list[dict]:
        time.sleep(seconds)
        return [{"score": 0.5}]
    return analyse


# --- batches stop at the deadline ------------------------------------------------------------
def test_a_batch_stops_at_the_deadline_with_the_rows_so_far(tmp_path):
    paths = _files(tmp_path, [f"{i:02d}.png" for i in range(20)])
    out = tmp_path / "results.csv"
    t0 = time.monotonic()
    with using(Deadline(0.25)):
        res = run_batch(paths, _slow(0.05), ["score"], out=out, show_bar=False)
    took = time.monotonic() - t0
    n = len(res.rows)
    assert 2 <= n < 20 and took < 1.5
    assert all(r["status"] == "ok" for r in res.rows)          # no error row per file left
    assert res.summary["analysed_now"] == n and res.summary["not_analysed"] == 20 - n
    assert f"after {n} of 20 files" in res.summary["stopped"]
    assert "request_timeout_s" in res.summary["stopped"]
    kept = read_results(out, ["file", "sha256", "score", "status", "error"])
    assert [r["file"] for r in kept] == [str(p) for p in paths[:n]]
    rest = run_batch(paths, _slow(0.0), ["score"], out=out, resume=True, show_bar=False)
    assert rest.summary["analysed_now"] == 20 - n and "stopped" not in rest.summary


def test_the_guarded_batch_answers_with_its_rows_at_the_time_limit(tmp_path, limits):
    limits(request_timeout_s=0.3)
    paths = _files(tmp_path, [f"{i:02d}.png" for i in range(20)])

    def face_batch():
        return run_batch(paths, _slow(0.05), ["score"], show_bar=False)

    t0 = time.monotonic()
    res = guard(face_batch)()
    assert time.monotonic() - t0 < 2.0
    assert 2 <= len(res.rows) < 20 and "of 20 files" in res.summary["stopped"]


def test_a_model_run_stopped_by_the_deadline_ends_the_batch(tmp_path):
    paths = _files(tmp_path, ["a.png", "b.png", "c.png"])
    calls = []

    def analyse(path: Path) -> list[dict]:
        calls.append(path)
        if len(calls) == 2:
            raise RequestTimeout("the request was stopped at its time limit")
        return [{"score": 1.0}]

    with using(Deadline(60)):
        res = run_batch(paths, analyse, ["score"], show_bar=False)
    assert len(calls) == 2 and [r["file"] for r in res.rows] == [str(paths[0])]
    assert "after 1 of 3 files" in res.summary["stopped"]


# --- the request keeps its slot until the work has stopped -----------------------------------
def test_guard_waits_for_the_work_to_stop_before_it_answers(limits):
    import gradio as gr

    limits(request_timeout_s=0.2)
    state = {}

    def stubborn():
        """Ignores the deadline for 0.35 s, then sees it."""
        state["thread"] = threading.current_thread()
        time.sleep(0.35)
        from runtime import deadline
        deadline.check()
        return "done"

    t0 = time.monotonic()
    with pytest.raises(gr.Error, match="longer than the limit of 0.2 s"):
        guard(stubborn)()
    assert 0.3 < time.monotonic() - t0 < 1.5
    assert not state["thread"].is_alive()  # the slot is freed only once the work stopped


def test_guard_gives_up_waiting_after_as_long_again_and_logs_it(limits, caplog):
    import gradio as gr

    limits(request_timeout_s=0.15)
    state = {}
    release = threading.Event()

    def endless():
        state["thread"] = threading.current_thread()
        release.wait(10)

    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="replens.ui"), \
            pytest.raises(gr.Error, match="longer than the limit"):
        guard(endless)()
    assert 0.25 < time.monotonic() - t0 < 1.5
    assert state["thread"].is_alive()
    assert "/endless still ran 0.15 s after its time limit" in caplog.text
    release.set()
    state["thread"].join(2)


# --- video decoding ---------------------------------------------------------------------------
def _video(path: Path, n: int = 40, fps: float = 10.0, size: tuple[int, int] = (64, 48)) -> Path:
    w, h = size
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert vw.isOpened()
    for i in range(n):
        vw.write(np.full((h, w, 3), 5 * i % 250, np.uint8))
    vw.release()
    return path


class FakeCapture:
    """A ``cv2.VideoCapture`` stand-in: ``n`` frames of ``shape``; the container declares
    ``fps``, ``count`` and ``declared`` (width, height) (0: unknown)."""

    def __init__(self, n, fps=0.0, count=0, shape=(32, 32, 3), declared=(0, 0), delay=0.0):
        self.n, self.fps, self.count, self.shape = n, fps, count, shape
        self.declared, self.delay = declared, delay
        self.pos = self.grabs = 0

    def __call__(self, _path):   # used as the class: cv2.VideoCapture(path) opens it anew
        self.pos = 0
        return self

    def isOpened(self):
        return True

    def get(self, prop):
        return {cv2.CAP_PROP_FPS: self.fps, cv2.CAP_PROP_FRAME_COUNT: self.count,
                cv2.CAP_PROP_FRAME_WIDTH: self.declared[0],
                cv2.CAP_PROP_FRAME_HEIGHT: self.declared[1]}.get(prop, 0)

    def set(self, prop, value):
        self.pos = int(value)
        return True

    def grab(self):
        if self.delay:
            time.sleep(self.delay)
        if self.pos >= self.n:
            return False
        self.pos += 1
        self.grabs += 1
        return True

    def retrieve(self):
        """Frame ``k`` (from 0) holds ``k // 250`` in its outer channels, ``k % 250`` in the
        middle one (see :func:`_number`)."""
        k = self.pos - 1
        frame = np.empty(self.shape, np.uint8)
        frame[..., 0] = frame[..., 2] = k // 250
        frame[..., 1] = k % 250
        return True, frame

    def read(self):
        return (self.retrieve() if self.grab() else (False, None))

    def release(self):
        pass


def _number(frame: np.ndarray) -> int:
    """The frame number a :class:`FakeCapture` frame holds."""
    return int(frame[0, 0, 0]) * 250 + int(frame[0, 0, 1])


def test_video_decoding_stops_at_the_deadline_per_frame(tmp_path, monkeypatch):
    from app.services.video import read_frames

    path = _video(tmp_path / "clip.avi")
    d = Deadline(60)
    d.cancel()
    with using(d), pytest.raises(RequestTimeout):
        read_frames(path, 4)
    fake = FakeCapture(n=2000, fps=25.0, count=2000, delay=0.001)
    monkeypatch.setattr(cv2, "VideoCapture", fake)
    t0 = time.monotonic()
    with using(Deadline(0.1)), pytest.raises(RequestTimeout):
        read_frames(path, 8)
    assert time.monotonic() - t0 < 1.5 and fake.grabs < 1000


def test_video_frames_over_max_pixels_are_refused(tmp_path, limits, monkeypatch):
    from app.services.video import analyze_video, read_frames, video_bag
    from runtime.media import VideoReadError, video_to_frames

    path = _video(tmp_path / "big.avi", size=(64, 48))          # 3072 pixels a frame
    limits(max_pixels=3000)
    with pytest.raises(InputError, match=r"64 x 48 = 3072 pixels; the limit is 3000 \(max_pixels\)"):
        analyze_video(None, None, path)                      # refused before any decoding
    with pytest.raises(InputError, match="max_pixels"):
        video_bag(path, 4)
    limits(max_pixels=3072)
    assert len(read_frames(path, 4)[0]) == 4
    # a container that does not declare its frame size: the decoded frames are checked
    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture(n=10, count=10, shape=(100, 100, 3)))
    with pytest.raises(InputError, match="10000 pixels"):
        read_frames(path, 4)
    with pytest.raises(VideoReadError, match="limit is 5000 pixels"):
        from runtime.media import sample_video
        sample_video(path, 4, max_pixels=5000)
    assert len(video_to_frames(path, 4)) == 4                # no bound asked: read


def test_a_stream_of_unknown_length_is_sampled_in_bounded_memory(tmp_path, monkeypatch):
    from runtime.media import video_to_frames

    path = tmp_path / "stream.avi"
    path.write_bytes(b"x")
    frame_bytes = 64 * 64 * 3
    # no frame count, no frame rate: the length is known only at the end
    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture(n=3000, shape=(64, 64, 3)))
    tracemalloc.start()
    try:
        frames = video_to_frames(path, max_frames=8, max_seconds=600)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 * frame_bytes                 # all 3000 frames would be 36 MB
    idx = [_number(f) for f in frames]
    assert len(frames) == 8 and idx == sorted(idx)
    assert idx[0] < 400 and idx[-1] > 2500 and np.diff(idx).min() >= 256  # spread over it


def test_the_stream_sampler_holds_at_most_twice_the_frames_asked():
    from runtime.media import sample_stream

    alive = {"now": 0, "peak": 0}

    class Held:
        def __init__(self):
            alive["now"] += 1
            alive["peak"] = max(alive["peak"], alive["now"])

        def __del__(self):
            alive["now"] -= 1

    frames, idx = sample_stream(FakeCapture(n=10_000), 16, None, lambda f: Held())
    assert len(frames) == 16 and 16 <= alive["peak"] <= 32
    assert idx[0] < 1000 and idx[-1] > 8500
    frames, idx = sample_stream(FakeCapture(n=5), 16, None, lambda f: Held())
    assert idx == [0, 1, 2, 3, 4]


def test_the_frame_rate_considered_is_bounded(tmp_path, monkeypatch):
    from runtime.media import video_to_frames

    path = tmp_path / "fast.avi"
    path.write_bytes(b"x")
    # the container claims 10 000 frames a second and ten million frames: 10 s would be
    # 100 000 frames; at most 120 a second (MAX_FPS) are considered
    fake = FakeCapture(n=5000, fps=10_000.0, count=10_000_000)
    monkeypatch.setattr(cv2, "VideoCapture", fake)
    frames = video_to_frames(path, max_frames=8, max_seconds=10)
    idx = [_number(f) for f in frames]
    assert fake.grabs <= 1200 and len(frames) == 8
    assert idx == sorted(idx) and idx[-1] < 1200 and np.diff(idx).min() >= 100


# --- CSV formula injection -------------------------------------------------------------------
def test_batch_csv_cells_never_start_a_formula(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)          # rows name the files as given: relative names
    names = ["=1+2.png", "+cmd.png", "-2+3.png", "@SUM(A1).png", "'quoted.png", "plain.png"]
    paths = [Path(p.name) for p in _files(tmp_path, names)]

    def analyse(path: Path) -> list[dict]:
        if path.name == "plain.png":
            raise InputError("=HYPERLINK(\"http://x\") is not an image")
        return [{"score": -0.5, "label": "=cmd|' /C calc'!A0"}]

    out = tmp_path / "results.csv"
    res = run_batch(paths, analyse, ["score", "label"], out=out, show_bar=False)
    for text in (out.read_text(), csv_text(res.rows, ["file", "sha256", "score", "label",
                                                       "status", "error"])):
        rows = list(csv.reader(io.StringIO(text)))[1:]
        cells = [c for row in rows for c in row]
        assert not [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r")]
        assert [r[0] for r in rows] == ["'" + n for n in names[:5]] + ["plain.png"]
        assert rows[0][0] == "'=1+2.png"
        assert rows[0][2] == "-0.5"                        # numbers stay numbers
        assert rows[0][3].startswith("'=cmd") and rows[-1][5].startswith("'=HYPERLINK")
    # JSON rows stay as they were, and resume knows every file again
    assert [r["file"] for r in res.rows] == names
    again = run_batch(paths, analyse, ["score", "label"], out=out, resume=True, show_bar=False)
    assert again.summary["analysed_now"] == 0
    assert [r["file"] for r in again.rows] == names
    assert again.rows[0]["label"] == "=cmd|' /C calc'!A0"
