"""HPACK's static Huffman code (RFC 7541 Appendix B) and a table-driven decoder.

The decoder walks a finite-state machine four bits at a time: a state is an internal node of the code tree;
each (state, nibble) entry gives the next state and the symbol completed on the way (no code is shorter than
5 bits, so a nibble completes at most one). The tables are built once, on first use (~16k entries, a few ms).
The end of a string must be padding: at most 7 bits, all ones (a prefix of EOS); EOS itself is an error.
"""

from __future__ import annotations

# symbol 0..256 (256 = EOS): "code:bit-length", code in hex, from RFC 7541 Appendix B
_CODES = """
1ff8:13 7fffd8:23 fffffe2:28 fffffe3:28 fffffe4:28 fffffe5:28 fffffe6:28 fffffe7:28 fffffe8:28 ffffea:24
3ffffffc:30 fffffe9:28 fffffea:28 3ffffffd:30 fffffeb:28 fffffec:28 fffffed:28 fffffee:28 fffffef:28
ffffff0:28 ffffff1:28 ffffff2:28 3ffffffe:30 ffffff3:28 ffffff4:28 ffffff5:28 ffffff6:28 ffffff7:28
ffffff8:28 ffffff9:28 ffffffa:28 ffffffb:28 14:6 3f8:10 3f9:10 ffa:12 1ff9:13 15:6 f8:8 7fa:11 3fa:10
3fb:10 f9:8 7fb:11 fa:8 16:6 17:6 18:6 0:5 1:5 2:5 19:6 1a:6 1b:6 1c:6 1d:6 1e:6 1f:6 5c:7 fb:8 7ffc:15
20:6 ffb:12 3fc:10 1ffa:13 21:6 5d:7 5e:7 5f:7 60:7 61:7 62:7 63:7 64:7 65:7 66:7 67:7 68:7 69:7 6a:7
6b:7 6c:7 6d:7 6e:7 6f:7 70:7 71:7 72:7 fc:8 73:7 fd:8 1ffb:13 7fff0:19 1ffc:13 3ffc:14 22:6 7ffd:15 3:5
23:6 4:5 24:6 5:5 25:6 26:6 27:6 6:5 74:7 75:7 28:6 29:6 2a:6 7:5 2b:6 76:7 2c:6 8:5 9:5 2d:6 77:7 78:7
79:7 7a:7 7b:7 7ffe:15 7fc:11 3ffd:14 1ffd:13 ffffffc:28 fffe6:20 3fffd2:22 fffe7:20 fffe8:20 3fffd3:22
3fffd4:22 3fffd5:22 7fffd9:23 3fffd6:22 7fffda:23 7fffdb:23 7fffdc:23 7fffdd:23 7fffde:23 ffffeb:24
7fffdf:23 ffffec:24 ffffed:24 3fffd7:22 7fffe0:23 ffffee:24 7fffe1:23 7fffe2:23 7fffe3:23 7fffe4:23
1fffdc:21 3fffd8:22 7fffe5:23 3fffd9:22 7fffe6:23 7fffe7:23 ffffef:24 3fffda:22 1fffdd:21 fffe9:20
3fffdb:22 3fffdc:22 7fffe8:23 7fffe9:23 1fffde:21 7fffea:23 3fffdd:22 3fffde:22 fffff0:24 1fffdf:21
3fffdf:22 7fffeb:23 7fffec:23 1fffe0:21 1fffe1:21 3fffe0:22 1fffe2:21 7fffed:23 3fffe1:22 7fffee:23
7fffef:23 fffea:20 3fffe2:22 3fffe3:22 3fffe4:22 7ffff0:23 3fffe5:22 3fffe6:22 7ffff1:23 3ffffe0:26
3ffffe1:26 fffeb:20 7fff1:19 3fffe7:22 7ffff2:23 3fffe8:22 1ffffec:25 3ffffe2:26 3ffffe3:26 3ffffe4:26
7ffffde:27 7ffffdf:27 3ffffe5:26 fffff1:24 1ffffed:25 7fff2:19 1fffe3:21 3ffffe6:26 7ffffe0:27
7ffffe1:27 3ffffe7:26 7ffffe2:27 fffff2:24 1fffe4:21 1fffe5:21 3ffffe8:26 3ffffe9:26 ffffffd:28
7ffffe3:27 7ffffe4:27 7ffffe5:27 fffec:20 fffff3:24 fffed:20 1fffe6:21 3fffe9:22 1fffe7:21 1fffe8:21
7ffff3:23 3fffea:22 3fffeb:22 1ffffee:25 1ffffef:25 fffff4:24 fffff5:24 3ffffea:26 7ffff4:23 3ffffeb:26
7ffffe6:27 3ffffec:26 3ffffed:26 7ffffe7:27 7ffffe8:27 7ffffe9:27 7ffffea:27 7ffffeb:27 ffffffe:28
7ffffec:27 7ffffed:27 7ffffee:27 7ffffef:27 7fffff0:27 3ffffee:26 3fffffff:30
"""

