"""Who is speaking (`speakers`, `speaker_labels`): the pure assignment of speakers to words and
cues, and a real job over two voices taking turns."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import fetch, upload_job, watch
from tests.media import Clip, make_clip
from vidstream.core.errors import PermanentError
from vidstream.job.options import Options
from vidstream.media import voices
from vidstream.media.captions import to_ass_styled, word_cues
from vidstream.media.logmel import log_mel
from vidstream.media.speakers import (
    diarized,
    numbered,
    smoothed,
    speakers_in,
    speech,
    windows,
    word_speakers,
)
from vidstream.media.subtitles import Layout, build_cues, cue_groups
from vidstream.media.transcript import Segment, Transcript, Word
from vidstream.runtime import Stack

# Two voices taking turns, A B A B: espeak-ng's male voice 3 and female voice 4.
TURNS = (
    ("en-us+m3", "Good morning, I would like to book a table for two people tonight."),
    ("en-us+f4", "Certainly, we have a quiet table by the window at eight o'clock."),
    ("en-us+m3", "That sounds perfect, and could we also order a bottle of red wine?"),
    ("en-us+f4", "Of course, I will write it down and see you this evening then."),
)


def _words(*spec: tuple[str, float, float]) -> tuple[Word, ...]:
    return tuple(Word(text, start, end) for text, start, end in spec)


def _transcript() -> Transcript:
    first = Segment(
        0.0,
        2.0,
        "hello there friend",
        _words(("hello", 0.0, 0.5), ("there", 0.6, 1.0), ("friend", 1.1, 2.0)),
    )
    second = Segment(2.5, 4.0, "yes indeed",
                     _words(("yes", 2.5, 3.0), ("indeed", 3.1, 4.0)))  # fmt: skip
    return Transcript("en", 4.0, (first, second), model="tiny.en")


def test_a_transcript_without_speakers_reads_and_writes_back_the_same() -> None:
    """An old transcript's JSON has no `speaker` and comes back byte for byte."""
    raw = _transcript().to_json()
    assert b"speaker" not in raw
    assert Transcript.from_json(raw).to_json() == raw


def test_speakers_go_to_json_and_back() -> None:
    """A speaker on a segment and its words survives JSON; one from a client that is not a
    whole number from 1 is dropped."""
    told = diarized(_transcript(), [7, 7, 7, 3, 3])
    doc = json.loads(told.to_json())
    assert [s["speaker"] for s in doc["segments"]] == [1, 2]
    assert [w["speaker"] for s in doc["segments"] for w in s["words"]] == [1, 1, 1, 2, 2]
    assert Transcript.from_json(told.to_json()) == told
    doc["segments"][0]["speaker"] = "nobody"
    doc["segments"][1]["words"][0]["speaker"] = 0
    back = Transcript.from_json(json.dumps(doc))
    assert back.segments[0].speaker is None and back.segments[1].words[0].speaker is None


def test_windows_cover_speech_and_short_stretches_get_a_whole_window() -> None:
    """Words close together make one stretch; a long one is covered by overlapping windows
    ending with it; a short one is widened around its middle."""
    stretches = speech([(0.0, 1.0), (1.1, 3.0), (5.0, 5.4)])
    assert stretches == [(0.0, 3.0), (5.0, 5.4)]
    found = windows(stretches, length=1.5, hop=0.5, shortest=1.0)
    assert found[0] == (0.0, 1.5) and found[-2] == (1.5, 3.0)
    assert found[-1] == pytest.approx((4.7, 5.7))


def test_each_word_takes_the_speaker_whose_windows_overlap_it_most() -> None:
    """Overlap decides; a word no window touches takes the nearest window's speaker."""
    spans = [(0.0, 1.5), (1.0, 2.5), (4.0, 5.0)]
    labels = word_speakers([(0.2, 0.6), (1.6, 2.4), (1.2, 1.4), (6.0, 6.5)], spans, [5, 9, 5])
    assert labels[:2] == [5, 9] and labels[3] == 5
    assert labels[2] in (5, 9)  # both overlap it equally


