"""HPACK decoder against RFC 7541 Appendix C (integers, literals, requests with and without Huffman, responses
with dynamic-table eviction), its error cases, and the Huffman code."""

from __future__ import annotations

import os

import pytest

from xinfer_sdk.server.h2grpc import huffman
from xinfer_sdk.server.h2grpc.hpack import Decoder, HpackError, encode_int, literal, status


def h(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", "").replace("\n", ""))


def fields(*pairs: str) -> list[tuple[bytes, bytes]]:
    return [(pairs[i].encode(), pairs[i + 1].encode()) for i in range(0, len(pairs), 2)]


def table(dec: Decoder) -> list[tuple[bytes, bytes]]:
    """The dynamic table in RFC order (index 62 first)."""
    return list(reversed(dec.dynamic))


# -- C.1 integers --------------------------------------------------------------------------------------------
def test_integer_representation_c1():
    assert encode_int(10, 5) == h("0a")
    assert encode_int(1337, 5) == h("1f9a0a")
    assert encode_int(42, 8) == h("2a")
    dec = Decoder()
    assert dec._int(h("1f9a0a"), 0, 3, 0x1F) == (1337, 3)
    assert dec._int(h("0a"), 0, 1, 0x1F) == (10, 1)


# -- C.2 header field representations ----------------------------------------------------------------------
def test_literal_with_indexing_c21():
    dec = Decoder()
    out, oversize = dec.decode(h("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"))
    assert out == fields("custom-key", "custom-header") and not oversize
    assert table(dec) == fields("custom-key", "custom-header") and dec.size == 55


def test_literal_without_indexing_c22():
    dec = Decoder()
    out, _ = dec.decode(h("040c 2f73 616d 706c 652f 7061 7468"))
    assert out == fields(":path", "/sample/path") and dec.dynamic == [] and dec.size == 0


def test_literal_never_indexed_c23():
    dec = Decoder()
    out, _ = dec.decode(h("1008 7061 7373 776f 7264 0673 6563 7265 74"))
    assert out == fields("password", "secret") and dec.dynamic == []


def test_indexed_c24():
    dec = Decoder()
    assert dec.decode(h("82"))[0] == fields(":method", "GET") and dec.dynamic == []


# -- C.3 / C.4 requests ----------------------------------------------------------------------------------------
REQUESTS_PLAIN = ["8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                  "8286 84be 5808 6e6f 2d63 6163 6865",
                  "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65"]
REQUESTS_HUFFMAN = ["8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                    "8286 84be 5886 a8eb 1064 9cbf",
                    "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"]


@pytest.mark.parametrize("blocks", [REQUESTS_PLAIN, REQUESTS_HUFFMAN], ids=["c3-plain", "c4-huffman"])
def test_request_sequence(blocks):
    dec = Decoder()
    base = fields(":method", "GET", ":scheme", "http", ":path", "/", ":authority", "www.example.com")
    assert dec.decode(h(blocks[0]))[0] == base
    assert table(dec) == fields(":authority", "www.example.com") and dec.size == 57
    assert dec.decode(h(blocks[1]))[0] == base + fields("cache-control", "no-cache")
    assert table(dec) == fields("cache-control", "no-cache", ":authority", "www.example.com") and dec.size == 110
    assert dec.decode(h(blocks[2]))[0] == fields(":method", "GET", ":scheme", "https", ":path", "/index.html",
                                                 ":authority", "www.example.com", "custom-key", "custom-value")
    assert table(dec) == fields("custom-key", "custom-value", "cache-control", "no-cache", ":authority",
                                "www.example.com")
    assert dec.size == 164


# -- C.5 / C.6 responses, table size 256: eviction -----------------------------------------------------------
RESPONSES_PLAIN = [
    "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3120 474d"
    "546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
    "4803 3330 37c1 c0bf",
    "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970 7738 666f"
    "6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b"
    "2076 6572 7369 6f6e 3d31"]
RESPONSES_HUFFMAN = [
    "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7"
    "8f0b 97c8 e9ae 82ae 43d3",
    "4883 640e ffc1 c0bf",
    "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335"
    "dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07"]
DATE1, DATE2 = "Mon, 21 Oct 2013 20:13:21 GMT", "Mon, 21 Oct 2013 20:13:22 GMT"
LOC = "https://www.example.com"
COOKIE = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"


@pytest.mark.parametrize("blocks", [RESPONSES_PLAIN, RESPONSES_HUFFMAN], ids=["c5-plain", "c6-huffman"])
def test_response_sequence_with_eviction(blocks):
    dec = Decoder(max_table_size=256)
    out = dec.decode(h(blocks[0]))[0]
    assert out == fields(":status", "302", "cache-control", "private", "date", DATE1, "location", LOC)
    assert table(dec) == fields("location", LOC, "date", DATE1, "cache-control", "private", ":status", "302")
    assert dec.size == 222
    out = dec.decode(h(blocks[1]))[0]
    assert out == fields(":status", "307", "cache-control", "private", "date", DATE1, "location", LOC)
    # ":status: 302" was evicted to make room
    assert table(dec) == fields(":status", "307", "location", LOC, "date", DATE1, "cache-control", "private")
    assert dec.size == 222
    out = dec.decode(h(blocks[2]))[0]
    assert out == fields(":status", "200", "cache-control", "private", "date", DATE2, "location", LOC,
                         "content-encoding", "gzip", "set-cookie", COOKIE)
    assert table(dec) == fields("set-cookie", COOKIE, "content-encoding", "gzip", "date", DATE2)
    assert dec.size == 215


def test_size_update_shrinks_and_evicts_and_entry_larger_than_table_empties_it():
    dec = Decoder()
    dec.decode(h(REQUESTS_PLAIN[0]) + h(REQUESTS_PLAIN[1])[4:])  # two entries
    assert dec.size == 110
    dec.decode(h("3f1a") + h("82"))  # size update to 57 (0x1f + 26) first, then a field
    assert dec.max_size == 57 and table(dec) == fields("cache-control", "no-cache") and dec.size == 53
    dec.decode(b"\x40" + b"\x0a" + b"custom-key" + b"\x3c" + b"v" * 60)  # 10 + 60 + 32 > 57
    assert dec.dynamic == [] and dec.size == 0


@pytest.mark.parametrize("block, why", [
    ("80", "index 0"),
    ("be", "index 62 with an empty dynamic table"),
    ("ff80808080808001", "integer too long"),
    ("ff", "truncated integer"),
    ("040c 2f73", "string past the end"),
    ("82 3f e1 1f", "size update after a field"),
    ("3fe21f", "size update above the limit"),
    ("0481 ff", "Huffman string with EOS-prefix padding longer than 7 bits"),
    ("0484 ffff ffff", "Huffman EOS"),
])
def test_malformed_blocks_are_compression_errors(block, why):
    with pytest.raises(HpackError):
        Decoder().decode(h(block))


def test_header_list_limit_still_keeps_the_table_in_step():
    dec = Decoder(max_list_size=100)
    block = literal(b"x-big", b"a" * 200)  # without indexing
    block_indexed = b"\x40\x05x-idx\x7f\x32" + b"b" * 177  # 127 + 50, with indexing
    out, oversize = dec.decode(block + block_indexed)
    assert oversize and out == []
    assert table(dec) == [(b"x-idx", b"b" * 177)]
    out, oversize = dec.decode(h("82"))
    assert not oversize and out == fields(":method", "GET")


def test_encoder_pieces():
    assert status(200) == h("88") and status(404) == h("8d")
    assert Decoder().decode(status(405))[0] == fields(":status", "405")
    long = b"m" * 300
    assert Decoder().decode(literal(b"grpc-message", long) + literal(31, b"application/grpc"))[0] == [
        (b"grpc-message", long), (b"content-type", b"application/grpc")]


def test_huffman_round_trip_and_rfc_example():
    assert huffman.decode(h("f1e3c2e5f23a6ba0ab90f4ff")) == b"www.example.com"
    assert huffman.encode(b"www.example.com") == h("f1e3c2e5f23a6ba0ab90f4ff")
    rnd = os.urandom(4096)
    for i in range(0, 4096, 64):
        s = rnd[i:i + (i % 61)]
        assert huffman.decode(huffman.encode(s)) == s


def test_huffman_matches_an_independent_encoder():
    hp = pytest.importorskip("hpack.huffman")
    hc = pytest.importorskip("hpack.huffman_constants")
    ref = hp.HuffmanEncoder(hc.REQUEST_CODES, hc.REQUEST_CODES_LENGTH)
    for n in range(0, 300, 7):
        s = bytes((i * 37 + n) % 256 for i in range(n))
        assert huffman.encode(s) == ref.encode(s)
        assert huffman.decode(ref.encode(s)) == s


def test_random_blocks_decode_or_fail_cleanly():
    hyp = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")

    @hyp.settings(max_examples=400, deadline=None)
    @hyp.given(st.binary(max_size=200), st.integers(0, 4096))
    def check(block, table_size):
        dec = Decoder(max_table_size=4096, max_list_size=1024)
        dec.decode(h(REQUESTS_HUFFMAN[0]))
        try:
            dec._resize(table_size)
            out, oversize = dec.decode(block)
        except HpackError:
            return
        assert dec.size <= dec.max_size
        assert oversize or sum(len(n) + len(v) + 32 for n, v in out) <= 1024

    check()
