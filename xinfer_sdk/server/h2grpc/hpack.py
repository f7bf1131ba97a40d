"""HPACK (RFC 7541): a decoder with the dynamic table and Huffman strings, and the few encoder pieces the
server needs (it never indexes what it sends, so its encoder keeps no state).

    dec = Decoder(max_table_size=4096, max_list_size=16384)
    headers, oversize = dec.decode(block)      # [(name, value) bytes], True if over max_list_size

Fast path: after a client's first request nearly every field is a one-byte index (``0x80 | i``), looked up
in one list. ``decode`` raises ``HpackError`` (a COMPRESSION_ERROR for the connection) on anything malformed:
index 0 or out of range, a truncated integer or string, a size update above the limit or after a field,
invalid Huffman. A header list larger than ``max_list_size`` is not collected (``oversize`` comes back True);
from that point on only what the dynamic table needs is decoded (it must stay in step with the client's):
strings of literals that are not indexed are skipped, not Huffman-decoded. A block with more than
``max_fields`` fields (more than any list within the limit can have) raises ``HpackFlood`` at once.
"""

from __future__ import annotations

from . import huffman

STATIC: tuple[tuple[bytes, bytes], ...] = tuple((n.encode(), v.encode()) for n, v in (
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
    (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
    (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
    ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""),
    ("cache-control", ""), ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""),
    ("content-length", ""), ("content-location", ""), ("content-range", ""), ("content-type", ""),
    ("cookie", ""), ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""),
    ("proxy-authenticate", ""), ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""),
    ("retry-after", ""), ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""),
    ("transfer-encoding", ""), ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", "")))
_NSTATIC = len(STATIC)  # 61
_ENTRY_OVERHEAD = 32
_MAX_INT_BYTES = 5  # continuation bytes of one integer (values up to 2^35: far beyond any sane size)
_STRING_CACHE_MAX = 512
_STRING_CACHE_LEN = 128  # Huffman strings up to this many bytes are remembered (user-agent, paths, ...)


class HpackError(ValueError):
    """A header block that cannot be decoded (a COMPRESSION_ERROR of the connection)."""


class HpackFlood(HpackError):
    """A header block with far more fields than the list limit allows (ENHANCE_YOUR_CALM for the connection)."""


