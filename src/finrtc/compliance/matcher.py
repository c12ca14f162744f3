"""Phrase matching on recognized text: tolerant of ASR noise, aware of negation.

The matcher works on text alone, so it can be tested and reasoned about without audio.

- English is compared word by word. A same-stem form ("understand" for "understood") costs
  0.3, any other substitution, insertion or deletion costs 1 ("game" is not "name"). Every
  content word (4+ letters) of the phrase must be present, so noise may garble "is" or "by"
  but not "policy" ("this pottery is issued by" does not match "this policy is issued by").
- Chinese is compared syllable by syllable on toneless pinyin, after converting traditional
  characters to simplified ones. Homophones (了解 / 了结) therefore cost nothing, and near
  syllables that ASR confuses (zh/z, in/ing, n/l) cost half.
- A phrase matches when its cheapest alignment anywhere inside the text costs at most
  `tolerance` times the phrase length (in words / syllables).
- Negation: for stages where the speaker agrees or confirms, a negation cue that is not part of
  the accepted phrase itself ("I do *not* agree", "我*不*同意", "*没有*了解") anywhere in the
  utterance rejects the match. Customers' confirmations are short, so a cue anywhere in the
  utterance is a reason to ask again rather than a reason to count it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")

# Contractions are expanded before tokenizing so "don't" and "do not" look the same.
_CONTRACTIONS = {
    "can't": "can not",
    "cannot": "can not",
    "won't": "will not",
    "shan't": "shall not",
    "ain't": "am not",
}
_NT = re.compile(r"([a-z]+)n't\b")

ENGLISH_NEGATIONS = frozenset(
    {
        "not", "no", "never", "nope", "neither", "nor", "disagree", "refuse", "decline",
        "reject", "unclear",
    }
)
# Single characters that negate what follows in Mandarin. Checked on characters (after
# traditional -> simplified), not on pinyin, because "bu" is also 部 / 步 / 布.
CHINESE_NEGATIONS = frozenset({"不", "没", "未", "别", "无", "非", "否", "拒"})

# Pinyin initials / finals that Mandarin ASR and regional accents confuse.
_NEAR_INITIALS = {("zh", "z"), ("ch", "c"), ("sh", "s"), ("n", "l"), ("f", "h"), ("r", "l")}
_NEAR_FINALS = {("ing", "in"), ("eng", "en"), ("ang", "an"), ("iang", "ian"), ("uang", "uan")}
_INITIALS = (
    "zh", "ch", "sh", "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h",
    "j", "q", "x", "r", "z", "c", "s", "y", "w",
)


def is_cjk(char: str) -> bool:
    """Whether `char` is a Chinese character (the matcher compares those on pinyin)."""
    return _CJK.fullmatch(char) is not None


@dataclass(frozen=True, slots=True)
class Token:
    # What is compared (a lowercase word or a toneless pinyin syllable) ...
    key: str
    # ... and what was actually said (the word or the Chinese character).
    surface: str
    cjk: bool


@dataclass(frozen=True, slots=True)
class Match:
    phrase: str
    # The span of the input that aligned with the phrase, as spoken.
    matched_text: str
    distance: float
    # 1.0 for an exact match, falling linearly to 0.0 at the tolerance limit ... and below.
    score: float
    negated: bool
    negation_cue: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "phrase": self.phrase,
            "matched_text": self.matched_text,
            "distance": round(self.distance, 3),
            "score": round(self.score, 3),
            "negated": self.negated,
            "negation_cue": self.negation_cue,
        }


class _Converter:
    """Traditional -> simplified, loaded lazily: OpenCC's tables take a moment to read."""

    _instance: Any = None

    @classmethod
    def convert(cls, text: str) -> str:
        if cls._instance is None:
            import opencc

            cls._instance = opencc.OpenCC("t2s")
        return str(cls._instance.convert(text))


@lru_cache(maxsize=8192)
def _pinyin(run: str) -> tuple[str, ...]:
    """Toneless pinyin of a run of CJK characters, one syllable per character.

    Converted as a run, not char by char, so pypinyin's word list picks the reading in
    context (了解 -> liao jie, not le jie).
    """
    from pypinyin import Style, lazy_pinyin

    syllables = lazy_pinyin(run, style=Style.NORMAL)
    if len(syllables) != len(run):
        syllables = [lazy_pinyin(char, style=Style.NORMAL)[0] for char in run]
    return tuple(syllables)


