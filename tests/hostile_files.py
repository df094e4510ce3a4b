"""Hostile variants of a valid MRS file, made by editing its bytes (for the fuzz tests)."""

from __future__ import annotations

from pathlib import Path

from mrs_testfiles import write_mrs

CARD = 80
BLOCK = 2880


def valid_bytes(tmp_path: Path, **kwargs) -> bytes:
    return write_mrs(tmp_path / "valid-source.fits", **kwargs).read_bytes()


def header_starts(raw: bytes) -> list[int]:
    """Byte offsets of each HDU's header (primary first)."""
    return [i for i in range(0, len(raw), BLOCK) if raw[i : i + 8] in (b"SIMPLE  ", b"XTENSION")]


def card_offsets(raw: bytes, hdu: int) -> list[int]:
    """Offsets of the cards of one header, END included."""
    start = header_starts(raw)[hdu]
    offsets = []
    for offset in range(start, len(raw), CARD):
        offsets.append(offset)
        if raw[offset : offset + 8] == b"END     ":
            break
    return offsets


def set_card(raw: bytes, hdu: int, keyword: str, value: str) -> bytes:
    """Replace the card ``keyword`` of header ``hdu`` with ``KEYWORD = value`` (raw text)."""
    data = bytearray(raw)
    for offset in card_offsets(raw, hdu):
        if data[offset : offset + 8] == keyword.ljust(8).encode():
            data[offset : offset + CARD] = (keyword.ljust(8) + "= " + value).ljust(CARD).encode("latin-1")[:CARD]
            return bytes(data)
    raise KeyError(keyword)


def poke(raw: bytes, offset: int, new: bytes) -> bytes:
    data = bytearray(raw)
    data[offset : offset + len(new)] = new
    return bytes(data)
