"""Prompts: structured captions (paper 3.4.3), references (3.3, appendix A), multi-shot markup,
the combined visual + acoustic prompt (3.1) and prompt enhancers. Pure Python: no torch import.

Syntax, examples and the error table: docs/prompts.md.
"""

from skyreels_v4.prompts.caption import (
    DEFAULT_MAX_PROMPT_CHARS,
    ParsedPrompt,
    Segment,
    StructuredCaption,
    Tag,
    check_prompt_text,
    parse_prompt,
)
from skyreels_v4.prompts.combined import SegmentOrder, combined_prompt, format_seconds
from skyreels_v4.prompts.enhance import (
    DEFAULT_ENHANCER_SYSTEM_PROMPT,
    LLMPromptEnhancer,
    PromptEnhancer,
    PromptEnhancerWarning,
    RuleBasedPromptEnhancer,
    enhance_multishot,
    transformers_chat_generate,
)
from skyreels_v4.prompts.multishot import (
    DURATION_TOLERANCE_S,
    MultiShotPrompt,
    Shot,
    has_shot_markup,
    parse_multishot,
)
from skyreels_v4.prompts.references import Reference, ReferenceKind, scan_references
from skyreels_v4.prompts.resolve import MEDIA_SUFFIXES, ResolvedReference, resolve_references

__all__ = [
    "DEFAULT_ENHANCER_SYSTEM_PROMPT",
    "DEFAULT_MAX_PROMPT_CHARS",
    "DURATION_TOLERANCE_S",
    "MEDIA_SUFFIXES",
    "LLMPromptEnhancer",
    "MultiShotPrompt",
    "ParsedPrompt",
    "PromptEnhancer",
    "PromptEnhancerWarning",
    "Reference",
    "ReferenceKind",
    "ResolvedReference",
    "RuleBasedPromptEnhancer",
    "Segment",
    "SegmentOrder",
    "Shot",
    "StructuredCaption",
    "Tag",
    "check_prompt_text",
    "combined_prompt",
    "enhance_multishot",
    "format_seconds",
    "has_shot_markup",
    "parse_multishot",
    "parse_prompt",
    "resolve_references",
    "scan_references",
    "transformers_chat_generate",
]
