"""The words a build spots and the words it must not: checked before any synthesis, and a default list of
other words for `_unknown_`.

A vocabulary fails in ways no training can fix: a keyword that is part of another ("on" / "lights on"),
two words that sound the same ("two" / "to"), an `_unknown_` phrase that contains a keyword (its clips
would teach the model that the keyword is not one). Spelling hides some of these, so the checks compare
espeak-ng's phonemes (one batched call; spelling alone where espeak-ng is absent). The same phonemes
pick the default `_unknown_` words: common English words that neither contain nor sound like a keyword.
"""

from __future__ import annotations

import difflib
import re
import shutil
import subprocess
import unicodedata
from functools import lru_cache
from pathlib import Path

# Common English words of one to three syllables, varied in sound: what a room hears besides the
# keywords. Each build drops the ones that contain or sound like one of its keywords.
COMMON_WORDS = (
    "about", "after", "again", "air", "animal", "answer", "apple", "baby", "back", "ball", "bank",
    "basket", "beach", "bed", "before", "better", "bird", "black", "blue", "book", "bottle", "box",
    "bread", "bridge", "brother", "brown", "butter", "button", "camera", "candle", "car", "carpet",
    "cat", "chair", "cheese", "chicken", "children", "city", "clock", "cloud", "coffee", "color",
    "company", "cookie", "corner", "country", "cousin", "dance", "dinner", "doctor", "dog", "dollar",
    "door", "dream", "dress", "drink", "early", "earth", "easy", "egg", "empty", "evening", "family",
    "farm", "father", "fish", "floor", "flower", "forest", "friday", "friend", "garden", "glass",
    "good", "grass", "green", "happy", "heavy", "hello", "horse", "house", "hungry", "island", "jacket",
    "kitchen", "ladder", "lemon", "letter", "library", "little", "machine", "marvin", "maybe", "medicine",
    "milk", "minute", "money", "monkey", "morning", "mother", "mountain", "number", "ocean", "orange",
    "paper", "party", "pencil", "people", "pepper", "picture", "pillow", "pocket", "potato", "purple",
    "question", "rabbit", "radio", "river", "sandwich", "school", "seven", "sheila", "shoe", "sister",
    "sleep", "small", "snow", "soup", "spoon", "summer", "sugar", "sunday", "table", "teacher",
    "thank you", "ticket", "tiger", "today", "tomato", "tomorrow", "travel", "tree", "turtle", "under",
    "umbrella", "usually", "very", "village", "visual", "wall", "water", "weather", "welcome", "window",
    "winter", "wonderful", "world", "yellow", "yesterday", "zebra",
)  # fmt: skip

SPEAKABLE = re.compile(r"^[a-z][a-z' -]*[a-z]$|^[a-z]$")
STRESS = str.maketrans("", "", "',_:!=#")  # espeak-ng -x stress, length and syllable marks
# Vowels espeak-ng's en-us keeps apart that nearly every living accent has merged, written as one: the
# FORCE and NORTH vowels of the horse-hoarse merger ("four" fo@ and "for" fO@, "wore" and "war"). Kept
# apart, a keyword "four" passed the sound-alike check beside an `_unknown_` "for".
MERGED = (("o@", "O@"),)


class WordError(ValueError):
    """A vocabulary that no training can make work; the message names the word and the fix."""


def normalise(word: str) -> str:
    return " ".join(word.lower().split())


def _merge(sounds: str) -> str:
    for kept_apart, heard_as in MERGED:
        sounds = sounds.replace(kept_apart, heard_as)
    return sounds


@lru_cache(maxsize=64)
def _phonemes(words: tuple[str, ...]) -> tuple[str, ...] | None:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return None
    out = subprocess.run(
        [espeak, "-q", "-x", "-v", "en-us"], input="\n".join(words) + "\n", capture_output=True, text=True
    )
    lines = [_merge(line.strip().translate(STRESS)) for line in out.stdout.splitlines() if line.strip()]
    return tuple(lines) if out.returncode == 0 and len(lines) == len(words) else None


def phonemes(words: list[str]) -> dict[str, str]:
    """Each single word's espeak-ng phonemes (US English, stress marks dropped); by spelling where
    espeak-ng cannot run, so the checks still catch what spelling shows."""
    unique = tuple(sorted({w for phrase in words for w in normalise(phrase).split()}))
    heard = _phonemes(unique) if unique else ()
    return dict(zip(unique, heard or unique, strict=True))


def _sounds(phrase: str, table: dict[str, str]) -> tuple[str, ...]:
    return tuple(table[w] for w in normalise(phrase).split())


def _contains(outer: tuple[str, ...], inner: tuple[str, ...]) -> bool:
    """Whether `inner` is a run of whole words of `outer`, by sound."""
    return any(outer[i : i + len(inner)] == inner for i in range(len(outer) - len(inner) + 1))


