"""SMS text rules: GSM 03.38 alphabet, UCS-2, segments, packing, UDH.

Everything a carrier adapter needs to turn a message body into SMS segments,
with no I/O. The rules come from 3GPP TS 23.038 (the alphabet and septet
packing) and TS 23.040 (the user data header of concatenated messages).

Vocabulary:

* A *unit* is what a segment's capacity is counted in: a septet for GSM-7, a
  UTF-16 code unit for UCS-2.
* GSM-7 characters from the extension table cost two septets (the escape
  0x1B and the character's code). UCS-2 characters outside the Basic
  Multilingual Plane (most emoji) cost two code units (a surrogate pair).
  Neither pair may be split across two segments: a phone would show the
  first segment ending in garbage.

Limits: one segment carries 140 octets of user data: 160 septets or 70 UTF-16
code units. A concatenated message spends 6 octets of every segment on its
user data header (UDHL + the 8-bit-reference concatenation element), which
leaves 153 septets (48 header bits padded to 49 = 7 septets) or 67 code units.
With a 16-bit reference the header is 7 octets: 152 septets or 66 code units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Encoding = Literal["GSM-7", "UCS-2"]


class SmsEncodingError(ValueError):
    """Text or bytes that cannot be encoded or decoded as asked."""


class UdhError(ValueError):
    """A user data header that is out of range (building) or malformed (parsing)."""


# -- the GSM 03.38 default alphabet ----------------------------------------------

ESCAPE: Final = 0x1B

# Index = septet value. 0x1B is the escape to the extension table, not a
# character: it is held as "\x1b" here only to keep the indices right, and is
# removed from the encoding map below.
_BASIC: Final = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
assert len(_BASIC) == 128

# The extension table: character -> code that follows the escape. Form feed
# (0x0A after the escape) is the "page break" of the standard.
_EXTENSION: Final[dict[str, int]] = {
    "\f": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}

_BASIC_CODE: Final[dict[str, int]] = {ch: i for i, ch in enumerate(_BASIC) if i != ESCAPE}
_EXTENSION_CHAR: Final[dict[int, str]] = {code: ch for ch, code in _EXTENSION.items()}

GSM7_BASIC_CHARS: Final = frozenset(_BASIC_CODE)
GSM7_EXTENSION_CHARS: Final = frozenset(_EXTENSION)
GSM7_CHARS: Final = GSM7_BASIC_CHARS | GSM7_EXTENSION_CHARS

# Segment limits, in units (see the module docstring for where they come from).
GSM7_SINGLE: Final = 160
GSM7_CONCAT: Final = 153
GSM7_CONCAT_REF16: Final = 152
UCS2_SINGLE: Final = 70
UCS2_CONCAT: Final = 67
UCS2_CONCAT_REF16: Final = 66


def is_gsm7(text: str) -> bool:
    """True if every character of ``text`` is in the default alphabet or its extension."""
    return all(ch in GSM7_CHARS for ch in text)


def gsm7_septets(text: str) -> int:
    """Septets ``text`` takes in GSM-7: extension characters count 2."""
    return sum(_gsm7_cost(ch, i) for i, ch in enumerate(text))


def _not_gsm7(ch: str, index: int) -> SmsEncodingError:
    return SmsEncodingError(f"character {ch!r} (U+{ord(ch):04X}) at index {index} is not in the GSM-7 alphabet")


def _gsm7_cost(ch: str, index: int) -> int:
    if ch in _BASIC_CODE:
        return 1
    if ch in _EXTENSION:
        return 2
    raise _not_gsm7(ch, index)


def _utf16_cost(ch: str) -> int:
    # A code point above U+FFFF is a surrogate pair in UTF-16.
    return 2 if ord(ch) > 0xFFFF else 1


def utf16_units(text: str) -> int:
    """UTF-16 code units of ``text`` (what UCS-2 segments are counted in)."""
    return sum(_utf16_cost(ch) for ch in text)


def encoding_for(text: str) -> Encoding:
    """GSM-7 when every character is in the alphabet, else UCS-2 (sent as UTF-16)."""
    return "GSM-7" if is_gsm7(text) else "UCS-2"


# -- segments --------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentInfo:
    encoding: Encoding
    num_segments: int
    units_per_segment: int  # the limit that applied: 160/153(152) septets or 70/67(66) code units
    total_units: int  # septets (GSM-7) or UTF-16 code units (UCS-2) of the whole text


def _limits(encoding: Encoding, ref16: bool) -> tuple[int, int]:
    if encoding == "GSM-7":
        return GSM7_SINGLE, GSM7_CONCAT_REF16 if ref16 else GSM7_CONCAT
    return UCS2_SINGLE, UCS2_CONCAT_REF16 if ref16 else UCS2_CONCAT


def _plan(text: str, ref16: bool) -> tuple[Encoding, int, int, list[str]]:
    """Encoding, limit, total units and the segment texts.

    Greedy: each segment takes as many whole characters as fit. A character
    is atomic (an escape pair or a surrogate pair is one character of a
    Python str), so neither pair is ever split. Greedy is also what makes
    the segment count monotonic: appending text never lowers it.
    """
    encoding = encoding_for(text)
    if encoding == "GSM-7":
        costs = [_gsm7_cost(ch, i) for i, ch in enumerate(text)]
    else:
        costs = [_utf16_cost(ch) for ch in text]
    total = sum(costs)
    single, concat = _limits(encoding, ref16)
    if total <= single:
        return encoding, single, total, [text]
    parts: list[str] = []
    start = 0
    used = 0
    for i, cost in enumerate(costs):
        if used + cost > concat:
            parts.append(text[start:i])
            start, used = i, 0
        used += cost
    parts.append(text[start:])
    return encoding, concat, total, parts


def segments(text: str, *, ref16: bool = False) -> SegmentInfo:
    """How ``text`` is sent: its encoding, how many segments, the per-segment limit.

    The empty text is one (empty) segment, as an empty SMS is. ``ref16``
    selects the 16-bit concatenation reference, whose longer header leaves
    one unit less per segment.
    """
    encoding, limit, total, parts = _plan(text, ref16)
    return SegmentInfo(encoding, len(parts), limit, total)


def split(text: str, *, ref16: bool = False) -> list[str]:
    """The segment texts of ``text``; ``"".join(split(t)) == t``."""
    return _plan(text, ref16)[3]


# -- smart encoding ----------------------------------------------------------------

# Unicode look-alikes -> GSM-7 text. This is Twilio's published "Smart
# Encoding" list (twilio.com/docs/messaging/services/smart-encoding-char-list),
# with these deliberate differences:
#   * zero-width characters (U+200B/C/D, U+2060 word joiner, U+FEFF, U+00AD
#     soft hyphen) are removed instead of becoming a space: they are invisible
#     in the original, so a space would change the text the reader sees;
#   * U+2039 ‹ and U+203A › keep their direction (< and >);
#   * a few common look-alikes missing from the list are added: U+2011
#     non-breaking hyphen, U+2012 figure dash, U+2212 minus, U+2032/U+2035
#     primes ('), U+2033/U+2036 double primes ("), U+1680 ogham space, U+205F
#     and fullwidth lowercase letters (the list has only the uppercase ones).
# Every replacement is GSM-7 (a test checks it), so text made only of these
# characters and GSM-7 characters always becomes GSM-7.
_DQ = '"'
_SQ = "'"
_SMART: Final[dict[str, str]] = {
    # double quotes
    "\u00ab": _DQ, "\u00bb": _DQ, "\u201c": _DQ, "\u201d": _DQ, "\u201e": _DQ,
    "\u201f": _DQ, "\u02ba": _DQ, "\u02ee": _DQ, "\u275d": _DQ, "\u275e": _DQ,
    "\u301d": _DQ, "\u301e": _DQ, "\uff02": _DQ, "\u2033": _DQ, "\u2036": _DQ,
    # single quotes and apostrophes
    "\u2018": _SQ, "\u2019": _SQ, "\u201a": _SQ, "\u201b": _SQ, "\u02bb": _SQ,
    "\u02c8": _SQ, "\u02bc": _SQ, "\u02bd": _SQ, "\u02b9": _SQ, "\uff07": _SQ,
    "\u00b4": _SQ, "\u02ca": _SQ, "\u0060": _SQ, "\u02cb": _SQ, "\u275b": _SQ,
    "\u275c": _SQ, "\u0313": _SQ, "\u0314": _SQ, "\ufe10": _SQ, "\ufe11": _SQ,
    "\u2032": _SQ, "\u2035": _SQ,
    # angle quotes
    "\u2039": "<", "\u203a": ">",
    # slashes, fractions
    "\u00f7": "/", "\u29f8": "/", "\u0337": "/", "\u0338": "/", "\u2044": "/",
    "\u2215": "/", "\uff0f": "/",
    "\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4",
    "\u29f9": "\\", "\u29f5": "\\", "\u20e5": "\\", "\ufe68": "\\", "\uff3c": "\\",
    # underscores and bars
    "\u0332": "_", "\uff3f": "_", "\u2017": "_",
    "\u20d2": "|", "\u20d3": "|", "\u2223": "|", "\uff5c": "|", "\u23b8": "|",
    "\u23b9": "|", "\u23d0": "|", "\u239c": "|", "\u239f": "|",
    # dashes and hyphens
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-",
    "\u2015": "-", "\u2043": "-", "\u2212": "-", "\u23bc": "-", "\u23bd": "-",
    "\ufe63": "-", "\uff0d": "-",
    # other punctuation and symbols
    "\u2026": "...", "\u203c": "!!",
    "\ufe6b": "@", "\uff20": "@", "\ufe69": "$", "\uff04": "$",
    "\u01c3": "!", "\ufe15": "!", "\ufe57": "!", "\uff01": "!",
    "\ufe5f": "#", "\uff03": "#", "\ufe6a": "%", "\uff05": "%",
    "\ufe60": "&", "\uff06": "&",
    "\u0326": ",", "\ufe50": ",", "\ufe51": ",", "\uff0c": ",", "\uff64": ",",
    "\u2768": "(", "\u276a": "(", "\ufe59": "(", "\uff08": "(", "\u27ee": "(", "\u2985": "(",
    "\u2769": ")", "\u276b": ")", "\ufe5a": ")", "\uff09": ")", "\u27ef": ")", "\u2986": ")",
    "\u204e": "*", "\u2217": "*", "\u229b": "*", "\u2722": "*", "\u2723": "*",
    "\u2724": "*", "\u2725": "*", "\u2731": "*", "\u2732": "*", "\u2733": "*",
    "\u273a": "*", "\u273b": "*", "\u273c": "*", "\u273d": "*", "\u2743": "*",
    "\u2749": "*", "\u274a": "*", "\u274b": "*", "\u29c6": "*", "\ufe61": "*", "\uff0a": "*",
    "\u02d6": "+", "\ufe62": "+", "\uff0b": "+",
    "\u3002": ".", "\ufe52": ".", "\uff0e": ".", "\uff61": ".",
    "\u02d0": ":", "\u02f8": ":", "\u2982": ":", "\ua789": ":", "\ufe13": ":", "\uff1a": ":",
    "\u204f": ";", "\ufe14": ";", "\ufe54": ";", "\uff1b": ";",
    "\ufe64": "<", "\uff1c": "<", "\ufe65": ">", "\uff1e": ">",
    "\u0347": "=", "\ua78a": "=", "\ufe66": "=", "\uff1d": "=",
    "\ufe16": "?", "\ufe56": "?", "\uff1f": "?",
    "\u02c6": "^", "\u0302": "^", "\uff3e": "^", "\u1dcd": "^",
    "\u2774": "{", "\ufe5b": "{", "\uff5b": "{",
    "\u2775": "}", "\ufe5c": "}", "\uff5d": "}",
    "\uff3b": "[", "\uff3d": "]",
    "\u02dc": "~", "\u02f7": "~", "\u0303": "~", "\u0330": "~", "\u0334": "~",
    "\u223c": "~", "\uff5e": "~",
    # small capitals
    "\u1d00": "A", "\u0299": "B", "\u1d04": "C", "\u1d05": "D", "\u1d07": "E",
    "\ua730": "F", "\u0262": "G", "\u029c": "H", "\u026a": "I", "\u1d0a": "J",
    "\u1d0b": "K", "\u029f": "L", "\u1d0d": "M", "\u0274": "N", "\u1d0f": "O",
    "\u1d18": "P", "\u0280": "R", "\ua731": "S", "\u1d1b": "T", "\u1d1c": "U",
    "\u1d20": "V", "\u1d21": "W", "\u028f": "Y", "\u1d22": "Z",
    # spaces (and the control characters the list turns into a space)
    "\u00a0": " ", "\u1680": " ", "\u2000": " ", "\u2001": " ", "\u2002": " ",
    "\u2003": " ", "\u2004": " ", "\u2005": " ", "\u2006": " ", "\u2007": " ",
    "\u2008": " ", "\u2009": " ", "\u200a": " ", "\u202f": " ", "\u205f": " ",
    "\u3000": " ", "\u2028": " ", "\u2029": " ",
    "\t": " ", "\x00": " ", "\x03": " ", "\x04": " ", "\x10": " ", "\x11": " ",
    "\x12": " ", "\x13": " ", "\x14": " ", "\x17": " ", "\x19": " ",
    "\x80": " ", "\x8d": " ", "\x90": " ", "\x9b": " ", "\x9f": " ",
    # invisible: removed
    "\u200b": "", "\u200c": "", "\u200d": "", "\u2060": "", "\ufeff": "", "\u00ad": "",
}  # fmt: skip
# Fullwidth digits and letters (U+FF10.., U+FF21.., U+FF41..).
_SMART.update({chr(0xFF10 + i): str(i) for i in range(10)})
_SMART.update({chr(0xFF21 + i): chr(ord("A") + i) for i in range(26)})
_SMART.update({chr(0xFF41 + i): chr(ord("a") + i) for i in range(26)})

SMART_ENCODING_TABLE: Final[dict[str, str]] = dict(_SMART)
_SMART_TRANSLATION: Final = str.maketrans(_SMART)


def smart_encode(text: str) -> str:
    """Replace Unicode look-alikes by GSM-7 characters, when that makes the text GSM-7.

    Only what the caller asks for (smart encoding is an opt-in of the
    message request). When replacing does not make the whole text GSM-7 (an
    emoji, a Cyrillic word), the text goes out as UCS-2 anyway and curly
    quotes display fine there, so the original is returned unchanged rather
    than a half-substituted copy.
    """
    if is_gsm7(text):
        return text
    replaced = text.translate(_SMART_TRANSLATION)
    return replaced if is_gsm7(replaced) else text


# -- GSM-7 bytes -----------------------------------------------------------------


def gsm7_encode(text: str) -> bytes:
    """GSM-7 septets unpacked, one per byte (the SMPP convention for data_coding 0)."""
    out = bytearray()
    for i, ch in enumerate(text):
        code = _BASIC_CODE.get(ch)
        if code is not None:
            out.append(code)
        elif ch in _EXTENSION:
            out += bytes((ESCAPE, _EXTENSION[ch]))
        else:
            raise _not_gsm7(ch, i)
    return bytes(out)


def gsm7_decode(septets: bytes) -> str:
    """Septets, one per byte, back to text.

    An escape followed by a code the extension table does not define shows
    the default-alphabet character of that code, and an escape followed by
    another escape shows a space, as TS 23.038 tells receivers to do. A lone
    escape at the very end is dropped (it can only be a truncation).
    """
    out: list[str] = []
    i = 0
    n = len(septets)
    while i < n:
        code = septets[i]
        if code > 0x7F:
            raise SmsEncodingError(f"byte 0x{code:02X} at offset {i} is not a septet (> 0x7F)")
        if code != ESCAPE:
            out.append(_BASIC[code])
            i += 1
            continue
        if i + 1 >= n:
            break
        nxt = septets[i + 1]
        if nxt > 0x7F:
            raise SmsEncodingError(f"byte 0x{nxt:02X} at offset {i + 1} is not a septet (> 0x7F)")
        if nxt in _EXTENSION_CHAR:
            out.append(_EXTENSION_CHAR[nxt])
        elif nxt == ESCAPE:
            out.append(" ")
        else:
            out.append(_BASIC[nxt])
        i += 2
    return "".join(out)


def gsm7_pack(text: str, *, fill_bits: int = 0) -> bytes:
    """Pack ``text`` into octets, 8 septets in 7 octets (TS 23.038 section 6.1.2.1.1).

    Septet *n* occupies bits ``7n + fill_bits`` .. upwards, least significant
    bit first. ``fill_bits`` (0..6) are the zero bits that align the first
    septet after a user data header. The spare bits of the last octet are
    zero; the receiver knows the septet count from TP-UDL.
    """
    if not 0 <= fill_bits <= 6:
        raise SmsEncodingError(f"fill_bits must be 0..6, got {fill_bits}")
    out = bytearray()
    acc = 0  # bits not yet written, least significant first
    nbits = fill_bits
    for septet in gsm7_encode(text):
        acc |= septet << nbits
        nbits += 7
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8
    if nbits:
        out.append(acc)
    return bytes(out)


def gsm7_unpack(data: bytes, septets: int, *, fill_bits: int = 0) -> str:
    """The first ``septets`` septets of packed ``data``, as text."""
    if septets < 0:
        raise SmsEncodingError(f"septet count must be >= 0, got {septets}")
    if not 0 <= fill_bits <= 6:
        raise SmsEncodingError(f"fill_bits must be 0..6, got {fill_bits}")
    needed = (7 * septets + fill_bits + 7) // 8
    if len(data) < needed:
        raise SmsEncodingError(f"{septets} septets need {needed} octets, got {len(data)}")
    raw = bytearray()
    acc = 0
    nbits = 0
    for i, octet in enumerate(data[:needed]):
        acc |= octet << nbits
        nbits += 8
        if i == 0:
            acc >>= fill_bits
            nbits -= fill_bits
        while nbits >= 7 and len(raw) < septets:
            raw.append(acc & 0x7F)
            acc >>= 7
            nbits -= 7
    return gsm7_decode(bytes(raw))


# -- UCS-2 -----------------------------------------------------------------------


def ucs2_encode(text: str) -> bytes:
    """UTF-16-BE: what phones and SMSCs actually use for "UCS-2" (emoji as surrogate pairs)."""
    try:
        return text.encode("utf-16-be")
    except UnicodeEncodeError as exc:
        raise SmsEncodingError(
            f"character U+{ord(text[exc.start]):04X} at index {exc.start} is a lone surrogate"
        ) from None


def ucs2_decode(data: bytes) -> str:
    """UTF-16-BE bytes to text.

    A surrogate pair split across two segments decodes only once the
    segments are joined: reassemble the bytes, then decode.
    """
    if len(data) % 2:
        raise SmsEncodingError(f"UCS-2 data has an odd length ({len(data)} octets)")
    try:
        return data.decode("utf-16-be")
    except UnicodeDecodeError as exc:
        raise SmsEncodingError(f"UCS-2 data has an unpaired surrogate at offset {exc.start}") from None


# -- user data header ------------------------------------------------------------

IEI_CONCAT_8BIT: Final = 0x00
IEI_CONCAT_16BIT: Final = 0x08


@dataclass(frozen=True)
class InformationElement:
    iei: int
    data: bytes


@dataclass(frozen=True)
class Concat:
    """The concatenation element of one segment: which message, how many parts, which part."""

    ref: int
    total: int
    seq: int


def udh_concat(ref: int, total: int, seq: int, *, ref16: bool = False) -> bytes:
    """A complete user data header (UDHL first) with one concatenation element."""
    max_ref = 0xFFFF if ref16 else 0xFF
    if not 0 <= ref <= max_ref:
        raise UdhError(f"concatenation reference must be 0..{max_ref}, got {ref}")
    if not 1 <= total <= 255:
        raise UdhError(f"total segments must be 1..255, got {total}")
    if not 1 <= seq <= total:
        raise UdhError(f"segment number must be 1..{total}, got {seq}")
    if ref16:
        return bytes((6, IEI_CONCAT_16BIT, 4, ref >> 8, ref & 0xFF, total, seq))
    return bytes((5, IEI_CONCAT_8BIT, 3, ref, total, seq))


def parse_udh(data: bytes) -> tuple[tuple[InformationElement, ...], bytes]:
    """Split user data that starts with a header into (elements, payload).

    ``data`` starts with the UDHL octet (the TP-UDHI flag, esm_class 0x40 in
    SMPP, says that it does). The payload is the rest, as octets; for packed
    GSM-7 the caller skips the fill bits.
    """
    if not data:
        raise UdhError("user data is empty: no header length octet")
    udhl = data[0]
    if 1 + udhl > len(data):
        raise UdhError(f"header length {udhl} runs past the user data ({len(data) - 1} octets after UDHL)")
    header = data[1 : 1 + udhl]
    elements: list[InformationElement] = []
    i = 0
    while i < len(header):
        if i + 2 > len(header):
            raise UdhError(f"information element at header offset {i} is cut short")
        iei, length = header[i], header[i + 1]
        if i + 2 + length > len(header):
            raise UdhError(f"information element 0x{iei:02X} of length {length} runs past the header")
        elements.append(InformationElement(iei, bytes(header[i + 2 : i + 2 + length])))
        i += 2 + length
    return tuple(elements), bytes(data[1 + udhl :])


def concat_info(elements: tuple[InformationElement, ...]) -> Concat | None:
    """The concatenation element among ``elements`` (8- or 16-bit reference), if any."""
    for el in elements:
        if el.iei == IEI_CONCAT_8BIT and len(el.data) == 3:
            return Concat(el.data[0], el.data[1], el.data[2])
        if el.iei == IEI_CONCAT_16BIT and len(el.data) == 4:
            return Concat((el.data[0] << 8) | el.data[1], el.data[2], el.data[3])
    return None