def _word_speakers_everywhere(
    words: list[tuple[float, float]], spans: list[tuple[float, float]], labels: list[int]
) -> list[int]:
    """word_speakers as it was first written: every word against every window."""
    result = []
    for start, end in words:
        overlap: dict[int, float] = {}
        for (a, b), label in zip(spans, labels, strict=True):
            if (shared := min(b, end) - max(a, start)) > 0:
                overlap[label] = overlap.get(label, 0.0) + shared
        if overlap:
            result.append(max(overlap, key=lambda k: overlap[k]))
        else:
            middle = (start + end) / 2
            pairs = zip(spans, labels, strict=True)
            result.append(min(pairs, key=lambda p: max(p[0][0] - middle, middle - p[0][1], 0))[1])
    return result


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 60), st.floats(-0.5, 2)), min_size=1, max_size=40),
    st.lists(st.tuples(st.floats(0, 60), st.floats(0.1, 1.5), st.integers(0, 3)), min_size=1,
             max_size=40),
)  # fmt: skip
def test_each_word_looks_only_at_the_windows_near_it(
    words: list[tuple[float, float]], windows: list[tuple[float, float, int]]
) -> None:
    """The bisected search gives every word the label the search over every window gave
    (except between windows tied for nearest), without its cost: words times windows."""
    spans = sorted((a, a + length) for a, length, _ in windows)
    labels = [label for *_, label in sorted(windows)]
    spans_of = [(start, start + length) for start, length in words]
    fast = word_speakers(spans_of, spans, labels)
    slow = _word_speakers_everywhere(spans_of, spans, labels)
    for (start, end), got, want in zip(spans_of, fast, slow, strict=True):
        if got != want:  # a tie: both windows as near as each other
            middle = (start + end) / 2
            near = {label for span, label in zip(spans, labels, strict=True)
                    if max(span[0] - middle, middle - span[1], 0.0) == min(
                        max(s[0] - middle, middle - s[1], 0.0) for s in spans)}  # fmt: skip
            assert {got, want} <= near, (start, end, got, want)


def test_speakers_are_numbered_in_order_and_a_lone_word_follows_its_neighbours() -> None:
    assert numbered([4, 4, 0, 7, 0]) == [1, 1, 2, 3, 2]
    assert smoothed([1, 2, 1, 1, 2, 2]) == [1, 1, 1, 1, 2, 2]


def test_a_segment_is_split_where_its_speaker_changes() -> None:
    """Two voices in one segment: two segments, each with its own words, text and speaker."""
    told = diarized(_transcript(), [3, 3, 8, 8, 8])
    assert [(s.text, s.speaker) for s in told.segments] == [
        ("hello there", 1), ("friend", 2), ("yes indeed", 2)]  # fmt: skip
    assert told.segments[0].start == 0.0 and told.segments[1].end == 2.0
    assert speakers_in(told) == [1, 2]


def test_a_cue_never_holds_two_speakers_and_labels_mark_each_change() -> None:
    """Even with room for all the words, a cue is one speaker's; `speaker_labels` puts
    [Speaker N] before a cue whose speaker is not the one before's."""
    one = Segment(0.0, 2.0, "a b c d", _words(("a", 0.0, 0.4), ("b", 0.5, 0.9),
                                            ("c", 1.0, 1.4), ("d", 1.5, 2.0)))  # fmt: skip
    told = diarized(Transcript("en", 2.0, (one,)), [1, 2, 2, 1])
    plain = build_cues(told, Layout())
    assert [c.text for c in plain] == ["a", "b c", "d"]
    labelled = build_cues(told, Layout(speaker_labels=True))
    assert [c.text for c in labelled] == ["[Speaker 1] a", "[Speaker 2] b c", "[Speaker 1] d"]
    assert build_cues(_transcript(), Layout(speaker_labels=True)) == build_cues(_transcript())


def test_the_speakers_option_is_a_count_auto_or_absent() -> None:
    """1 to 8, "auto" (0), or nothing; anything else names the choices."""
    assert Options.parse({"speakers": 2}).speakers == 2
    assert Options.parse({"speakers": "3"}).speakers == 3
    assert Options.parse({"speakers": "auto"}).speakers == 0
    assert Options.parse({}).speakers is None
    assert "speakers" not in Options().to_dict()  # a job from before reads back the same
    for bad in (9, -1, "two", True, 1.5):
        with pytest.raises(PermanentError, match="speakers must be"):
            Options.parse({"speakers": bad})


