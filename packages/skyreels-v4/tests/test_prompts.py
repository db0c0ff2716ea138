"""skyreels_v4.prompts: structured captions, references, multi-shot markup and the combined prompt."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from skyreels_v4.errors import PromptError, ReferenceError_
from skyreels_v4.prompts import (
    MultiShotPrompt,
    ParsedPrompt,
    Reference,
    ReferenceKind,
    ResolvedReference,
    Segment,
    SegmentOrder,
    Shot,
    StructuredCaption,
    Tag,
    combined_prompt,
    format_seconds,
    has_shot_markup,
    parse_multishot,
    parse_prompt,
    resolve_references,
)

# The appendix A.1.1 instruction (Fig. 6), verbatim.
APPENDIX = (
    "In an elegantly decorated indoor environment with warm, intimate lighting, two people sit facing each "
    "other across a dark wooden table. The camera first focuses on @Actor-0, looking weary, says softly, "
    "<dialogue>I’m a little tired, I’m going back to my room to rest.</dialogue>@Audio-0. @Actor-1 sits "
    "across from @Actor-0, hands clasped on the table, and says with determination, <dialogue>I will pay a "
    "visit to your parents tomorrow.</dialogue>@Audio-1. Then @Actor-0 in another room, by the window, holds "
    "her phone to her ear and speaks, <dialogue>Mom, Li Zeting said he’s coming to our house tomorrow."
    "</dialogue>@Audio-0. The scene shifts to another location—a warm-toned home interior, with a red fabric "
    "sofa visible in the background. @Actor-2, sitting tensely with phone to her ear, worries, <dialogue>But "
    "with our family’s situation, do you think he might look down on us?</dialogue>@Audio-2. <bgm>Soft, "
    "sorrowful music plays during the first two shots, transitioning to slow, melancholic tense music for "
    "the last two shots.</bgm>"
)


# --- structured captions -------------------------------------------------------------------------------


def test_parse_splits_visual_and_tags_in_order():
    p = parse_prompt(
        "A street at night.  <text>OPEN 24H</text> A man says\n<dialogue>Hello.</dialogue> "
        "<singing>La la.</singing> <sfx>Rain on glass.</sfx> <bgm>Slow jazz.</bgm> <sfx>A horn.</sfx>"
    )
    assert isinstance(p, StructuredCaption) and ParsedPrompt is StructuredCaption
    assert [(s.tag, s.text) for s in p.segments] == [
        (None, "A street at night."),
        (Tag.TEXT, "OPEN 24H"),
        (None, "A man says"),
        (Tag.DIALOGUE, "Hello."),
        (Tag.SINGING, "La la."),
        (Tag.SFX, "Rain on glass."),
        (Tag.BGM, "Slow jazz."),
        (Tag.SFX, "A horn."),
    ]
    assert p.visual == "A street at night. A man says"
    assert p.in_video_text == ("OPEN 24H",)
    assert p.dialogue == ("Hello.",)
    assert p.singing == ("La la.",)
    assert p.sfx == ("Rain on glass.", "A horn.")
    assert p.bgm == ("Slow jazz.",)
    assert p.tagged(Tag.SFX) == p.sfx and p.has_tags
    assert p.render() == (
        "A street at night. <text>OPEN 24H</text> A man says <dialogue>Hello.</dialogue> "
        "<singing>La la.</singing> <sfx>Rain on glass.</sfx> <bgm>Slow jazz.</bgm> <sfx>A horn.</sfx>"
    )


def test_render_is_canonical_and_round_trips():
    messy = "  A  cat\tsleeps .<sfx>  soft\n purring </sfx>.Then it wakes. "
    p = parse_prompt(messy)
    assert p.render() == "A cat sleeps . <sfx>soft purring</sfx>.Then it wakes."
    assert parse_prompt(p.render()) == p
    assert parse_prompt(p.render()).render() == p.render()
    # No space is inserted before closing punctuation that follows a tag.
    sign = "A sign reads <text>OPEN</text>. A dog"
    assert parse_prompt(sign).render() == sign


@pytest.mark.parametrize("seed", range(6))
def test_world_captions_parse_and_pass_through_unchanged(seed):
    from skyreels_v4.world import WorldConfig, WorldSplit, caption, clip_rng, sample_scene

    scene = sample_scene(WorldConfig(), clip_rng(seed, 0, WorldSplit.ALL), WorldSplit.ALL)
    text = caption(scene)
    p = parse_prompt(text)
    assert p.visual.endswith("box.") and "bounce" in p.visual
    assert len(p.sfx) == 1 and "Hz blip" in p.sfx[0]
    assert p.bgm == (("A quiet low drone plays throughout.",) if scene.has_bgm else ())
    assert p.render() == text  # the world writes canonical captions
    assert combined_prompt(p) == text  # and in the standard order: the tiny model sees the same text


def test_from_parts_builds_the_standard_order():
    c = StructuredCaption.from_parts(
        "A choir on a stage.",
        text=["WELCOME"],
        dialogue=["Hi."],
        singing=["Amen."],
        sfx=["Claps."],
        bgm=["Organ."],
    )
    assert c.render() == (
        "A choir on a stage. <text>WELCOME</text> <dialogue>Hi.</dialogue> <singing>Amen.</singing> "
        "<sfx>Claps.</sfx> <bgm>Organ.</bgm>"
    )
    assert parse_prompt(c.render()) == c
    assert StructuredCaption.from_parts(sfx=["A bang."]).render() == "<sfx>A bang.</sfx>"


def test_segments_normalise_and_adjacent_visual_pieces_merge():
    c = StructuredCaption((Segment("a  dog "), Segment(" runs"), Segment("woof", Tag.SFX), Segment(".")))
    assert c.segments == (Segment("a dog runs"), Segment("woof", Tag.SFX), Segment("."))
    assert c.render() == "a dog runs <sfx>woof</sfx>."
    assert parse_prompt(c.render()) == c


def test_empty_prompt_only_when_allowed():
    assert parse_prompt("   ", allow_empty=True) == StructuredCaption(())
    assert parse_prompt("", allow_empty=True).render() == ""
    with pytest.raises(PromptError, match="blank prompt"):
        parse_prompt(" \n ")


def test_tag_only_prompt_has_empty_visual():
    p = parse_prompt("<sfx>Thunder.</sfx>")
    assert p.visual == "" and p.sfx == ("Thunder.",)


# --- references -----------------------------------------------------------------------------------------


def test_references_in_order_with_aliases():
    p = parse_prompt(
        "generate a video of person A from the reference @image_1 speaking <dialogue>hello, how are you?"
        "</dialogue> in the style of person B's @video_1, voice @audio_2."
    )
    assert p.references == (
        Reference(ReferenceKind.IMAGE, 1, "@image_1"),
        Reference(ReferenceKind.VIDEO, 1, "@video_1"),
        Reference(ReferenceKind.AUDIO, 2, "@audio_2"),
    )
    assert [r.canonical for r in p.references] == ["@image_1", "@video_1", "@audio_2"]


def test_appendix_prompt_aliases_count_from_zero():
    p = parse_prompt(APPENDIX)
    assert len(p.dialogue) == 4 and len(p.bgm) == 1
    assert [r.spelling for r in p.references][:4] == ["@Actor-0", "@Audio-0", "@Actor-1", "@Actor-0"]
    assert p.references[0].canonical == "@image_1" and p.references[1].canonical == "@audio_1"
    assert p.references[0].describe() == "@Actor-0 (= @image_1)"
    images, audios = ["a0.png", "a1.png", "a2.png"], ["v0.wav", "v1.wav", "v2.wav"]
    resolved = resolve_references(p, images=images, audios=audios)
    # Each distinct reference once, in order of first appearance.
    assert [(r.kind, r.index, r.item, r.spelling) for r in resolved] == [
        (ReferenceKind.IMAGE, 1, "a0.png", "@Actor-0"),
        (ReferenceKind.AUDIO, 1, "v0.wav", "@Audio-0"),
        (ReferenceKind.IMAGE, 2, "a1.png", "@Actor-1"),
        (ReferenceKind.AUDIO, 2, "v1.wav", "@Audio-1"),
        (ReferenceKind.IMAGE, 3, "a2.png", "@Actor-2"),
        (ReferenceKind.AUDIO, 3, "v2.wav", "@Audio-2"),
    ]
    assert parse_prompt(p.render()) == p


def test_at_signs_that_are_not_references():
    p = parse_prompt("Mail bob@example.com, meet @ noon, costs 5@3 or @.")
    assert p.references == ()


def test_resolve_returns_the_supplied_objects_in_order():
    image = np.zeros((3, 8, 8), np.float32)
    video = np.zeros((3, 5, 8, 8), np.float32)
    audio = np.zeros((2, 100), np.float32)
    p = parse_prompt("@video_1 then @image_1, then @image_2 with @audio_1 and @image_1 again")
    resolved = resolve_references(p, images=[image, Path("b.JPG")], videos=[video], audios=[audio])
    assert [(r.kind, r.index) for r in resolved] == [
        (ReferenceKind.VIDEO, 1),
        (ReferenceKind.IMAGE, 1),
        (ReferenceKind.IMAGE, 2),
        (ReferenceKind.AUDIO, 1),
    ]
    assert resolved[0].item is video and resolved[1].item is image and resolved[3].item is audio
    assert resolved[2] == ResolvedReference(ReferenceKind.IMAGE, 2, Path("b.JPG"), "@image_2")
    assert resolve_references(parse_prompt("no references")) == []
    # Objects whose kind cannot be told (no suffix, no ndim) are passed through.
    opaque = object()
    assert resolve_references(parse_prompt("@image_1"), images=[opaque])[0].item is opaque


@pytest.mark.parametrize(
    ("prompt", "kwargs", "fragments"),
    [
        ("@image_2 @image_1", {"images": ["a.png"]}, ["@image_2 refers to image 2", "images has 1 item"]),
        ("@image_1", {"videos": ["a.mp4"]}, ["refers to image 1", "videos has an item 1", "videos[0]"]),
        ("@image_1", {"images": ["a.png", "b.png"]}, ["images[1] (@image_2) is supplied but never"]),
        ("@image_1", {"images": ["clip.mp4"]}, ["images[0] (@image_1)", "a .mp4 file, which is a video"]),
        ("@video_1", {"videos": [np.zeros((3, 8, 8))]}, ["videos[0]", "[3, 8, 8]", "looks like an image"]),
        ("@audio_1", {"audios": [np.zeros((1, 2, 9))]}, ["audios[0]", "[channels, samples]", "[1, 2, 9]"]),
        ("@Actor-1", {"images": ["a.png"]}, ["@Actor-1 (= @image_2) refers to image 2"]),
        ("no refs", {"audios": ["a.wav"]}, ["audios[0] (@audio_1) is supplied but never referenced"]),
    ],
)
def test_resolve_reference_errors_name_the_reference(prompt, kwargs, fragments):
    with pytest.raises(ReferenceError_) as info:
        resolve_references(parse_prompt(prompt), **kwargs)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_resolve_argument_types():
    with pytest.raises(TypeError, match="images: expected a sequence"):
        resolve_references(parse_prompt("@image_1"), images="a.png")
    with pytest.raises(TypeError, match="prompt: expected StructuredCaption"):
        resolve_references("@image_1", images=["a.png"])


# --- multi-shot -----------------------------------------------------------------------------------------

MULTISHOT = """Two people at a wooden table. <bgm>Soft, sorrowful music.</bgm>
[shot 1: 2.5s] The camera focuses on @Actor-0, who says softly,
<dialogue>I'm a little tired.</dialogue>@Audio-0.
[Shot 2: 1.5 s] @Actor-1 answers <dialogue>I will visit tomorrow.</dialogue>@Audio-1.
[shot 3: 1] A close-up of a phone. <sfx>A ring tone.</sfx>
"""


def test_parse_multishot_values():
    m = parse_multishot(MULTISHOT, duration=5.0)
    assert len(m.shots) == 3
    assert [s.seconds for s in m.shots] == [2.5, 1.5, 1.0]
    assert m.spans == ((0.0, 2.5), (2.5, 4.0), (4.0, 5.0))
    assert m.duration == 5.0
    assert m.common.bgm == ("Soft, sorrowful music.",)
    assert m.shots[0].caption.dialogue == ("I'm a little tired.",)
    assert m.shots[2].caption.sfx == ("A ring tone.",)
    assert [r.canonical for r in m.references] == ["@image_1", "@audio_1", "@image_2", "@audio_2"]
    assert m.render().splitlines()[1] == (
        "[shot 1: 2.5s] The camera focuses on @Actor-0, who says softly, "
        "<dialogue>I'm a little tired.</dialogue> @Audio-0."
    )
    assert parse_multishot(m.render()) == m
    assert has_shot_markup(MULTISHOT) and not has_shot_markup("A dog [barks].")
    resolved = resolve_references(m, images=["a.png", "b.png"], audios=["a.wav", "b.wav"])
    assert [r.item for r in resolved] == ["a.png", "a.wav", "b.png", "b.wav"]


def test_multishot_python_api_and_spans():
    m = MultiShotPrompt((Shot("A cat. <sfx>Meow.</sfx>", 0.1), Shot(parse_prompt("A dog."), 0.2)))
    assert m.shots[0].caption.sfx == ("Meow.",)
    assert m.common == StructuredCaption(())
    assert m.spans[1] == (0.1, 0.1 + 0.2) and m.duration == math.fsum([0.1, 0.2])
    m.check_duration(0.3)  # 0.1 + 0.2 != 0.3 in floating point, within the tolerance
    assert m.render() == "[shot 1: 0.1s] A cat. <sfx>Meow.</sfx>\n[shot 2: 0.2s] A dog."
    assert parse_multishot(m.render()) == m
    assert Shot("x", 2).seconds == 2.0 and isinstance(Shot("x", 2).seconds, float)


def test_combined_prompt_orders():
    p = parse_prompt("A man says <dialogue>Hi.</dialogue> and waves. <bgm>Jazz.</bgm> <text>EXIT</text>")
    standard = "A man says and waves. <text>EXIT</text> <dialogue>Hi.</dialogue> <bgm>Jazz.</bgm>"
    assert combined_prompt(p) == standard
    assert combined_prompt(p, order=SegmentOrder.AS_WRITTEN) == p.render()
    m = parse_multishot(MULTISHOT)
    assert combined_prompt(m).splitlines() == [
        "Two people at a wooden table. <bgm>Soft, sorrowful music.</bgm>",
        "Shot 1 (0-2.5 s): The camera focuses on @Actor-0, who says softly, @Audio-0. "
        "<dialogue>I'm a little tired.</dialogue>",
        "Shot 2 (2.5-4 s): @Actor-1 answers @Audio-1. <dialogue>I will visit tomorrow.</dialogue>",
        "Shot 3 (4-5 s): A close-up of a phone. <sfx>A ring tone.</sfx>",
    ]
    single = MultiShotPrompt((Shot("A dog.", 2.0),))
    assert combined_prompt(single) == "Shot 1 (0-2 s): A dog."
    assert [format_seconds(x) for x in (0.0, 2.0, 2.25, 1 / 3, 10.5)] == ["0", "2", "2.25", "0.333", "10.5"]
    with pytest.raises(TypeError, match="order"):
        combined_prompt(p, order="standard")
    with pytest.raises(TypeError, match="prompt"):
        combined_prompt("A dog.")


def test_prompts_package_does_not_import_torch():
    code = "import sys, skyreels_v4.prompts; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
