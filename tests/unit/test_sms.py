"""protocol/sms.py: GSM-7 / UCS-2, segments, smart encoding, packing, UDH."""

from __future__ import annotations

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from protocol.sms import (
    GSM7_BASIC_CHARS,
    GSM7_CHARS,
    GSM7_EXTENSION_CHARS,
    SMART_ENCODING_TABLE,
    Concat,
    InformationElement,
    SegmentInfo,
    SmsEncodingError,
    UdhError,
    concat_info,
    encoding_for,
    gsm7_decode,
    gsm7_encode,
    gsm7_pack,
    gsm7_septets,
    gsm7_unpack,
    is_gsm7,
    parse_udh,
    segments,
    smart_encode,
    split,
    ucs2_decode,
    ucs2_encode,
    udh_concat,
    utf16_units,
)

# -- strategies ------------------------------------------------------------------

GSM_ALPHABET = sorted(GSM7_CHARS)
# Weighted towards the boundary cases: extension characters (2 septets),
# non-GSM BMP characters (force UCS-2) and astral characters (surrogate pairs).
tricky_chars = st.one_of(
    st.sampled_from(GSM_ALPHABET),
    st.sampled_from(sorted(GSM7_EXTENSION_CHARS)),
    st.sampled_from(["Ж", "я", "中", "ç", "\u200b"]),
    st.sampled_from(["😀", "🎉", "𝄞", "\U0010fffd"]),
)
# Long texts come from joined chunks: st.text alone rarely grows past one segment.
long_text = st.lists(st.text(tricky_chars, min_size=1, max_size=60), min_size=2, max_size=25).map("".join)
long_gsm_text = st.lists(st.text(GSM_ALPHABET, min_size=20, max_size=80), min_size=3, max_size=12).map("".join)
# A run of plain characters up to just around a segment limit, then a pair-sized character.
near_boundary = st.builds(
    lambda n, pair, rest: "a" * n + pair + rest,
    st.integers(60, 310),
    st.sampled_from(["€", "{", "😀", "Ж"]),
    st.one_of(st.text(GSM_ALPHABET, max_size=20), st.text(tricky_chars, max_size=20)),
)
mixed_text = st.one_of(
    long_text, long_gsm_text, near_boundary, st.text(tricky_chars, max_size=200), st.text(max_size=100)
)


def units(part: str, encoding: str) -> int:
    return gsm7_septets(part) if encoding == "GSM-7" else utf16_units(part)


# -- alphabet ----------------------------------------------------------------------


def test_alphabet_sizes() -> None:
    assert len(GSM7_BASIC_CHARS) == 127  # 128 codes minus the escape
    assert GSM7_EXTENSION_CHARS == frozenset("\f^{}\\[~]|€")


@pytest.mark.parametrize("ch", ["é", "É", "è", "Ç", "ß", "Ø", "Δ", "¤", "@", "\n", "\r", "€", "{", "\f"])
def test_gsm7_members(ch: str) -> None:
    assert is_gsm7(ch)


@pytest.mark.parametrize("ch", ["ç", "á", "\t", "`", "\x1b", "Ж", "😀", "’", "\u00a0"])
def test_gsm7_non_members(ch: str) -> None:
    # ç is not there (only the capital Ç is, at 0x09); the escape is not a character.
    assert not is_gsm7(ch)


def test_septet_counting() -> None:
    assert gsm7_septets("") == 0
    assert gsm7_septets("hello") == 5
    assert gsm7_septets("a{b}€") == 8
    with pytest.raises(SmsEncodingError, match=r"'Ж' \(U\+0416\) at index 1"):
        gsm7_septets("aЖ")


def test_encoding_for() -> None:
    assert encoding_for("") == "GSM-7"
    assert encoding_for("Café é [x] 10€") == "GSM-7"
    assert encoding_for("Привет") == "UCS-2"
    assert encoding_for("hi 😀") == "UCS-2"


def test_utf16_units() -> None:
    assert utf16_units("aЖ") == 2
    assert utf16_units("😀") == 2  # surrogate pair
    assert utf16_units("👍🏽") == 4  # two astral code points


