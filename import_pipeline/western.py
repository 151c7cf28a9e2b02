"""Western text: whether bytes read as Windows-1252 are what people write in the languages that code page serves."""

import re
from dataclasses import dataclass

# Bytes Windows-1252 leaves undefined; Windows reads them as the C1 controls of the same number, as Latin-1 does.
CP1252_UNDEFINED = bytes([0x81, 0x8D, 0x8F, 0x90, 0x9D])

# The letters beyond ASCII that each language written in Windows-1252 uses (capitals compare as small letters). A
# word whose letters no one of them has all of is text of another code page read as Windows-1252: Czech `Dvořák`
# read as `Dvoøák` mixes ø and á, Russian `Иван` read as `Èâàí` mixes è, â and í.
ALPHABETS = {
    "French": "àâæçéèêëîïôœùûüÿ",
    "German": "äöüß",
    "Spanish": "áéíóúñü",
    "Portuguese": "àáâãçéêíóôõú",
    "Italian": "àèéìíîòóù",
    "Catalan": "àçèéíïòóúü",
    "Dutch": "çéèëïóöü",
    "Danish and Norwegian": "åæéóøü",
    "Swedish": "åäéöü",
    "Finnish": "åäöšž",
    "Estonian": "äõöšüž",
    "Icelandic": "áæéíðóöúýþ",
}
# Letters by Unicode that stand for abbreviations and units, in any of those languages: 1.º, Nª, µm, ƒ (florin).
NEUTRAL_LETTERS = "ªºµƒ"
# Between two letters people write these: apostrophes (and the acute accent typed for one), the Catalan middle dot, hyphens, dashes.
JOINERS = "’‘´·\u00ad‐‑–—"
# Never in what people write: ¤ is Latin-9's € read as Windows-1252, C1 controls are bytes of no code page.
NEVER = "\u00a4" + "".join(map(chr, range(0x80, 0xA0)))

# Letters: word characters but digits, the underscore and the number signs Unicode counts among them (m², 1½).
_LETTER = r"[^\W\d_¹²³¼½¾]"
_WORD = re.compile(f"{_LETTER}+")
# A character beyond ASCII between two letters that is no letter (Polish ł read as ³) and no joiner.
_SYMBOL_IN_WORD = re.compile(rf"(?<={_LETTER})(?!{_LETTER})[^\s\x00-\x7f{re.escape(JOINERS)}](?={_LETTER})")
# A capital beyond ASCII just after a small letter: Mac Roman `Café` read as `CafŽ`.
_ODD_CAPITAL = re.compile("[a-zß-öø-ÿšœž][À-ÖØ-ÞŠŒŽŸ]")
_NEVER = re.compile(f"[{NEVER}]")

# How much of that a text may hold and still read as Windows-1252. Measured over the test suite's exports of 12
# Western languages, 3 to 3,000 rows: none at all. Other code pages read as Windows-1252: Turkish 4-19% of its
# words, Czech and Polish 17-50%, Cyrillic, Greek, Hebrew and Arabic 67-98%.
MAX_ODD_WORDS = 0.03
MAX_ODD_CHARACTERS = 0.02


@dataclass(frozen=True)
class Oddities:
    """What in a text does not read as Western: words no alphabet has, characters out of place."""

    words: int  # words with a letter beyond ASCII
    odd_words: int
    characters: int  # characters beyond ASCII
    odd_characters: int


def oddities(text: str) -> Oddities:
    """What in `text` no language of Windows-1252 writes."""
    alphabets = [set(letters) for letters in ALPHABETS.values()]
    words = odd_words = 0
    for word in _WORD.findall(text):
        letters = {c for c in word.lower() if c > "\x7f" and c not in NEUTRAL_LETTERS}
        if letters:
            words += 1
            if not any(letters <= alphabet for alphabet in alphabets) or _ODD_CAPITAL.search(word):
                odd_words += 1
    characters = sum(1 for c in text if c > "\x7f")
    odd_characters = len(_NEVER.findall(text)) + len(_SYMBOL_IN_WORD.findall(text))
    return Oddities(words, odd_words, characters, odd_characters)


def reads_as_western(data: bytes) -> bool:
    """Whether `data` read as Windows-1252 is text people write in the languages it serves."""
    if any(byte in data for byte in CP1252_UNDEFINED):
        return False
    found = oddities(data.decode("cp1252"))
    return found.odd_words <= found.words * MAX_ODD_WORDS and found.odd_characters <= (
        found.characters * MAX_ODD_CHARACTERS
    )


def cp1252_text(data: bytes) -> str:
    """`data` as Windows-1252, its undefined bytes as the C1 controls Windows reads them as."""
    return data.decode("cp1252", "surrogateescape").translate({0xDC00 + b: b for b in CP1252_UNDEFINED})
