"""Progress as users see it: FFmpeg's `-progress` reports, Whisper segments, and throttling."""

from __future__ import annotations

import pytest

from vidstream.media.progress import Eta, FfmpegProgress, Throttle, segment_fraction

# Blocks as the pinned FFmpeg 9 writes them with `-progress pipe:1 -nostats` while encoding a
# 2 s clip: `N/A` before the first frame is muxed (and again while the encoder flushes).
BEFORE_FIRST_FRAME = """\
frame=0
fps=0.00
stream_0_0_q=0.0
bitrate=N/A
total_size=48
out_time_us=N/A
out_time_ms=N/A
out_time=N/A
dup_frames=0
drop_frames=0
speed=N/A
progress=continue
"""

HALFWAY = """\
frame=25
fps=0.00
stream_0_0_q=28.0
bitrate= 384.1kbits/s
total_size=48018
out_time_us=1000000
out_time_ms=1000000
out_time=00:00:01.000000
dup_frames=0
drop_frames=0
speed=  19x
progress=continue
"""

FLUSHING = BEFORE_FIRST_FRAME.replace("frame=0", "frame=27")

END = """\
frame=50
fps=0.00
stream_0_0_q=-1.0
bitrate= 809.4kbits/s
total_size=202341
out_time_us=2000000
out_time_ms=2000000
out_time=00:00:02.000000
dup_frames=0
drop_frames=0
speed= 5.4x
progress=end
"""


def feed_block(parser: FfmpegProgress, block: str) -> list[float]:
    """Feed each line; return the values reported (one per block, at its `progress=` line)."""
    return [v for line in block.splitlines(keepends=True) if (v := parser.feed(line)) is not None]


def test_nothing_is_reported_before_the_first_frame() -> None:
    """Before FFmpeg writes a frame the job shows 0 %, not an error or a jump."""
    parser = FfmpegProgress(2.0)
    assert feed_block(parser, BEFORE_FIRST_FRAME) == [0.0]
    assert not parser.finished


def test_blocks_report_the_output_position_over_the_duration() -> None:
    """Rendering 1 s of a 2 s video reads 50 %; the last block reads 100 % and finished."""
    parser = FfmpegProgress(2.0)
    reported = [
        *feed_block(parser, BEFORE_FIRST_FRAME),
        *feed_block(parser, HALFWAY),
        *feed_block(parser, FLUSHING),
        *feed_block(parser, END),
    ]
    assert reported == [0.0, 0.5, 0.5, 1.0]
    assert parser.finished


def test_only_the_progress_line_reports() -> None:
    """Lines other than `progress=` (and malformed ones) never produce a value."""
    parser = FfmpegProgress(10.0)
    for line in ("out_time_us=5000000\n", "frame=12", "speed=1x", "garbage", "", "=\n"):
        assert parser.feed(line) is None
    assert parser.feed("progress=continue\r\n") == 0.5


def test_progress_never_goes_back() -> None:
    """A later, smaller or unreadable position does not move the bar backwards."""
    parser = FfmpegProgress(4.0)
    parser.feed("out_time_us=3000000")
    assert parser.feed("progress=continue") == 0.75
    parser.feed("out_time_us=1000000")
    assert parser.feed("progress=continue") == 0.75
    parser.feed("out_time_us=N/A")
    assert parser.feed("progress=continue") == 0.75
    parser.feed("out_time_us=-9223372036854775807")
    assert parser.feed("progress=continue") == 0.75


def test_progress_is_clamped_to_one() -> None:
    """Output running past the probed duration shows 100 %, never more, before the end."""
    parser = FfmpegProgress(1.0)
    parser.feed("out_time_us=1500000")
    assert parser.feed("progress=continue") == 1.0
    assert not parser.finished


def test_end_reports_done_even_if_short() -> None:
    """`progress=end` means done, whatever the last position said."""
    parser = FfmpegProgress(10.0)
    parser.feed("out_time_us=2000000")
    assert parser.feed("progress=continue") == pytest.approx(0.2)
    assert parser.feed("progress=end") == 1.0
    assert parser.finished