def test_voices_are_grouped_into_the_count_asked_for() -> None:
    """Vectors pointing two ways make two groups when two are asked, one when one is."""
    a, b = [1.0, 0.1, 0.0], [0.0, 0.1, 1.0]
    vectors = [a, a, b, [0.9, 0.2, 0.0], b]
    labels = voices.grouped(vectors, 2)
    assert labels[0] == labels[1] == labels[3] != labels[2] == labels[4]
    assert len(set(voices.grouped(vectors, 0))) == 2
    assert set(voices.grouped(vectors, 1)) == {0}


def test_many_voices_are_grouped_through_a_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the most vectors clustered pair by pair, the rest join the nearest group."""
    monkeypatch.setattr(voices, "MAX_CLUSTERED", 10)
    a, b = [1.0, 0.1, 0.0], [0.0, 0.1, 1.0]
    vectors = [a if i % 3 else b for i in range(40)]
    labels = voices.grouped(vectors, 2)
    assert len(set(labels)) == 2
    assert all((labels[i] == labels[0]) == (i % 3 == 0) for i in range(40))


def test_log_mel_bands_are_librosas() -> None:
    """The encoder's features, computed without librosa, equal librosa's."""
    librosa = pytest.importorskip("librosa")
    np = pytest.importorskip("numpy")
    samples = (np.random.default_rng(7).standard_normal(16000 * 2) * 0.1).astype(np.float32)
    theirs = librosa.feature.melspectrogram(
        y=samples, sr=16000, n_fft=512, win_length=400, hop_length=160, n_mels=40,
        window="hamming", center=False, power=2.0,
    )  # fmt: skip
    ours = log_mel(samples, 16000, 512, 400, 160, 40)
    assert ours.shape == (theirs.shape[1], 40)
    assert np.abs(ours - np.log10(theirs + 1e-10).T).max() < 1e-4


@pytest.fixture(scope="module")
def turns(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    folder = tmp_path_factory.mktemp("turns")
    return make_clip(folder, "turns.mp4", sentences=tuple(t for _, t in TURNS),
                     voices=tuple(v for v, _ in TURNS))  # fmt: skip


def _speaker_of_sentences(transcript: dict[str, object], clip: Clip) -> list[int | None]:
    """The speaker most of each spoken sentence's words were given."""
    words = [w for s in transcript["segments"] for w in s["words"]]  # type: ignore[attr-defined]
    found: list[int | None] = []
    for said in clip.spoken:
        inside = [w["speaker"] for w in words
                  if said.start - 0.3 <= (w["start"] + w["end"]) / 2 <= said.end + 0.3]  # fmt: skip
        found.append(max(set(inside), key=inside.count) if inside else None)
    return found


@pytest.mark.slow
async def test_two_voices_taking_turns_are_told_apart(
    stack: Stack, http: aiohttp.ClientSession, turns: Clip
) -> None:
    """`speakers: 2` over A, B, A, B: the transcript names exactly two speakers, each sentence
    the right one's, and the SRT marks each change with [Speaker N]."""
    assert stack.gateway is not None
    job = await upload_job(http, stack.gateway.url, turns.path, kind="transcribe",
                           speakers="2", speaker_labels="true")  # fmt: skip
    assert job["options"]["speakers"] == 2 and job["options"]["speaker_labels"] is True
    assert (await watch(job, timeout_s=120))[-1]["event"] == "completed"
    async with http.get(job["links"]["self"]) as r:
        outputs = (await r.json())["outputs"]
    transcript = json.loads(await fetch(http, outputs["transcript"]["url"]))
    speakers = {w["speaker"] for s in transcript["segments"] for w in s["words"]}
    assert speakers == {1, 2}, transcript
    assert all(s["speaker"] in (1, 2) for s in transcript["segments"])
    assert _speaker_of_sentences(transcript, turns) == [1, 2, 1, 2], transcript
    srt = (await fetch(http, outputs["srt"]["url"])).decode()
    labels = re.findall(r"\[Speaker (\d)\]", srt)
    assert labels[:4] == ["1", "2", "1", "2"], srt
    for cue in srt.strip().split("\n\n"):  # no cue holds two speakers
        assert len(re.findall(r"\[Speaker \d\]", cue)) <= 1, srt