def _split_initial(syllable: str) -> tuple[str, str]:
    for initial in _INITIALS:
        if syllable.startswith(initial) and len(syllable) > len(initial):
            return initial, syllable[len(initial):]
    return "", syllable


def _near(pair: tuple[str, str], table: set[tuple[str, str]]) -> bool:
    return pair in table or (pair[1], pair[0]) in table


@lru_cache(maxsize=65536)
def _syllable_cost(a: str, b: str) -> float:
    if a == b:
        return 0.0
    initial_a, final_a = _split_initial(a)
    initial_b, final_b = _split_initial(b)
    if initial_a == initial_b and _near((final_a, final_b), _NEAR_FINALS):
        return 0.5
    if final_a == final_b and _near((initial_a, initial_b), _NEAR_INITIALS):
        return 0.5
    return 1.0


# Words sharing a stem this long ("understood" / "understand", "cover" / "covered") are the
# same word to an ASR that slipped; anything else ("game" / "name") is a different word.
_STEM = 5
STEM_COST = 0.3


@lru_cache(maxsize=65536)
def _word_cost(a: str, b: str) -> float:
    if a == b:
        return 0.0
    shorter = min(len(a), len(b))
    common = 0
    for char_a, char_b in zip(a, b, strict=False):
        if char_a != char_b:
            break
        common += 1
    if common >= _STEM and common >= 0.7 * shorter:
        return STEM_COST
    if _levenshtein(a, b) == 1 and shorter >= _STEM:
        # One typo-like slip in a long word ("guarantied").
        return STEM_COST
    return 1.0


def _levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            )
        previous = current
    return previous[-1]


def _substitution_cost(a: Token, b: Token) -> float:
    if a.cjk != b.cjk:
        return 1.0
    if a.cjk:
        return _syllable_cost(a.key, b.key)
    return _word_cost(a.key, b.key)


def normalize(text: str) -> str:
    """Lowercase, NFKC, traditional -> simplified, contractions expanded."""
    text = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'")
    if _CJK.search(text):
        text = _Converter.convert(text)
    for short, long in _CONTRACTIONS.items():
        text = text.replace(short, long)
    return _NT.sub(r"\1 not", text)


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    normalized = normalize(text)
    position = 0
    while position < len(normalized):
        run = _CJK_RUN.match(normalized, position)
        if run:
            text_run = run.group(0)
            for char, syllable in zip(text_run, _pinyin(text_run), strict=True):
                tokens.append(Token(syllable, char, True))
            position = run.end()
            continue
        word = _WORD.match(normalized, position)
        if word:
            value = word.group(0).replace("'", "")
            tokens.append(Token(value, word.group(0), False))
            position = word.end()
        else:
            position += 1
    return tokens


def _surface(tokens: list[Token]) -> str:
    parts: list[str] = []
    for index, token in enumerate(tokens):
        if index and not (token.cjk and tokens[index - 1].cjk):
            parts.append(" ")
        parts.append(token.surface)
    return "".join(parts)


def _is_negation(token: Token) -> bool:
    if token.cjk:
        return token.surface in CHINESE_NEGATIONS
    return token.key in ENGLISH_NEGATIONS


# English words this long carry the meaning; a match may garble short function words ("is",
# "by", "the") but must contain every such content word of the phrase (or a same-stem form).
CONTENT_WORD_LENGTH = 4


def _content_words_present(phrase: list[Token], span: list[Token]) -> bool:
    # A phrase's own negation is part of its meaning: "returns are guaranteed" must not match
    # "returns are not guaranteed".
    for token in phrase:
        if _is_negation(token) and not any(other.surface == token.surface for other in span):
            return False
    for token in phrase:
        if token.cjk or len(token.key) < CONTENT_WORD_LENGTH:
            continue
        if not any(
            not other.cjk and _word_cost(token.key, other.key) <= STEM_COST for other in span
        ):
            return False
    return True


_DO_SUPPORT = frozenset({"do", "does", "did"})


def _strip_negations(tokens: list[Token]) -> list[Token]:
    """Drop negation words, and the "do" that only carries them ("I do not agree")."""
    kept: list[Token] = []
    for token in tokens:
        if _is_negation(token):
            if kept and not token.cjk and kept[-1].key in _DO_SUPPORT:
                kept.pop()
            continue
        kept.append(token)
    return kept