# -- segments: known values ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", SegmentInfo("GSM-7", 1, 160, 0)),
        ("a" * 160, SegmentInfo("GSM-7", 1, 160, 160)),
        ("a" * 161, SegmentInfo("GSM-7", 2, 153, 161)),
        ("a" * 306, SegmentInfo("GSM-7", 2, 153, 306)),
        ("a" * 307, SegmentInfo("GSM-7", 3, 153, 307)),
        ("€" * 80, SegmentInfo("GSM-7", 1, 160, 160)),
        ("€" * 81, SegmentInfo("GSM-7", 2, 153, 162)),  # 76 escapes (152 septets) per segment
        ("é" * 160, SegmentInfo("GSM-7", 1, 160, 160)),  # é is GSM-7
        ("Ж" * 70, SegmentInfo("UCS-2", 1, 70, 70)),
        ("Ж" * 71, SegmentInfo("UCS-2", 2, 67, 71)),
        ("Ж" * 134, SegmentInfo("UCS-2", 2, 67, 134)),
        ("Ж" * 135, SegmentInfo("UCS-2", 3, 67, 135)),
        ("😀" * 35, SegmentInfo("UCS-2", 1, 70, 70)),
        ("😀" * 36, SegmentInfo("UCS-2", 2, 67, 72)),
        ("a" * 159 + "😀", SegmentInfo("UCS-2", 3, 67, 161)),
    ],
)
def test_segments_known(text: str, expected: SegmentInfo) -> None:
    assert segments(text) == expected


def test_segments_ref16_limits() -> None:
    assert segments("a" * 304, ref16=True) == SegmentInfo("GSM-7", 2, 152, 304)
    assert segments("a" * 305, ref16=True).num_segments == 3
    assert segments("Ж" * 132, ref16=True) == SegmentInfo("UCS-2", 2, 66, 132)
    assert segments("Ж" * 133, ref16=True).num_segments == 3
    # A single segment has no header, so the reference size changes nothing.
    assert segments("a" * 160, ref16=True).num_segments == 1


def test_escape_never_split() -> None:
    text = "a" * 152 + "{" + "b" * 10  # "{" would be septets 153-154 of segment 1
    parts = split(text)
    assert parts == ["a" * 152, "{" + "b" * 10]
    assert gsm7_septets(parts[0]) == 152


def test_surrogate_pair_never_split() -> None:
    text = "x" * 66 + "😀" + "y" * 10  # the pair would be units 67-68 of segment 1
    parts = split(text)
    assert parts == ["x" * 66, "😀" + "y" * 10]


def test_split_single_and_empty() -> None:
    assert split("") == [""]
    assert split("hello") == ["hello"]


# -- segments: properties ----------------------------------------------------------


@given(mixed_text)
@settings(max_examples=300)
def test_split_join_round_trip(text: str) -> None:
    assert "".join(split(text)) == text


@given(mixed_text, st.booleans())
@settings(max_examples=300)
def test_every_segment_within_its_limit(text: str, ref16: bool) -> None:
    info = segments(text, ref16=ref16)
    event(f"{info.encoding}, {'one segment' if info.num_segments == 1 else 'several segments'}")
    parts = split(text, ref16=ref16)
    assert len(parts) == info.num_segments
    assert info.total_units == sum(units(p, info.encoding) for p in parts)
    for part in parts:
        assert units(part, info.encoding) <= info.units_per_segment
        # Each part is a whole string of code points: encodable on its own.
        if info.encoding == "UCS-2":
            assert ucs2_decode(ucs2_encode(part)) == part
        else:
            assert gsm7_decode(gsm7_encode(part)) == part
    if info.num_segments > 1:
        assert all(parts)


@given(mixed_text)
@settings(max_examples=200)
def test_segments_are_filled_greedily(text: str) -> None:
    # No segment but the last could have taken the next character.
    info = segments(text)
    parts = split(text)
    for part, nxt in zip(parts, parts[1:]):
        assert units(part, info.encoding) + units(nxt[0], info.encoding) > info.units_per_segment


@given(mixed_text, mixed_text)
@settings(max_examples=300)
def test_segment_count_monotonic_in_length(head: str, tail: str) -> None:
    assert segments(head).num_segments <= segments(head + tail).num_segments


@given(long_gsm_text)
def test_segment_count_monotonic_char_by_char(text: str) -> None:
    counts = [segments(text[:i]).num_segments for i in range(0, len(text) + 1, 7)]
    assert counts == sorted(counts)