_FAIL = -2
_tables: tuple[list[int], list[int], list[bool]] | None = None


class HuffmanError(ValueError):
    """The bytes are not a valid Huffman-coded HPACK string."""


def codes() -> list[tuple[int, int]]:
    """(code, bit length) per symbol 0..256."""
    out = []
    for tok in _CODES.split():
        code, bits = tok.split(":")
        out.append((int(code, 16), int(bits)))
    return out


def _build() -> tuple[list[int], list[int], list[bool]]:
    # the code tree: node i has children[2i], children[2i+1]; a child >= 0 is an internal node, < 0 is
    # -(symbol + 1)
    children = [0, 0]
    depth = [0]
    ones = [True]  # reached from the root by 1-bits only (a prefix of EOS)
    for sym, (code, bits) in enumerate(codes()):
        node = 0
        for i in range(bits - 1, -1, -1):
            bit = (code >> i) & 1
            slot = 2 * node + bit
            if i == 0:
                children[slot] = -(sym + 1)
                break
            nxt = children[slot]
            if nxt == 0:
                nxt = len(depth)
                children[slot] = nxt
                children.extend((0, 0))
                depth.append(depth[node] + 1)
                ones.append(ones[node] and bit == 1)
            node = nxt
    states = len(depth)
    nxt_tab = [0] * (states * 16)
    emit_tab = [-1] * (states * 16)
    for s in range(states):
        for nib in range(16):
            node, emit = s, -1
            for i in (3, 2, 1, 0):
                child = children[2 * node + ((nib >> i) & 1)]
                if child < 0:
                    sym = -child - 1
                    if sym == 256:  # EOS inside a string is an error (RFC 7541 5.2)
                        emit = _FAIL
                        break
                    emit = sym
                    node = 0
                else:
                    node = child
            nxt_tab[s * 16 + nib] = node
            emit_tab[s * 16 + nib] = emit
    accept = [ones[s] and depth[s] <= 7 for s in range(states)]
    return nxt_tab, emit_tab, accept


def decode(data: bytes) -> bytes:
    """Decode one Huffman-coded string; raises HuffmanError on EOS, bad padding or a truncated code."""
    global _tables
    if _tables is None:
        _tables = _build()
    nxt, emit, accept = _tables
    out = bytearray()
    append = out.append
    s = 0
    for b in data:
        i = (s << 4) | (b >> 4)
        e = emit[i]
        s = nxt[i]
        if e >= 0:
            append(e)
        elif e == _FAIL:
            raise HuffmanError("the Huffman-coded string contains EOS")
        i = (s << 4) | (b & 15)
        e = emit[i]
        s = nxt[i]
        if e >= 0:
            append(e)
        elif e == _FAIL:
            raise HuffmanError("the Huffman-coded string contains EOS")
    if not accept[s]:
        raise HuffmanError("the Huffman-coded string ends with invalid padding")
    return bytes(out)


def encode(data: bytes) -> bytes:
    """Huffman-code ``data`` (used by tests and clients; the server sends plain literals)."""
    table = _encode_table()
    acc = nbits = 0
    out = bytearray()
    for b in data:
        code, bits = table[b]
        acc = (acc << bits) | code
        nbits += bits
        while nbits >= 8:
            nbits -= 8
            out.append((acc >> nbits) & 0xFF)
        acc &= (1 << nbits) - 1
    if nbits:
        out.append(((acc << (8 - nbits)) | ((1 << (8 - nbits)) - 1)) & 0xFF)
    return bytes(out)


_enc: list[tuple[int, int]] | None = None


def _encode_table() -> list[tuple[int, int]]:
    global _enc
    if _enc is None:
        _enc = codes()
    return _enc