class PhraseMatcher:
    """Finds accepted phrasings inside recognized utterances."""

    def __init__(self, tolerance: float = 0.25) -> None:
        if not 0.0 <= tolerance < 1.0:
            raise ValueError("tolerance must be in [0, 1)")
        self.tolerance = tolerance

    def match(
        self,
        text: str,
        phrases: list[str] | tuple[str, ...],
        *,
        negation_sensitive: bool = False,
        tolerance: float | None = None,
    ) -> Match | None:
        """The best-scoring phrase found in `text`, or None.

        With `negation_sensitive`, a match in an utterance that also carries a negation cue is
        returned with `negated=True` (so callers can log the rejection) and `accepted` is false.
        """
        limit = self.tolerance if tolerance is None else tolerance
        tokens = tokenize(text)
        if not tokens:
            return None
        # Without its negation words, "I have not understood and I do not agree" is close to
        # "I have understood and I agree": that is an attempt that must be refused (and
        # reported), not speech that merely failed to match.
        stripped = _strip_negations(tokens)
        best: Match | None = None
        for phrase in phrases:
            phrase_tokens = tokenize(phrase)
            if not phrase_tokens:
                continue
            allowed = limit * len(phrase_tokens)
            distance, start, end = self._align(phrase_tokens, tokens)
            span = tokens
            if distance > allowed + 1e-9 and negation_sensitive and len(stripped) < len(tokens):
                distance, start, end = self._align(phrase_tokens, stripped)
                span = stripped
            if distance > allowed + 1e-9:
                continue
            if not _content_words_present(phrase_tokens, span[start:end]):
                continue
            score = 1.0 - distance / len(phrase_tokens)
            cue = self._negation_cue(phrase_tokens, tokens) if negation_sensitive else None
            candidate = Match(
                phrase=phrase,
                matched_text=_surface(span[start:end]),
                distance=distance,
                score=max(0.0, score),
                negated=cue is not None,
                negation_cue=cue,
            )
            if best is None or (not candidate.negated, candidate.score) > (
                not best.negated,
                best.score,
            ):
                best = candidate
        return best

    def accepts(
        self,
        text: str,
        phrases: list[str] | tuple[str, ...],
        *,
        negation_sensitive: bool = False,
        tolerance: float | None = None,
    ) -> bool:
        found = self.match(
            text, phrases, negation_sensitive=negation_sensitive, tolerance=tolerance
        )
        return found is not None and not found.negated

    def negation_in(self, text: str, phrase: str) -> str | None:
        """The first negation cue in `text` that is not part of `phrase`, or None."""
        return self._negation_cue(tokenize(phrase), tokenize(text))

    @staticmethod
    def _negation_cue(phrase_tokens: list[Token], tokens: list[Token]) -> str | None:
        allowed: dict[str, int] = {}
        for token in phrase_tokens:
            if _is_negation(token):
                allowed[token.surface] = allowed.get(token.surface, 0) + 1
        for token in tokens:
            if not _is_negation(token):
                continue
            if allowed.get(token.surface, 0) > 0:
                allowed[token.surface] -= 1
                continue
            return token.surface
        return None

    @staticmethod
    def _align(phrase: list[Token], text: list[Token]) -> tuple[float, int, int]:
        """Approximate substring alignment: (cost, start, end) of the cheapest span of `text`."""
        columns = len(text) + 1
        # cost[j] / start[j] for the previous phrase row; row 0 lets a match start anywhere.
        cost = [0.0] * columns
        start = list(range(columns))
        for i in range(1, len(phrase) + 1):
            new_cost = [float(i)] + [0.0] * len(text)
            new_start = [0] * columns
            token = phrase[i - 1]
            for j in range(1, columns):
                substitute = cost[j - 1] + _substitution_cost(token, text[j - 1])
                skip_phrase = cost[j] + 1.0
                skip_text = new_cost[j - 1] + 1.0
                if substitute <= skip_phrase and substitute <= skip_text:
                    new_cost[j], new_start[j] = substitute, start[j - 1]
                elif skip_phrase <= skip_text:
                    new_cost[j], new_start[j] = skip_phrase, start[j]
                else:
                    new_cost[j], new_start[j] = skip_text, new_start[j - 1]
            cost, start = new_cost, new_start
        best_end = min(range(columns), key=lambda j: (cost[j], -j))
        return cost[best_end], start[best_end], best_end