# -- smart encoding ----------------------------------------------------------------


def test_smart_encode_examples() -> None:
    assert smart_encode("“Hello”! Can’t wait for our meeting!") == "\"Hello\"! Can't wait for our meeting!"
    assert smart_encode("“Hello” — welcome to our service…") == '"Hello" - welcome to our service...'
    assert smart_encode("«bonjour»\u00a0–\u2009ok") == '"bonjour" - ok'
    assert smart_encode("zero\u200bwidth\ufeff") == "zerowidth"
    assert smart_encode("½ ＡＢＣ ｘ１") == "1/2 ABC x1"
    assert smart_encode("‹a› ‛b‚") == "<a> 'b'"


def test_smart_encode_leaves_gsm7_alone() -> None:
    text = "Plain [GSM] text with € and é"
    assert smart_encode(text) is text


def test_smart_encode_keeps_original_when_still_ucs2() -> None:
    # Replacing the quotes would not save the Cyrillic text from UCS-2.
    assert smart_encode("“Привет”") == "“Привет”"
    assert smart_encode("it’s 😀") == "it’s 😀"
    assert encoding_for(smart_encode("it’s 😀")) == "UCS-2"


@pytest.mark.parametrize(("src", "dst"), sorted(SMART_ENCODING_TABLE.items()))
def test_every_replacement_is_gsm7(src: str, dst: str) -> None:
    assert not is_gsm7(src)  # a GSM-7 character would never need replacing
    assert is_gsm7(dst)


def test_smart_table_contains_the_brief_minimum() -> None:
    for ch in "‘’“”–—…«»\u00a0\u2009\u202f":
        assert ch in SMART_ENCODING_TABLE
    for ch in "\u200b\u200c\u200d\ufeff":
        assert SMART_ENCODING_TABLE[ch] == ""


@given(st.text(alphabet=sorted(SMART_ENCODING_TABLE) + GSM_ALPHABET))
@settings(max_examples=300)
def test_smart_encode_output_is_gsm7(text: str) -> None:
    out = smart_encode(text)
    assert is_gsm7(out)
    assert smart_encode(out) == out


@given(st.text())
def test_smart_encode_is_all_or_nothing(text: str) -> None:
    out = smart_encode(text)
    assert out == text or is_gsm7(out)


# -- GSM-7 packing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "packed"),
    [
        ("hello", "E8329BFD06"),
        ("hellohello", "E8329BFD4697D9EC37"),  # the 3GPP/Wikipedia example
        ("", ""),
        ("@", "00"),
        ("12345678", "31D98C56B3DD70"),  # 8 septets fill exactly 7 octets
    ],
)
def test_pack_known(text: str, packed: str) -> None:
    assert gsm7_pack(text) == bytes.fromhex(packed)
    assert gsm7_unpack(bytes.fromhex(packed), len(text)) == text


def test_pack_extension_characters_use_escape() -> None:
    assert gsm7_encode("€[") == bytes((0x1B, 0x65, 0x1B, 0x3C))
    assert gsm7_unpack(gsm7_pack("€["), 4) == "€["


def test_pack_rejects_non_gsm() -> None:
    with pytest.raises(SmsEncodingError, match="not in the GSM-7 alphabet"):
        gsm7_pack("tab\there")


def test_unpack_errors() -> None:
    with pytest.raises(SmsEncodingError, match="5 septets need 5 octets, got 4"):
        gsm7_unpack(bytes.fromhex("E8329BFD"), 5)
    with pytest.raises(SmsEncodingError, match="septet count"):
        gsm7_unpack(b"", -1)
    with pytest.raises(SmsEncodingError, match="fill_bits"):
        gsm7_pack("a", fill_bits=7)


def test_decode_escape_edge_cases() -> None:
    assert gsm7_decode(bytes((0x1B, 0x41))) == "A"  # undefined extension: the basic character
    assert gsm7_decode(bytes((0x1B, 0x1B))) == " "  # reserved double escape: a space
    assert gsm7_decode(bytes((0x41, 0x1B))) == "A"  # a dangling escape is dropped
    with pytest.raises(SmsEncodingError, match=r"byte 0x80 at offset 1"):
        gsm7_decode(bytes((0x41, 0x80)))


