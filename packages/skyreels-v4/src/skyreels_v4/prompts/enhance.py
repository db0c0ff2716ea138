"""Prompt enhancers: free-form user text -> the structured captions the model was trained on.

Paper section 3.4.3: "To align user prompts with this format, we employ a prompt enhancer that
reformats free-form input into the structured representation." Two enhancers share the
:class:`PromptEnhancer` protocol (``enhance(text) -> str``):

* :class:`RuleBasedPromptEnhancer`: deterministic rules, no model. Quoted text after a sign word
  and "reads"/"says"/... becomes ``<text>``; other quoted text becomes ``<singing>`` when a
  sing-verb precedes it in the sentence and ``<dialogue>`` otherwise; unquoted clauses (split at
  ``.!?``, ``,`` and ``;``) that sing become ``<singing>``, that mention music ``<bgm>``, that
  mention sound or noise ``<sfx>``. A prompt that already has tags is returned unchanged.
* :class:`LLMPromptEnhancer`: wraps any ``generate(system_prompt, user_prompt) -> str`` (a chat
  LLM the user supplies; :func:`transformers_chat_generate` adapts a transformers model). Its
  output must parse and keep the input's references; otherwise it warns
  (:class:`PromptEnhancerWarning`) and returns the fallback enhancer's result.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from skyreels_v4.errors import PromptError
from skyreels_v4.prompts.caption import DEFAULT_MAX_PROMPT_CHARS, Tag, parse_prompt
from skyreels_v4.prompts.multishot import MultiShotPrompt, Shot

__all__ = [
    "DEFAULT_ENHANCER_SYSTEM_PROMPT",
    "LLMPromptEnhancer",
    "PromptEnhancer",
    "PromptEnhancerWarning",
    "RuleBasedPromptEnhancer",
    "enhance_multishot",
    "transformers_chat_generate",
]

DEFAULT_ENHANCER_SYSTEM_PROMPT = (
    "Rewrite the user's video description as one structured caption. Start with the visual "
    "description (subjects, setting, motion, camera, lighting). Mark in-video text as <text>...</text>, "
    "speech as <dialogue>...</dialogue>, singing as <singing>...</singing>, sound effects as "
    "<sfx>...</sfx> and background music as <bgm>...</bgm>. Tags do not nest and are never empty; do "
    "not use '<' or '>' anywhere else. Keep every reference such as @image_1, @video_1, @audio_1, "
    "@Actor-0 or @Audio-0 exactly as written. Answer with the caption only."
)


class PromptEnhancerWarning(UserWarning):
    """An LLM enhancer's output was unusable and the fallback enhancer's result was used."""


@runtime_checkable
class PromptEnhancer(Protocol):
    """Anything that turns a user prompt into a structured caption's text."""

    def enhance(self, text: str) -> str: ...


_QUOTE = re.compile(r'"([^"]*)"|“([^”]*)”')
_SIGN_CONTEXT = re.compile(
    r"\b(signs?|text|banners?|captions?|titles?|screens?|labels?|posters?|billboards?|subtitles?|boards?|"
    r"words?|letters?|logos?)\b.*\b(reads?|reading|says|saying|shows|showing|displays|displaying|written|printed)"
    r"\b[^\w]*$|\breads?[\s:,]*$",
    re.IGNORECASE,
)
_SING = re.compile(r"\b(sings?|singing|sang|sung|chants?|chanting|hums?|humming)\b", re.IGNORECASE)
_MUSIC = re.compile(r"\b(music|musical|soundtrack|melody|melodies|score)\b", re.IGNORECASE)
_SOUND = re.compile(r"\b(sounds?|sounding|noises?|noisy|sfx)\b", re.IGNORECASE)
# A sentence ends at . ! ? (possibly inside a closing quote) or at a quote placeholder marked \x01.
_SENTENCE = re.compile(r"(?<=[.!?\x01])\s+|(?<=[.!?][\"”])\s+")
_CLAUSE = re.compile(r"([,;]\s+)")
_LEAD = re.compile(r"^((?:and|but|with|while|as|then)\s+)", re.IGNORECASE)
# Quote placeholders: control characters never survive check_prompt_text, so they cannot clash.
_PLACEHOLDER = re.compile("\x00([0-9]+)\x00")


def _quote_tag(before: str) -> Tag:
    sentence = _SENTENCE.split(before)[-1]
    if _SIGN_CONTEXT.search(sentence):
        return Tag.TEXT
    if _SING.search(sentence):
        return Tag.SINGING
    return Tag.DIALOGUE


def _clause_tag(clause: str) -> Tag | None:
    if _SING.search(clause):
        return Tag.SINGING
    if _MUSIC.search(clause):
        return Tag.BGM
    if _SOUND.search(clause):
        return Tag.SFX
    return None


def _wrap_clause(clause: str) -> str:
    if not clause.strip() or _PLACEHOLDER.search(clause):
        return clause  # a clause holding a quote already carries its tag; tags do not nest
    tag = _clause_tag(clause)
    if tag is None:
        return clause
    lead = _LEAD.match(clause)
    head = lead.group(1) if lead else ""
    return f"{head}{tag.open}{clause[len(head) :]}{tag.close}"