@pytest.mark.slow
async def test_auto_finds_two_voices_and_captions_never_mix_them(
    stack: Stack, http: aiohttp.ClientSession, turns: Clip
) -> None:
    """`speakers: auto` over two clearly different voices finds two; without labels the VTT's
    cues carry no [Speaker N], and each cue's words are one speaker's."""
    assert stack.gateway is not None
    job = await upload_job(http, stack.gateway.url, turns.path, kind="transcribe",
                           speakers="auto", formats="json,vtt")  # fmt: skip
    assert job["options"]["speakers"] == 0
    assert (await watch(job, timeout_s=120))[-1]["event"] == "completed"
    async with http.get(job["links"]["self"]) as r:
        outputs = (await r.json())["outputs"]
    transcript = json.loads(await fetch(http, outputs["transcript"]["url"]))
    assert _speaker_of_sentences(transcript, turns) == [1, 2, 1, 2], transcript
    vtt = (await fetch(http, outputs["vtt"]["url"])).decode()
    assert "[Speaker" not in vtt
    told = Transcript.from_json(json.dumps(transcript))
    for cue_words in [words for _, words in cue_groups(told)]:
        assert len({w.speaker for w in cue_words}) == 1


async def test_speakers_are_refused_where_no_encoder_is_installed(
    stack: Stack, http: aiohttp.ClientSession, turns: Clip, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the speaker encoder, asking for `speakers` is `400 unsupported`, saying why."""
    assert stack.gateway is not None
    monkeypatch.setattr(voices, "unavailable", lambda: "the package(s) librosa are not installed")
    form = aiohttp.FormData()
    form.add_field("speakers", "2")
    form.add_field("file", io.BytesIO(turns.path.read_bytes()), filename="turns.mp4",
                   content_type="video/mp4")  # fmt: skip
    async with http.post(f"{stack.gateway.url}/v1/jobs", data=form) as r:
        body = await r.json()
    assert r.status == 400 and body["error"]["code"] == "unsupported", body
    assert "librosa" in body["error"]["message"]


def test_the_encoder_ships_with_its_package() -> None:
    """The speaker encoder is a file of an installed package: nothing to download."""
    path = voices.model_path()
    assert path is not None and path.stat().st_size > 1_000_000
    assert voices.unavailable() == ""
    assert isinstance(path, Path)


def test_a_label_is_never_cut_and_karaoke_keeps_the_spoken_timings() -> None:
    """A cue's "[Speaker N]" stays one piece whatever the line length, and with karaoke it is
    lit at once while each word keeps the time it was spoken (not an even spread)."""
    words = (Word("so", 0.0, 0.3, speaker=1), Word("what", 0.3, 0.8, speaker=1))
    transcript = Transcript("en", 3.0, (Segment(0.0, 0.8, "so what", words, speaker=1),))
    for chars in (10, 42):
        cue = word_cues(transcript, Layout(max_chars=chars, speaker_labels=True))[0][0]
        assert cue.lines[0].startswith("[Speaker 1]"), cue.lines
    items = word_cues(transcript, Layout(speaker_labels=True))
    [dialogue] = [line for line in to_ass_styled(items, 640, 360, karaoke=True).splitlines()
                  if line.startswith("Dialogue:")]  # fmt: skip
    assert dialogue.endswith("{\\kf0}[Speaker {\\kf0}1] {\\kf30}so {\\kf50}what"), dialogue


def test_a_speaker_that_is_no_small_whole_number_is_no_speaker() -> None:
    """A corrected transcript's `speaker` of Infinity, 10**50 or a name is dropped: it crashed
    the parse (OverflowError, a 500) or made a label of fifty digits."""
    for value in ("Infinity", "1e999", "1" + "0" * 50, '"Bob"', "0", "9"):
        raw = ('{"language": "en", "duration": 1, "segments": [{"start": 0, "end": 1, "text": '
               f'"hi", "speaker": {value}, "words": []}}]}}')  # fmt: skip
        [segment] = Transcript.from_json(raw.encode()).segments
        assert segment.speaker is None, value
