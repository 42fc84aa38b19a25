"""Prompt parsing for T2I-CompBench: noun phrases and (object, relation, object) triples.

The official scorer parses prompts with spaCy's ``en_core_web_sm`` (noun chunks for the
VQA questions; first and last noun for the spatial pair). That model is not a PyPI package,
so t2ir1 uses rules written for T2I-CompBench's templated prompts ("a green bench and a red
car", "a bird on side of a clock"): a prompt is cut at conjunctions, commas and relation
words, and each piece that still has words is a phrase. ``parser: spacy`` uses spaCy
instead when it and the named pipeline are installed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# Relation phrases of T2I-CompBench's spatial prompts, in the official matching order.
SPATIAL_LOCALITIES = (
    "on side of",
    "next to",
    "near",
    "on the left of",
    "on the right of",
    "on the bottom of",
    "on the top of",
    "on top of",
)
# Extra relation words that end a noun phrase (prepositions and conjunctions of the prompts).
PHRASE_BREAKS = (
    *SPATIAL_LOCALITIES,
    "and",
    "with",
    "on",
    "in",
    "under",
    "behind",
    "beside",
    "above",
    "below",
    "over",
    "inside",
    "at",
    "by",
    "from",
    "to",
    "into",
    "of",
)
ARTICLES = ("a", "an", "the")


def _break_pattern(words: Sequence[str]) -> re.Pattern[str]:
    alternatives = sorted(words, key=len, reverse=True)  # longest relation first
    return re.compile(
        r"\s*(?:[,;:]|\b(?:" + "|".join(re.escape(w) for w in alternatives) + r")\b)\s*", re.IGNORECASE
    )


_BREAKS = _break_pattern(PHRASE_BREAKS)


def clean_prompt(prompt: str) -> str:
    """First tab-separated field, trailing full stop removed, spaces collapsed (as the official scripts read lines)."""
    text = prompt.split("\t")[0].strip()
    return " ".join(text.rstrip(".").split())


def rule_noun_phrases(prompt: str) -> list[str]:
    """Noun phrases of a templated prompt: the pieces between conjunctions, commas and relation words."""
    pieces = _BREAKS.split(clean_prompt(prompt))
    return [
        p.strip() for p in pieces if p and re.search(r"[A-Za-z]", p) and p.strip().lower() not in ARTICLES
    ]


class PhraseParser:
    """``noun_phrases(prompt)`` by rules (default) or spaCy noun chunks (``parser="spacy"``)."""

    def __init__(self, parser: str = "rules", spacy_model: str = "en_core_web_sm"):
        if parser not in ("rules", "spacy"):
            raise ValueError(f"phrase parser {parser!r} is unknown; use 'rules' or 'spacy'")
        self.parser = parser
        self.spacy_model = spacy_model
        self._nlp = None

    def noun_phrases(self, prompt: str) -> list[str]:
        if self.parser == "rules":
            return rule_noun_phrases(prompt)
        if self._nlp is None:
            try:
                import spacy

                self._nlp = spacy.load(self.spacy_model)
            except (ImportError, OSError) as err:
                raise RuntimeError(
                    f"phrase parser 'spacy' needs spaCy and its {self.spacy_model!r} pipeline ({err}); "
                    "install them or use benchmark.phrase_parser=rules"
                ) from err
        return [chunk.text for chunk in self._nlp(clean_prompt(prompt)).noun_chunks]


def head_noun(phrase: str) -> str:
    """The last word of a phrase without punctuation (the head of "a red wooden chair" is "chair")."""
    words = re.findall(r"[A-Za-z][A-Za-z'-]*", phrase)
    return words[-1].lower() if words else ""


def spatial_triple(
    prompt: str, localities: Sequence[str] = SPATIAL_LOCALITIES
) -> tuple[str, str, str] | None:
    """``(obj1, locality, obj2)`` of "<obj1 phrase> <locality> <obj2 phrase>", or None without a relation.

    The first locality of ``localities`` found in the prompt wins (the official order); the
    objects are the head nouns of the text before and after it (the official first and
    last noun for these templates).
    """
    text = clean_prompt(prompt).lower()
    for locality in localities:
        match = re.search(r"\b" + re.escape(locality) + r"\b", text)
        if match:
            before, after = text[: match.start()], text[match.end() :]
            after_phrase = rule_noun_phrases(after)
            obj1 = head_noun(before)
            obj2 = head_noun(after_phrase[0]) if after_phrase else ""
            if obj1 and obj2:
                return obj1, locality, obj2
            return None
    return None
