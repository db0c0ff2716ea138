"""skyreels_v4.prompts on bad input: a table of typed errors that name what and where, and fuzzing."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skyreels_v4.errors import PromptError, ReferenceError_
from skyreels_v4.prompts import (
    MultiShotPrompt,
    Segment,
    Shot,
    StructuredCaption,
    Tag,
    parse_multishot,
    parse_prompt,
    resolve_references,
)

P = parse_prompt
M = parse_multishot

# (function, argument, error type, fragments the message must contain)
BAD_INPUT = [
    # tags
    (P, "A dog <sfx>barks", PromptError, ["character 6", "<sfx> is never closed", "</sfx>"]),
    (P, "A dog barks</sfx>", PromptError, ["character 11", "</sfx> closes nothing"]),
    (P, "<sfx>a</bgm>", PromptError, ["character 6", "</bgm> does not match <sfx>", "character 0"]),
    (P, "<sfx>a <bgm>b</bgm></sfx>", PromptError, ["character 7", "<bgm> inside <sfx>", "do not nest"]),
    (P, "A <music>song</music>", PromptError, ["character 2", "unknown tag <music>", "<sfx>"]),
    (P, "A <SFX>bang</SFX>", PromptError, ["unknown tag <SFX>", "lowercase"]),
    (P, "A dog <sfx></sfx> runs", PromptError, ["character 6", "empty <sfx></sfx>"]),
    (P, "A dog <bgm>  \n </bgm>", PromptError, ["character 6", "empty <bgm></bgm>"]),
    (P, "x < y", PromptError, ["character 2", "stray '<'"]),
    (P, "x > y", PromptError, ["character 2", "stray '>'"]),
    (P, "a <sfx >b</sfx>", PromptError, ["character 2", "stray '<'"]),
    (P, '<dialogue speaker="A">hi</dialogue>', PromptError, ["character 0", "stray '<'"]),
    (P, "<<sfx>a</sfx>", PromptError, ["character 0", "stray '<'"]),
    # characters and length
    (P, "A dog\x00 runs", PromptError, ["character 5", "control character '\\x00'"]),
    (P, "A dog\x1b[31m", PromptError, ["character 5", "control character '\\x1b'"]),
    (P, "bell\x07", PromptError, ["character 4", "control character"]),
    (P, "a" * 10_001, PromptError, ["at most 10000 characters", "got 10001"]),
    (P, "", PromptError, ["blank prompt"]),
    (P, 42, TypeError, ["prompt: expected str, got int"]),
    # references
    (P, "Person from @image_0", PromptError, ["character 12", "'@image_0'", "N >= 1"]),
    (P, "Person from @image_01", PromptError, ["character 12", "'@image_01'", "no leading zero"]),
    (P, "Use @imgae_1 here", PromptError, ["character 4", "'@imgae_1' is not a reference"]),
    (P, "See @video_1x", PromptError, ["character 4", "'@video_1x'"]),
    (P, "<dialogue>hi @Actor-01</dialogue>", PromptError, ["character 13", "'@Actor-01'"]),
    (P, "A @image_99999999", PromptError, ["character 2", "'@image_99999999'", "<= 10000"]),
    # multi-shot
    (M, "A dog runs.", PromptError, ["expected at least one shot header"]),
    (M, "[shot 1: 0s] a", PromptError, ["shot 1", "finite duration > 0", "0.0"]),
    (M, "[shot 1: -2s] a", PromptError, ["shot 1", "finite duration > 0", "-2.0"]),
    (M, "[shot 1: 1s] a\n[shot 2: nan] b", PromptError, ["shot 2", "'nan' is not a number"]),
    (M, "[shot 1: 1s] a\n[shot 2: inf s] b", PromptError, ["shot 2", "'inf s' is not a number"]),
    (M, "[shot 1: 1e999s] a", PromptError, ["shot 1", "finite duration > 0", "inf"]),
    (M, "[shot 1: two seconds] a", PromptError, ["shot 1", "'two seconds' is not a number"]),
    (M, "[shot 1: 1s] a\n[shot 3: 1s] b", PromptError, ["shot 2", "'shot 2'", "got '3'"]),
    (M, "[shot 1: 1s]\n[shot 2: 1s] b", PromptError, ["shot 1", "blank prompt"]),
    (M, "[shot 1 1s] a", PromptError, ["character 0", "malformed shot header", "[shot K: S s]"]),
    (M, "[shot 1: 1s] a [shot 2: 1s] b", PromptError, ["character 15", "must start a line"]),
    (M, "[shot 1: 1s] a <sfx>b", PromptError, ["shot 1", "<sfx> is never closed", "character 12"]),
    (M, "Common @image_0\n[shot 1: 1s] a", PromptError, ["common", "'@image_0'"]),
]


@pytest.mark.parametrize(("function", "argument", "error", "fragments"), BAD_INPUT)
def test_bad_input_raises_a_typed_error_naming_the_problem(function, argument, error, fragments):
    with pytest.raises(error) as info:
        function(argument)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_requested_duration_mismatch_names_every_shot():
    with pytest.raises(PromptError) as info:
        parse_multishot("[shot 1: 2s] a\n[shot 2: 1.5s] b", duration=4.0)
    message = str(info.value)
    for fragment in ("duration", "add up to 3.5", "shot 1: 2.0", "shot 2: 1.5", "requested 4.0"):
        assert fragment in message
    parse_multishot("[shot 1: 2s] a\n[shot 2: 1.5s] b", duration=3.5)  # exact: fine
    with pytest.raises(PromptError, match="duration: expected a finite duration > 0"):
        parse_multishot("[shot 1: 2s] a", duration=math.nan)


@pytest.mark.parametrize(
    ("build", "error", "fragment"),
    [
        (lambda: Shot("a", 0), PromptError, "Shot.seconds: expected a finite duration > 0"),
        (lambda: Shot("a", math.inf), PromptError, "Shot.seconds"),
        (lambda: Shot("a", "2s"), PromptError, "Shot.seconds: expected a duration in seconds (a number)"),
        (lambda: Shot("a", True), PromptError, "Shot.seconds"),
        (lambda: Shot("a <sfx>", 1), PromptError, "Shot.caption at character 2"),
        (lambda: Shot(StructuredCaption(()), 1), PromptError, "Shot.caption: expected a description"),
        (lambda: Shot(3, 1), TypeError, "Shot.caption: expected str or StructuredCaption"),
        (lambda: MultiShotPrompt(()), PromptError, "MultiShotPrompt.shots: expected at least one shot"),
        (lambda: MultiShotPrompt(("a",)), TypeError, "shot 1: expected a Shot"),
        (lambda: Segment("a < b"), PromptError, "Segment.text (visual text) at character 2"),
        (lambda: Segment(" ", Tag.SFX), PromptError, "Segment.text (<sfx>): expected non-blank"),
        (lambda: Segment("a", "sfx"), TypeError, "Segment.tag: expected a Tag"),
        (lambda: StructuredCaption((Segment("hi @image_0"),)), PromptError, "segments[0] at character 3"),
        (lambda: StructuredCaption(("a",)), TypeError, "segments[0]: expected a Segment"),
        (lambda: StructuredCaption.from_parts(sfx="bang"), TypeError, "sfx: expected a sequence of strings"),
    ],
)
def test_python_api_rejects_bad_values(build, error, fragment):
    with pytest.raises(error) as info:
        build()
    assert fragment in str(info.value)


# --- fuzzing -------------------------------------------------------------------------------------------

_FRAGMENTS = st.sampled_from(
    [
        "<sfx>", "</sfx>", "<bgm>", "</bgm>", "<text>", "</text>", "<dialogue>", "</dialogue>", "<singing>",
        "</singing>", "<SFX>", "<foo>", "</", "<", ">", "@image_1", "@image_0", "@video_2", "@audio_",
        "@Actor-0", "@Audio-1", "@", "a@b", "[shot 1: 2s]", "[shot 2: nan]", "[shot ", "\n", " ", "\t",
        "\x00", "\x85", "é", "“", "”", '"', ".", ",", "1.5s", "-", "_", "sings", "music", "sound of",
    ]
)  # fmt: skip
_TEXT = st.lists(st.one_of(_FRAGMENTS, st.text(max_size=8)), max_size=14).map("".join)
_FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(text=_TEXT, images=st.integers(0, 2), videos=st.integers(0, 2), audios=st.integers(0, 2))
def test_fuzz_parse_and_resolve_raise_only_prompt_errors(text, images, videos, audios):
    try:
        parsed = parse_prompt(text)
    except PromptError:
        return
    # Whatever parses round-trips through its canonical text.
    assert parse_prompt(parsed.render()) == parsed
    assert parse_prompt(parsed.render()).render() == parsed.render()
    try:
        resolved = resolve_references(
            parsed,
            images=[f"i{k}.png" for k in range(images)],
            videos=[f"v{k}.mp4" for k in range(videos)],
            audios=[f"a{k}.wav" for k in range(audios)],
        )
    except ReferenceError_:
        return
    assert len(resolved) == images + videos + audios


@_FUZZ
@given(text=_TEXT, duration=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)))
def test_fuzz_multishot_raises_only_prompt_errors(text, duration):
    try:
        prompt = parse_multishot(text, duration=duration)
    except PromptError:
        return
    assert parse_multishot(prompt.render()) == prompt


_SEGMENT_CHARS = st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="<>@")
_SEGMENT_TEXT = st.text(alphabet=_SEGMENT_CHARS, min_size=1, max_size=20).filter(lambda s: s.strip())


@_FUZZ
@given(
    segments=st.lists(st.tuples(_SEGMENT_TEXT, st.sampled_from([None, *Tag])), max_size=6),
    seconds=st.lists(st.floats(min_value=1e-3, max_value=1e3), min_size=1, max_size=4),
)
def test_fuzz_round_trip_of_built_captions_and_shots(segments, seconds):
    caption = StructuredCaption(tuple(Segment(text, tag) for text, tag in segments))
    assert parse_prompt(caption.render(), allow_empty=True) == caption
    if caption.segments and not caption.render().lstrip().lower().startswith("[shot"):
        shots = MultiShotPrompt(tuple(Shot(caption, s) for s in seconds))
        assert parse_multishot(shots.render()) == shots
        assert shots.spans[-1][1] == pytest.approx(sum(seconds))