def check_words(labels: list[str], unknown_words: list[str]) -> None:
    """Raise `WordError` for a vocabulary that cannot work; the message names the word and the fix."""
    for field, words in (("labels", labels), ("unknown_words", unknown_words)):
        seen: dict[str, str] = {}
        for i, word in enumerate(words):
            text = normalise(word)
            if not text:
                raise WordError(f"{field}[{i}] is empty: remove it or write the word")
            bad = sorted({c for c in text if not unicodedata.is_normalized("NFC", c) or ord(c) > 127})
            if bad:
                raise WordError(
                    f"{field}[{i}] {word!r}: the offline voices speak English and cannot say {bad}; write "
                    "it in ASCII letters (e.g. 'cafe' for 'café')"
                )
            if not SPEAKABLE.match(text):
                raise WordError(
                    f"{field}[{i}] {word!r}: use letters, spaces, hyphens and apostrophes only (write "
                    "numbers as words: 'five', not '5')"
                )
            if text in seen:
                raise WordError(f"{field}: {seen[text]!r} and {word!r} are the same word; keep one")
            seen[text] = word
    table = phonemes([*labels, *unknown_words])
    sounds = {w: _sounds(w, table) for w in [*labels, *unknown_words]}
    for a in labels:
        for b in labels:
            if a == b:
                continue
            if sounds[a] == sounds[b]:
                raise WordError(
                    f"keywords {a!r} and {b!r} sound the same; a model cannot tell them apart: keep one"
                )
            if _contains(sounds[b], sounds[a]):
                raise WordError(
                    f"keyword {a!r} is part of keyword {b!r}: every {b!r} also says {a!r}, so the model "
                    f"cannot tell them apart; rename one (e.g. {a!r} -> 'turn {a}') or drop it"
                )
        for u in unknown_words:
            if _contains(sounds[u], sounds[a]):
                how = (
                    "is"
                    if normalise(u) == normalise(a)
                    else "sounds like"
                    if sounds[u] == sounds[a]
                    else "contains"
                )
                raise WordError(
                    f"unknown word {u!r} {how} keyword {a!r}: its clips would teach the model that "
                    f"{a!r} is not a keyword; remove {u!r} from unknown_words"
                )


def _distance(a: str, b: str) -> int:
    """Levenshtein distance of two phoneme strings."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def default_unknown_words(labels: list[str]) -> list[str]:
    """`COMMON_WORDS` without those that contain or sound like a keyword (or are one): phoneme strings
    that hold the keyword's, or lie within one edit of it (two for keywords of five phonemes or more)."""
    table = phonemes([*labels, *COMMON_WORDS])
    keys = ["".join(_sounds(k, table)) for k in labels]
    keep = []
    for word in COMMON_WORDS:
        heard = "".join(_sounds(word, table))
        if not any(k in heard or _distance(heard, k) <= (1 if len(k) < 5 else 2) for k in keys):
            keep.append(word)
    return keep


def slug(phrase: str) -> str:
    """A phrase as a file name: `hey edge` -> `hey_edge` (the wake-word build's model and manifest)."""
    return "_".join(phrase.lower().replace("-", " ").split())


DICTIONARY = Path("/usr/share/dict/american-english")  # Debian main `wamerican` (scripts/setup.sh)


@lru_cache(maxsize=1)
def _dictionary() -> tuple[str, ...]:
    """Lower-case letter-only words of the system word list, plus `COMMON_WORDS`; those alone without it."""
    words = set(COMMON_WORDS)
    if DICTIONARY.is_file():
        words |= {w for w in DICTIONARY.read_text(errors="ignore").split() if w.isascii() and w.isalpha()}
        words = {w for w in words if w.islower() or " " in w}
    return tuple(sorted(words))


def _neighbours(word: str, sounds: str, n: int) -> list[str]:
    """The `n` words of the dictionary that sound closest to `word` without being it or containing it:
    spelling shortlists (difflib), espeak-ng's phonemes rank. Distance 0 (homophones) is left out, as
    `check_words` would refuse it; so is any word whose sounds hold the keyword's."""
    shortlist = [w for w in difflib.get_close_matches(word, _dictionary(), n=300, cutoff=0.6) if w != word]
    table = phonemes(shortlist)
    limit = max(2, len(sounds) // 2)
    scored = sorted(
        (_distance(table[w], sounds), w) for w in shortlist if sounds not in table[w] and table[w] != sounds
    )
    return [w for d, w in scored if d <= limit][:n]


def near_misses(phrase: str, n: int = 24) -> list[str]:
    """Adversarial negatives for a wake phrase, as text every voice can say.

    - phoneme neighbours: dictionary words within a few phoneme edits of each of the phrase's words
      (`computer` -> commuter, compute, competitor);
    - for a phrase of several words, its partial phrases (`hey edge` -> `hey`, `edge`), and the phrase
      with one word swapped for a neighbour (`hey hedge`): a model must hear the whole phrase.

    Deterministic for a given word list; sorted by closeness, at most `n`. A phrase's own words alone
    are negatives only when it has several words (a one-word phrase *is* its word).
    """
    words = normalise(phrase).split()
    table = phonemes(words)
    per_word = {w: _neighbours(w, table[w], n) for w in dict.fromkeys(words)}
    out: list[str] = []
    if len(words) > 1:
        out += [" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)]
        out.remove(" ".join(words))
        for i, w in enumerate(words):
            out += [" ".join([*words[:i], near, *words[i + 1 :]]) for near in per_word[w][:2]]
    for rank in range(n):  # interleave the words' neighbours, closest first
        out += [near[rank] for near in per_word.values() if rank < len(near)]
    phrase_sounds = _sounds(phrase, phonemes([phrase, *out]))
    table = phonemes(out)
    unique = [w for w in dict.fromkeys(out) if not _contains(_sounds(w, table), phrase_sounds)]
    return unique[:n]