class Decoder:
    """One connection's HPACK decoding context (the dynamic table lives as long as the connection)."""

    __slots__ = ("max_allowed", "max_size", "size", "dynamic", "generation", "max_list_size", "max_fields",
                 "_strings")

    def __init__(self, max_table_size: int = 4096, max_list_size: int = 16384, max_fields: int | None = None):
        self.max_allowed = max_table_size  # our SETTINGS_HEADER_TABLE_SIZE: the most a size update may ask for
        self.max_size = max_table_size
        self.size = 0
        self.dynamic: list[tuple[bytes, bytes]] = []  # newest LAST: index 62 is dynamic[-1]
        self.generation = 0  # bumped whenever the dynamic table changes (callers cache decoded blocks by it)
        self.max_list_size = max_list_size
        # every field counts at least 32 bytes against the list size: a block with twice the fields a list within
        # the limit can hold is a flood, not a request
        self.max_fields = max_fields if max_fields is not None else max(64, 2 * max_list_size // _ENTRY_OVERHEAD)
        self._strings: dict[bytes, bytes] = {}

    # -- table ------------------------------------------------------------------------------------------
    def _get(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= _NSTATIC:
            return STATIC[index - 1]
        d = index - _NSTATIC
        if index <= 0 or d > len(self.dynamic):
            raise HpackError(f"header index {index} is not in the table (static 1..61, dynamic 62..{61 + len(self.dynamic)})")
        return self.dynamic[-d]

    def _add(self, name: bytes, value: bytes) -> None:
        self.generation += 1
        need = len(name) + len(value) + _ENTRY_OVERHEAD
        dyn = self.dynamic
        if need > self.max_size:  # RFC 7541 4.4: an entry larger than the table empties it
            dyn.clear()
            self.size = 0
            return
        size = self.size + need
        evict = 0
        while size > self.max_size:
            n, v = dyn[evict]
            size -= len(n) + len(v) + _ENTRY_OVERHEAD
            evict += 1
        if evict:
            del dyn[:evict]
        dyn.append((name, value))
        self.size = size

    def _resize(self, new: int) -> None:
        if new > self.max_allowed:
            raise HpackError(f"dynamic table size update to {new} exceeds the limit of {self.max_allowed}")
        self.generation += 1
        self.max_size = new
        dyn = self.dynamic
        while self.size > new:
            n, v = dyn.pop(0)
            self.size -= len(n) + len(v) + _ENTRY_OVERHEAD

    # -- primitives -------------------------------------------------------------------------------------
    @staticmethod
    def _int(block: bytes, pos: int, end: int, prefix_mask: int) -> tuple[int, int]:
        value = block[pos] & prefix_mask
        pos += 1
        if value < prefix_mask:
            return value, pos
        shift = 0
        for _ in range(_MAX_INT_BYTES):
            if pos >= end:
                raise HpackError("the header block ends inside an integer")
            b = block[pos]
            pos += 1
            value += (b & 0x7F) << shift
            if not b & 0x80:
                return value, pos
            shift += 7
        raise HpackError("an integer in the header block is too long")

    def _str(self, block: bytes, pos: int, end: int) -> tuple[bytes, int]:
        if pos >= end:
            raise HpackError("the header block ends before a string")
        huff = block[pos] & 0x80
        n, pos = self._int(block, pos, end, 0x7F)
        stop = pos + n
        if stop > end:
            raise HpackError("a string runs past the end of the header block")
        raw = block[pos:stop]
        if not huff:
            return raw, stop
        cached = self._strings.get(raw)
        if cached is not None:
            return cached, stop
        try:
            text = huffman.decode(raw)
        except huffman.HuffmanError as exc:
            raise HpackError(str(exc)) from None
        if n <= _STRING_CACHE_LEN:
            if len(self._strings) >= _STRING_CACHE_MAX:
                self._strings.clear()
            self._strings[raw] = text
        return text, stop

    def _skip(self, block: bytes, pos: int, end: int) -> int:
        """Step over a string without decoding it."""
        if pos >= end:
            raise HpackError("the header block ends before a string")
        n, pos = self._int(block, pos, end, 0x7F)
        if pos + n > end:
            raise HpackError("a string runs past the end of the header block")
        return pos + n

    # -- blocks -----------------------------------------------------------------------------------------
    def decode(self, block: bytes) -> tuple[list[tuple[bytes, bytes]], bool]:
        """Decode a complete header block: (fields in order, True if the list exceeded max_list_size)."""
        out: list[tuple[bytes, bytes]] = []
        append = out.append
        pos, end = 0, len(block)
        total = 0
        limit = self.max_list_size
        oversize = False
        fields = 0
        max_fields = self.max_fields
        static = STATIC
        dyn = self.dynamic
        while pos < end:
            b = block[pos]
            if b & 0x80:  # indexed field
                if b < 0xFF:
                    idx = b & 0x7F
                    pos += 1
                else:
                    idx, pos = self._int(block, pos, end, 0x7F)
                if 0 < idx <= _NSTATIC:
                    field = static[idx - 1]
                elif _NSTATIC < idx <= _NSTATIC + len(dyn):
                    field = dyn[_NSTATIC - idx]
                else:
                    raise HpackError(f"header index {idx} is not in the table")
            elif b & 0x40:  # literal with incremental indexing
                idx, pos = self._int(block, pos, end, 0x3F)
                if idx:
                    name = self._get(idx)[0]
                else:
                    name, pos = self._str(block, pos, end)
                value, pos = self._str(block, pos, end)
                field = (name, value)
                self._add(name, value)
                dyn = self.dynamic
            elif b & 0x20:  # dynamic table size update: only before the first field
                if fields:
                    raise HpackError("a dynamic table size update came after a header field")
                size, pos = self._int(block, pos, end, 0x1F)
                self._resize(size)
                continue
            else:  # literal without indexing (0000) / never indexed (0001)
                idx, pos = self._int(block, pos, end, 0x0F)
                if oversize:  # not collected and not indexed: nothing to decode
                    if idx:
                        self._get(idx)
                    else:
                        pos = self._skip(block, pos, end)
                    pos = self._skip(block, pos, end)
                    fields += 1
                    if fields > max_fields:
                        raise HpackFlood(f"a header block with more than {max_fields} fields")
                    continue
                if idx:
                    name = self._get(idx)[0]
                else:
                    name, pos = self._str(block, pos, end)
                value, pos = self._str(block, pos, end)
                field = (name, value)
            fields += 1
            if fields > max_fields:
                raise HpackFlood(f"a header block with more than {max_fields} fields")
            if not oversize:
                total += len(field[0]) + len(field[1]) + _ENTRY_OVERHEAD
                if total > limit:
                    oversize = True
                    out.clear()
                else:
                    append(field)
        return out, oversize


# -- encoder (stateless: literals never enter the client's table) -------------------------------------------
def encode_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer with an N-bit prefix; ``first`` holds the pattern bits above the prefix."""
    mask = (1 << prefix_bits) - 1
    if value < mask:
        return bytes((first | value,))
    out = bytearray((first | mask,))
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: bytes | int, value: bytes) -> bytes:
    """A literal field without indexing (plain, not Huffman); ``name`` may be a static-table index."""
    if isinstance(name, int):
        head = encode_int(name, 4, 0x00)
    else:
        head = b"\x00" + encode_int(len(name), 7) + name
    return head + encode_int(len(value), 7) + value


def status(code: int) -> bytes:
    """``:status`` (indexed when the static table has it)."""
    for i, (_name, v) in enumerate(STATIC[7:14], start=8):
        if v == str(code).encode():
            return bytes((0x80 | i,))
    return literal(8, str(code).encode())


TABLE_SIZE_ZERO = encode_int(0, 5, 0x20)  # "the table I index into is empty": sent after the peer shrinks it