@given(st.one_of(long_gsm_text, st.text(GSM_ALPHABET)), st.integers(0, 6))
@settings(max_examples=300)
def test_pack_unpack_round_trip(text: str, fill_bits: int) -> None:
    packed = gsm7_pack(text, fill_bits=fill_bits)
    septets = gsm7_septets(text)
    assert len(packed) == (7 * septets + fill_bits + 7) // 8
    assert gsm7_unpack(packed, septets, fill_bits=fill_bits) == text


@given(st.one_of(long_gsm_text, st.text(GSM_ALPHABET)))
def test_unpacked_round_trip(text: str) -> None:
    raw = gsm7_encode(text)
    assert len(raw) == gsm7_septets(text)
    assert all(b < 0x80 for b in raw)
    assert gsm7_decode(raw) == text


# -- UCS-2 ---------------------------------------------------------------------------


def test_ucs2_known() -> None:
    assert ucs2_encode("Ж😀") == bytes.fromhex("0416D83DDE00")
    assert ucs2_decode(bytes.fromhex("0416D83DDE00")) == "Ж😀"


def test_ucs2_errors() -> None:
    with pytest.raises(SmsEncodingError, match="odd length"):
        ucs2_decode(b"\x04")
    with pytest.raises(SmsEncodingError, match="unpaired surrogate"):
        ucs2_decode(bytes.fromhex("D83D0041"))
    with pytest.raises(SmsEncodingError, match="lone surrogate"):
        ucs2_encode("a\ud800")


@given(st.text())
def test_ucs2_round_trip(text: str) -> None:
    assert ucs2_decode(ucs2_encode(text)) == text
    assert len(ucs2_encode(text)) == 2 * utf16_units(text)


# -- UDH -------------------------------------------------------------------------------


def test_udh_concat_known() -> None:
    assert udh_concat(0x42, 3, 1) == bytes.fromhex("050003420301")
    assert udh_concat(0x1234, 3, 2, ref16=True) == bytes.fromhex("06080412340302")


@pytest.mark.parametrize(
    ("args", "ref16", "message"),
    [
        ((256, 2, 1), False, "reference must be 0..255"),
        ((65536, 2, 1), True, "reference must be 0..65535"),
        ((-1, 2, 1), False, "reference"),
        ((1, 0, 1), False, "total segments must be 1..255"),
        ((1, 256, 1), False, "total segments"),
        ((1, 3, 0), False, "segment number must be 1..3"),
        ((1, 3, 4), False, "segment number must be 1..3"),
    ],
)
def test_udh_concat_ranges(args: tuple[int, int, int], ref16: bool, message: str) -> None:
    with pytest.raises(UdhError, match=message):
        udh_concat(*args, ref16=ref16)


def test_parse_udh_with_several_elements() -> None:
    # UDHL 0x0B: concatenation (00 03 42 03 01) then application ports (05 04 0B84 23F0).
    elements, payload = parse_udh(bytes.fromhex("0B000342030105040B8423F0") + b"payload")
    assert elements == (
        InformationElement(0x00, bytes.fromhex("420301")),
        InformationElement(0x05, bytes.fromhex("0B8423F0")),
    )
    assert payload == b"payload"
    assert concat_info(elements) == Concat(0x42, 3, 1)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (bytes.fromhex("05000342"), "runs past the user data"),
        (bytes.fromhex("0300054203"), "runs past the header"),
        (bytes.fromhex("0100"), "cut short"),
    ],
)
def test_parse_udh_malformed(data: bytes, message: str) -> None:
    with pytest.raises(UdhError, match=message):
        parse_udh(data)


def test_concat_info_absent() -> None:
    assert concat_info((InformationElement(0x05, b"\x00\x00\x00\x00"),)) is None


@given(
    st.integers(0, 0xFFFF),
    st.integers(1, 255).flatmap(lambda total: st.tuples(st.just(total), st.integers(1, total))),
    st.binary(max_size=140),
    st.booleans(),
)
def test_udh_round_trip(ref: int, total_seq: tuple[int, int], payload: bytes, ref16: bool) -> None:
    total, seq = total_seq
    ref = ref if ref16 else ref & 0xFF
    elements, rest = parse_udh(udh_concat(ref, total, seq, ref16=ref16) + payload)
    assert rest == payload
    assert concat_info(elements) == Concat(ref, total, seq)
