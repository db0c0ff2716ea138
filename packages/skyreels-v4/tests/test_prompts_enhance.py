"""skyreels_v4.prompts enhancers: rule-based reformatting and the checked LLM wrapper."""

from __future__ import annotations

import warnings

import pytest

from skyreels_v4.errors import PromptError
from skyreels_v4.prompts import (
    DEFAULT_ENHANCER_SYSTEM_PROMPT,
    LLMPromptEnhancer,
    PromptEnhancer,
    PromptEnhancerWarning,
    RuleBasedPromptEnhancer,
    enhance_multishot,
    parse_multishot,
    parse_prompt,
    transformers_chat_generate,
)

RULES = RuleBasedPromptEnhancer()


@pytest.mark.parametrize(
    ("free", "structured"),
    [
        (
            "A dog runs on the beach. The sound of waves crashing fills the air.",
            "A dog runs on the beach. <sfx>The sound of waves crashing fills the air.</sfx>",
        ),
        (
            'A man walks into a cafe and says "Good morning!" while soft jazz music plays.',
            "A man walks into a cafe and says <dialogue>Good morning!</dialogue> while "
            "<bgm>soft jazz music plays.</bgm>",
        ),
        (
            'A shop with a sign that reads "OPEN 24H". A woman sings "la la la." Rain sounds on the roof.',
            "A shop with a sign that reads <text>OPEN 24H</text>. A woman sings <singing>la la la.</singing> "
            "<sfx>Rain sounds on the roof.</sfx>",
        ),
        (
            "A girl on a swing, and she sings softly about the sea; a dog barks with a loud noise.",
            "A girl on a swing, and <singing>she sings softly about the sea</singing>; "
            "<sfx>a dog barks with a loud noise.</sfx>",
        ),
        (
            "@image_1 speaking “hello, how are you?” in the style of @video_1",
            "@image_1 speaking <dialogue>hello, how are you?</dialogue> in the style of @video_1",
        ),
        ('The screen displays "GAME OVER".', "The screen displays <text>GAME OVER</text>."),
        ("A quiet   empty room.", "A quiet empty room."),
        ('He says "" and leaves.', 'He says "" and leaves.'),
    ],
)
def test_rule_based_enhancer_values(free, structured):
    out = RULES.enhance(free)
    assert out == structured
    assert parse_prompt(out).render() == out  # canonical, parses


def test_rule_based_enhancer_keeps_structured_prompts_unchanged():
    structured = "A red circle bounces.  <sfx>A 440 Hz blip.</sfx> The sound of music? <bgm>Drone.</bgm>"
    assert RULES.enhance(structured) == structured
    assert isinstance(RULES, PromptEnhancer)


def test_rule_based_enhancer_rejects_bad_prompts():
    with pytest.raises(PromptError, match="stray '<'"):
        RULES.enhance("x < y sounds")
    with pytest.raises(PromptError, match="control character"):
        RULES.enhance("a\x00b")


def test_enhance_multishot_enhances_each_caption():
    m = parse_multishot('Soft music plays.\n[shot 1: 1s] He says "hi".\n[shot 2: 2s] A door slam sound.')
    out = enhance_multishot(m, RULES)
    assert out.common.bgm == ("Soft music plays.",)
    assert out.shots[0].caption.dialogue == ("hi",)
    assert out.shots[1].caption.sfx == ("A door slam sound.",)
    assert [s.seconds for s in out.shots] == [1.0, 2.0]


def test_llm_enhancer_uses_valid_output_and_passes_the_prompts():
    calls = []

    def generate(system_prompt, user_prompt):
        calls.append((system_prompt, user_prompt))
        return "  @image_1 waves.   <dialogue>Hi!</dialogue>\n"

    enhancer = LLMPromptEnhancer(generate)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert enhancer.enhance('@image_1 waves and says "Hi!"') == "@image_1 waves. <dialogue>Hi!</dialogue>"
    assert calls == [(DEFAULT_ENHANCER_SYSTEM_PROMPT, '@image_1 waves and says "Hi!"')]
    assert isinstance(enhancer, PromptEnhancer)


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ("A dog <sfx>barks", "does not parse"),
        ("A dog barks.", "references []"),  # dropped @image_1
        ("@image_1 and @image_2 bark.", "references ['@image_1', '@image_2']"),  # invented one
        (None, "generate returned NoneType"),
        ("", "does not parse"),
    ],
)
def test_llm_enhancer_falls_back_with_a_warning(output, reason):
    enhancer = LLMPromptEnhancer(lambda system, user: output)
    with pytest.warns(PromptEnhancerWarning) as record:
        result = enhancer.enhance("@image_1 barks. The sound of rain.")
    assert result == RULES.enhance("@image_1 barks. The sound of rain.")
    assert reason in str(record[0].message) and "RuleBasedPromptEnhancer" in str(record[0].message)


def test_llm_enhancer_validates_its_arguments():
    with pytest.raises(TypeError, match="generate: expected a callable"):
        LLMPromptEnhancer("gpt")
    with pytest.raises(TypeError, match="fallback: expected a PromptEnhancer"):
        LLMPromptEnhancer(lambda s, u: s, fallback=object())
    with pytest.raises(PromptError, match="stray '>'"):
        LLMPromptEnhancer(lambda s, u: "never called").enhance("a > b")


def _tiny_chat_model():
    """A random 1-layer Llama and a word-level tokenizer with a chat template, built offline."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "[UNK]"]
    words = [*special, "system", "user", "assistant", "A", "dog", "barks", "."]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="[UNK]",
        additional_special_tokens=special[1:3],
    )
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
        "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
    )
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(words),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        eos_token_id=0,
        pad_token_id=0,
        bos_token_id=0,
    )
    return transformers.LlamaForCausalLM(config).eval(), tokenizer


def test_transformers_chat_generate_decodes_only_new_tokens():
    model, tokenizer = _tiny_chat_model()
    generate = transformers_chat_generate(model, tokenizer, max_new_tokens=4)
    text = generate("system words", "A dog barks .")
    # Reference: the same greedy decode by hand.
    ids = tokenizer.apply_chat_template(
        [{"role": "system", "content": "system words"}, {"role": "user", "content": "A dog barks ."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    full = model.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
    assert text == tokenizer.decode(full[0, ids.shape[1] :], skip_special_tokens=True)
    assert "system words" not in text
    # A random model's output does not keep the reference: the enhancer falls back.
    with pytest.warns(PromptEnhancerWarning):
        out = LLMPromptEnhancer(generate).enhance("@image_1 barks. The sound of rain.")
    assert out == "@image_1 barks. <sfx>The sound of rain.</sfx>"
    with pytest.raises(ValueError, match="max_new_tokens"):
        transformers_chat_generate(model, tokenizer, max_new_tokens=0)