def test_zero_duration_does_not_divide_by_zero() -> None:
    """A source probed as 0 s long still reports a sane fraction."""
    parser = FfmpegProgress(0.0)
    assert parser.feed("progress=continue") == 0.0
    parser.feed("out_time_us=40000")
    assert parser.feed("progress=continue") == 1.0


@pytest.mark.parametrize(
    ("segment_end", "start", "end", "expected"),
    [
        (5.0, 0.0, 10.0, 0.5),
        (15.0, 10.0, 20.0, 0.5),
        (0.0, 0.0, 10.0, 0.0),
        (8.0, 10.0, 20.0, 0.0),  # before the range
        (25.0, 10.0, 20.0, 1.0),  # past the range
        (10.0, 10.0, 10.0, 0.0),  # empty range
        (10.5, 10.0, 10.0, 1.0),
    ],
)
def test_segment_fraction(segment_end: float, start: float, end: float, expected: float) -> None:
    """Transcription progress is how far the last segment reached into the range, in [0, 1]."""
    assert segment_fraction(segment_end, start, end) == pytest.approx(expected)


def test_throttle_emits_the_first_value() -> None:
    """The first progress value always reaches the user, even 0 %."""
    assert Throttle().should_emit(0.0, now=100.0)


def test_throttle_needs_a_minimum_step() -> None:
    """Changes smaller than the step are not sent; enough of them together are."""
    throttle = Throttle(min_step=0.05, min_interval_s=0.0)
    assert throttle.should_emit(0.10, now=0.0)
    assert not throttle.should_emit(0.12, now=1.0)
    assert not throttle.should_emit(0.14, now=2.0)
    assert throttle.should_emit(0.16, now=3.0)


def test_throttle_needs_a_minimum_interval() -> None:
    """At most one event per interval, however fast the value moves."""
    throttle = Throttle(min_step=0.01, min_interval_s=0.5)
    assert throttle.should_emit(0.1, now=10.0)
    assert not throttle.should_emit(0.2, now=10.2)
    assert not throttle.should_emit(0.3, now=10.49)
    assert throttle.should_emit(0.4, now=10.5)
    assert not throttle.should_emit(0.5, now=10.9)
    assert throttle.should_emit(0.6, now=11.0)


def test_throttle_always_emits_completion() -> None:
    """100 % is sent at once, even right after another value and after a tiny step."""
    throttle = Throttle(min_step=0.05, min_interval_s=10.0)
    assert throttle.should_emit(0.99, now=0.0)
    assert throttle.should_emit(1.0, now=0.001)
    assert not throttle.should_emit(1.0, now=100.0)  # but only once


def test_throttle_never_emits_a_smaller_value() -> None:
    """A value lower than or equal to the last one sent is never sent, however late."""
    throttle = Throttle(min_step=0.01, min_interval_s=0.5)
    assert throttle.should_emit(0.5, now=0.0)
    assert not throttle.should_emit(0.4, now=100.0)
    assert not throttle.should_emit(0.5, now=200.0)
    sent = [
        v
        for i, v in enumerate([0.6, 0.55, 0.7, 0.65, 1.0, 0.9])
        if throttle.should_emit(v, 300.0 + i)
    ]
    assert sent == [0.6, 0.7, 1.0]


def test_throttle_uses_the_monotonic_clock_by_default() -> None:
    """Without an injected time a second value right after the first is held back."""
    throttle = Throttle(min_step=0.01, min_interval_s=60.0)
    assert throttle.should_emit(0.1)
    assert not throttle.should_emit(0.5)
    assert throttle.should_emit(1.0)


def test_eta_waits_for_enough_time_and_movement() -> None:
    eta = Eta(min_s=2.0, min_step=0.02)
    assert eta.estimate(0.10, now=100.0) is None  # the first report only starts the clock
    assert eta.estimate(0.50, now=101.0) is None  # moved a lot, but too soon: start-up noise
    assert eta.estimate(0.11, now=110.0) is None  # long enough, but it has barely moved


def test_eta_extrapolates_the_rate_of_this_run() -> None:
    eta = Eta()
    eta.estimate(0.2, now=10.0)
    # 0.2 -> 0.4 took 4 s, so the remaining 0.6 takes 12 s.
    assert eta.estimate(0.4, now=14.0) == pytest.approx(12.0)
    assert eta.estimate(1.0, now=20.0) == pytest.approx(0.0)