class RuleBasedPromptEnhancer:
    """Deterministic free-form -> structured caption rules (module docstring)."""

    def __init__(self, *, max_chars: int = DEFAULT_MAX_PROMPT_CHARS) -> None:
        self.max_chars = max_chars

    def enhance(self, text: str) -> str:
        """The structured caption for ``text`` (``text`` itself when it already has tags).

        Raises:
            PromptError: ``text`` is not a valid prompt (control characters, malformed tags or
                references, ``<``/``>`` outside tags, blank, too long).
        """
        parsed = parse_prompt(text, max_chars=self.max_chars)
        if parsed.has_tags:
            return text
        quotes: list[str] = []

        def replace(match: re.Match[str]) -> str:
            content = match.group(1) if match.group(1) is not None else match.group(2)
            if not content.strip():
                return match.group(0)
            tag = _quote_tag(text[: match.start()])
            quotes.append(f"{tag.open}{content.strip()}{tag.close}")
            ends = "\x01" if content.rstrip()[-1] in ".!?" else ""
            return f"\x00{len(quotes) - 1}\x00{ends}"

        marked = _QUOTE.sub(replace, text)
        sentences = []
        for sentence in _SENTENCE.split(marked.strip()):
            pieces = _CLAUSE.split(sentence)  # clause, separator, clause, ...
            sentences.append("".join(p if i % 2 else _wrap_clause(p) for i, p in enumerate(pieces)))
        joined = " ".join(sentences).replace("\x01", "")
        result = _PLACEHOLDER.sub(lambda m: quotes[int(m.group(1))], joined)
        return parse_prompt(result, max_chars=self.max_chars + 64 * (len(quotes) + len(sentences))).render()


def _reference_set(text: str) -> set[str]:
    return {reference.canonical for reference in parse_prompt(text, allow_empty=True).references}


class LLMPromptEnhancer:
    """An LLM that rewrites prompts, checked, with a fallback (module docstring).

    Args:
        generate: ``generate(system_prompt, user_prompt) -> str``, e.g.
            :func:`transformers_chat_generate` (model, tokenizer).
        system_prompt: instructions given to the LLM.
        fallback: enhancer used when the LLM output is unusable (default: rule-based).
        max_chars: longest prompt accepted from the user and from the LLM.
    """

    def __init__(
        self,
        generate: Callable[[str, str], str],
        *,
        system_prompt: str = DEFAULT_ENHANCER_SYSTEM_PROMPT,
        fallback: PromptEnhancer | None = None,
        max_chars: int = DEFAULT_MAX_PROMPT_CHARS,
    ) -> None:
        if not callable(generate):
            raise TypeError(
                f"generate: expected a callable (system_prompt, user_prompt) -> str, got {generate!r}"
            )
        if fallback is not None and not isinstance(fallback, PromptEnhancer):
            raise TypeError(f"fallback: expected a PromptEnhancer (with .enhance(text)), got {fallback!r}")
        self.generate = generate
        self.system_prompt = system_prompt
        self.fallback: PromptEnhancer = fallback or RuleBasedPromptEnhancer(max_chars=max_chars)
        self.max_chars = max_chars

    def _problem(self, text: str, output: object) -> str | None:
        if not isinstance(output, str):
            return f"generate returned {type(output).__name__}, expected str"
        try:
            parsed = parse_prompt(output.strip(), max_chars=self.max_chars)
        except PromptError as error:
            return f"its output does not parse ({error})"
        wanted = _reference_set(text)
        got = {reference.canonical for reference in parsed.references}
        if got != wanted:
            return f"its output has references {sorted(got)}, expected those of the input {sorted(wanted)}"
        return None

    def enhance(self, text: str) -> str:
        """The LLM's structured caption for ``text``, or the fallback's when it is unusable.

        Raises:
            PromptError: ``text`` itself is not a valid prompt.
            Exception: whatever ``generate`` raises propagates (a broken model is not a bad output).
        """
        parse_prompt(text, max_chars=self.max_chars)
        output = self.generate(self.system_prompt, text)
        problem = self._problem(text, output)
        if problem is None and isinstance(output, str):
            return parse_prompt(output.strip(), max_chars=self.max_chars).render()
        warnings.warn(
            f"LLMPromptEnhancer: {problem}; using {type(self.fallback).__name__} instead",
            PromptEnhancerWarning,
            stacklevel=2,
        )
        return self.fallback.enhance(text)


def enhance_multishot(prompt: MultiShotPrompt, enhancer: PromptEnhancer) -> MultiShotPrompt:
    """``prompt`` with the common caption and every shot's caption passed through ``enhancer``."""
    common = prompt.common
    if common.segments:
        common = parse_prompt(enhancer.enhance(common.render()), where="common")
    shots = tuple(
        Shot(parse_prompt(enhancer.enhance(shot.caption.render()), where=f"shot {k}"), shot.seconds)
        for k, shot in enumerate(prompt.shots, start=1)
    )
    return MultiShotPrompt(shots, common)


def transformers_chat_generate(
    model: Any, tokenizer: Any, *, max_new_tokens: int = 512
) -> Callable[[str, str], str]:
    """A ``generate(system_prompt, user_prompt) -> str`` over a transformers causal LM with a chat template.

    Greedy decoding of at most ``max_new_tokens``; only the new tokens are decoded. The model and
    tokenizer are whatever the user loaded (nothing is downloaded here).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: expected >= 1, got {max_new_tokens}")
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("tokenizer: expected a tokenizer with a chat_template, got one without")

    def generate(system_prompt: str, user_prompt: str) -> str:
        messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": user_prompt}]
        inputs = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        inputs = {name: value.to(model.device) for name, value in inputs.items()}
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new_tokens = output[0, inputs["input_ids"].shape[1] :]
        return str(tokenizer.decode(new_tokens, skip_special_tokens=True))

    return generate
