"""Which encoding a file that is not UTF-8 is probably in, so the error can name the ``iconv`` command.

Legacy encodings cannot be told apart with certainty, but their bytes are not alike: GBK / GB18030 text decodes
strictly as GB18030 into mostly CJK characters, Big5 as Big5, Shift-JIS into kana and kanji, while Western text
(Windows-1252 / Latin-1) has isolated high bytes that those multi-byte codecs reject. The first 64 KB are tried
with each codec in turn; a codec counts when it decodes them strictly and its non-ASCII letters are mostly of
its script. GBK and Big5 bytes often both decode as CJK: then both are named.
"""

from __future__ import annotations

import codecs
import gzip
import unicodedata
from pathlib import Path

__all__ = ["guess_encodings", "reencode_hint"]

_PROBE_BYTES = 65_536
# (codec, name shown to the user, the Unicode script words its non-ASCII letters should mostly carry, the least
# share of all letters that are non-ASCII: Chinese or Russian text is written in its script (header names aside),
# while Western text is mostly ASCII with a few accented letters, which Windows-1251 would turn into Cyrillic ones)
_CANDIDATES = (
    ("gb18030", "GBK / GB18030 (simplified Chinese)", ("CJK",), 0.2),  # one character is about one word
    ("big5", "Big5 (traditional Chinese)", ("CJK",), 0.2),
    ("shift_jis", "Shift-JIS (Japanese)", ("CJK", "HIRAGANA", "KATAKANA"), 0.2),
    ("euc_kr", "EUC-KR (Korean)", ("HANGUL",), 0.2),
    ("cp1251", "Windows-1251 (Cyrillic)", ("CYRILLIC",), 0.5),
    ("cp1252", "Windows-1252 / Latin-1 (Western European)", ("LATIN",), 0.0),
)


def _head(path: Path) -> bytes:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            return fh.read(_PROBE_BYTES)
    except OSError:
        return b""


def _script_share(text: str, scripts: tuple[str, ...], min_wide: float) -> float:
    """Share of the non-ASCII letters in ``scripts``; 0 when too few letters are non-ASCII for that language."""
    letters = [c for c in text if c.isalpha()]
    wide = [c for c in letters if ord(c) > 127]
    if not wide or len(wide) < min_wide * len(letters):
        return 0.0
    hits = sum(1 for c in wide if any(s in unicodedata.name(c, "") for s in scripts))
    return hits / len(wide)


def guess_encodings(path: str | Path) -> list[tuple[str, str]]:
    """Up to two ``(codec, description)`` candidates for a file that failed to decode as UTF-8, likeliest first."""
    data = _head(Path(path))
    found: list[tuple[float, str, str]] = []
    for codec, label, scripts, min_wide in _CANDIDATES:
        decoder = codecs.getincrementaldecoder(codec)("strict")
        try:
            text = decoder.decode(data, final=False)  # the probe may end inside a character
        except UnicodeDecodeError:
            continue
        share = _script_share(text, scripts, min_wide)
        if share >= 0.6:
            found.append((share, codec, label))
    found.sort(key=lambda t: -t[0])  # stable: on ties the table's order (multi-byte codecs first) wins
    return [(codec, label) for _, codec, label in found[:2]]


def reencode_hint(path: str | Path) -> str:
    """What to run to re-save ``path`` as UTF-8, naming the likely source encoding(s)."""
    name = Path(path).name

    def command(codec: str) -> str:
        if name.endswith(".gz"):
            return f"zcat {name} | iconv -f {codec} -t UTF-8 | gzip > utf8_{name}"
        return f"iconv -f {codec} -t UTF-8 {name} > utf8_{name}"

    guesses = guess_encodings(path)
    if not guesses:
        return (f"its encoding could not be guessed; find it with `file -i {name}` and re-save it as UTF-8 "
                f"(`{command('<ENCODING>')}`).")
    first = guesses[0]
    text = f"its bytes look like {first[1]}: re-save it as UTF-8 with `{command(first[0].upper())}`"
    if len(guesses) > 1:
        text += f" (or, if the text comes out wrong, -f {guesses[1][0].upper()}: {guesses[1][1]})"
    return text + "."
