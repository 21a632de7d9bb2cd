"""The header of a GGUF file, read by a small parser of our own: key-values and tensor infos.

The format (ggml's ``docs/gguf.md``): the magic ``GGUF``, a uint32 version (2 or 3 here: llama.cpp
no longer reads version 1), the tensor count and the key-value count (uint64), the key-values (a
string key, a uint32 value type, the value), then one info per tensor (name, uint32 dimension
count, uint64 dimensions, uint32 ggml type, uint64 offset into the data section). The data section
starts at the first multiple of ``general.alignment`` (32 when absent) after the infos. A string is
a uint64 byte count and its UTF-8 bytes; an array, a uint32 item type, a uint64 count and the items
(arrays of arrays included). Little-endian, or big-endian throughout (the version tells which).

What a server needs from a header is small, but the header is not: a vocabulary of 152k tokens and
151k merges is megabytes of strings. Arrays of more than ``max_array`` items are skipped, never
built: fixed-size items in one seek, strings by walking their lengths with ``struct`` in the read
buffer; their field keeps the item count (``tokenizer.ggml.tokens``: the vocabulary size). The
file is read in chunks with ``read()``, never mapped (a file truncated under a mapping kills the
reader with SIGBUS), and the tensor data is never read.

Strings are decoded as UTF-8, a malformed byte replaced by U+FFFD (as JSON answers would show it).
A malformed, truncated or hostile file raises ``GGUFError`` (a ValueError) naming the file and the
byte offset: every count and length is checked against the bytes left in the file before anything
is read or allocated, and what one header may build and walk is bounded.

Each tensor's size follows from its info alone: ggml stores a tensor's rows in blocks of a type's
block size (1 for F32, 32 for Q8_0, 256 for the K-quants), each block of a fixed byte count
(``GGML_TYPES``; ggml.c's type traits), so ``TensorInfo.nbytes`` is known without reading data.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, BinaryIO, TypeAlias

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32  # ggml's GGUF_DEFAULT_ALIGNMENT
MAX_ARRAY = 64  # longer arrays are skipped (Ollama lists them as null)
MAX_DIMS = 4  # ggml's GGML_MAX_DIMS: llama.cpp refuses tensors of more dimensions
MAX_NESTING = 8  # arrays of arrays nest at most once in real files
MAX_NAME = 1 << 16  # bytes of a key or a tensor name
MAX_STRING = 16 << 20  # bytes of a string value built; longer ones are skipped like long arrays
MAX_BUILT = 32 << 20  # bytes of values, names and objects built for one header, about
MAX_WALKED = 1 << 24  # strings and arrays walked to skip them (vocabularies have ~10^5)
CHUNK = 256 << 10  # bytes per read()
OBJECT = 64  # what one built object (a field, a tensor info) is charged, besides its bytes


class ValueType(IntEnum):
    """GGUF's value types (``enum gguf_type``)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# struct codes of the fixed-size types
CODES: dict[ValueType, str] = {
    ValueType.UINT8: "B",
    ValueType.INT8: "b",
    ValueType.UINT16: "H",
    ValueType.INT16: "h",
    ValueType.UINT32: "I",
    ValueType.INT32: "i",
    ValueType.FLOAT32: "f",
    ValueType.BOOL: "?",
    ValueType.UINT64: "Q",
    ValueType.INT64: "q",
    ValueType.FLOAT64: "d",
}
SIZES: dict[ValueType, int] = {kind: struct.calcsize("<" + code) for kind, code in CODES.items()}
# the fewest bytes an item takes: what a count is checked against before anything is read
MIN_SIZES: dict[ValueType, int] = SIZES | {ValueType.STRING: 8, ValueType.ARRAY: 12}
TYPES = tuple(ValueType)

Value: TypeAlias = "bool | int | float | str | list[Value] | None"


@dataclass(frozen=True, slots=True)
class GGMLType:
    """How ggml stores one tensor type: elements per block, bytes per block."""

    name: str
    block_size: int
    type_size: int


# ggml.h's enum ggml_type, with each type's block layout (ggml.c's type_traits).
GGML_TYPES: dict[int, GGMLType] = {
    number: GGMLType(name, block, size)
    for number, name, block, size in (
        (0, "F32", 1, 4),
        (1, "F16", 1, 2),
        (2, "Q4_0", 32, 18),
        (3, "Q4_1", 32, 20),
        (6, "Q5_0", 32, 22),
        (7, "Q5_1", 32, 24),
        (8, "Q8_0", 32, 34),
        (9, "Q8_1", 32, 40),
        (10, "Q2_K", 256, 84),
        (11, "Q3_K", 256, 110),
        (12, "Q4_K", 256, 144),
        (13, "Q5_K", 256, 176),
        (14, "Q6_K", 256, 210),
        (15, "Q8_K", 256, 292),
        (16, "IQ2_XXS", 256, 66),
        (17, "IQ2_XS", 256, 74),
        (18, "IQ3_XXS", 256, 98),
        (19, "IQ1_S", 256, 50),
        (20, "IQ4_NL", 32, 18),
        (21, "IQ3_S", 256, 110),
        (22, "IQ2_S", 256, 82),
        (23, "IQ4_XS", 256, 136),
        (24, "I8", 1, 1),
        (25, "I16", 1, 2),
        (26, "I32", 1, 4),
        (27, "I64", 1, 8),
        (28, "F64", 1, 8),
        (29, "IQ1_M", 256, 56),
        (30, "BF16", 1, 2),
        (34, "TQ1_0", 256, 54),
        (35, "TQ2_0", 256, 66),
        (39, "MXFP4", 32, 17),
        (40, "NVFP4", 64, 36),
        (41, "Q1_0", 128, 18),
    )
}
GGML_TYPE_NUMBERS = {kind.name: number for number, kind in GGML_TYPES.items()}


def row_bytes(ggml_type: int, elements: int) -> int | None:
    """Bytes of a row of ``elements`` of a type (ggml_row_size); None for a type we do not know."""
    kind = GGML_TYPES.get(ggml_type)
    return None if kind is None else elements // kind.block_size * kind.type_size


class GGUFError(ValueError):
    """A file that is not a GGUF file we can read: malformed, truncated, hostile or unsupported."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"{path} at byte {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Field:
    """One key-value. ``value`` is None when skipped: an array of more than ``max_array`` items,
    or a string of more than MAX_STRING bytes. ``length``: an array's item count, also when its
    items were skipped, or a skipped string's byte count."""

    type: ValueType
    value: Value
    item_type: ValueType | None = None
    length: int | None = None


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One tensor as the header describes it (its data is never read)."""

    name: str
    shape: tuple[int, ...]  # in ggml's order: the row length first (ne[0], ne[1], ...)
    ggml_type: int  # ggml.h's enum ggml_type: 0 F32, 1 F16, 8 Q8_0, 12 Q4_K, ...
    offset: int  # from the start of the data section (GGUFHeader.data_offset)

    @property
    def type_name(self) -> str:
        kind = GGML_TYPES.get(self.ggml_type)
        return kind.name if kind else f"type {self.ggml_type}"

    @property
    def nbytes(self) -> int | None:
        """The bytes of its data (ggml_nbytes of a contiguous tensor); None for an unknown type."""
        rows = 1
        for dim in self.shape[1:]:
            rows *= dim
        row = row_bytes(self.ggml_type, self.shape[0] if self.shape else 1)
        return None if row is None else row * rows


@dataclass(frozen=True)
class GGUFHeader:
    path: str
    size: int  # of the file, from the descriptor that was read
    mtime_ns: int
    version: int
    byte_order: str  # "little" or "big"
    fields: Mapping[str, Field]
    tensors: tuple[TensorInfo, ...]
    alignment: int
    data_offset: int  # where the tensor data starts in the file

    @property
    def kv(self) -> dict[str, Value]:
        """The key-values, skipped ones as None."""
        return {key: field.value for key, field in self.fields.items()}

    def array_length(self, key: str) -> int | None:
        field = self.fields.get(key)
        return field.length if field is not None and field.type == ValueType.ARRAY else None

    @property
    def vocab_size(self) -> int | None:
        return self.array_length("tokenizer.ggml.tokens")


def read_header(path: str | os.PathLike[str], max_array: int = MAX_ARRAY) -> GGUFHeader:
    """The header of the GGUF file at ``path``. Raises GGUFError for a file we cannot read as
    GGUF, OSError when it cannot be opened or read."""
    name = os.fspath(path)
    with open(name, "rb") as file:
        stat = os.fstat(file.fileno())
        return _Parser(file, name, stat.st_size, max_array).header(stat.st_mtime_ns)


class _Parser:
    """A cursor over the file: ``buf`` holds the file's bytes from offset ``start``, ``pos`` is
    the position in it; the file's own position is always ``start + len(buf)``."""

    def __init__(self, file: BinaryIO, path: str, size: int, max_array: int) -> None:
        self.file = file
        self.path = path
        self.size = size
        self.max_array = max_array
        self.buf = b""
        self.start = 0
        self.pos = 0
        self.built = 0
        self.walked = 0
        self.what = "the magic"  # what is being read, for the errors
        self.order = "<"
        self._structs()

    def _structs(self) -> None:
        self.u32 = struct.Struct(self.order + "I")
        self.u64 = struct.Struct(self.order + "Q")
        self.scalars = {kind: struct.Struct(self.order + code) for kind, code in CODES.items()}

    # -- errors and the budget

    @property
    def offset(self) -> int:
        return self.start + self.pos

    def fail(self, reason: str, offset: int | None = None) -> GGUFError:
        return GGUFError(self.path, self.offset if offset is None else offset, f"{reason}, in {self.what}")

    def _truncated(self, needed: int) -> GGUFError:
        left = max(0, self.size - self.offset)
        return self.fail(f"truncated: {needed} bytes needed, the file has {left} left")

    def _charge(self, size: int) -> None:
        self.built += size
        if self.built > MAX_BUILT:
            raise self.fail(f"the header's values exceed {MAX_BUILT} bytes")

    def _check_count(self, count: int, item: int, at: int) -> None:
        """A count of items of at least ``item`` bytes each must fit in the rest of the file."""
        if count * item > self.size - self.offset:
            raise self.fail(
                f"{count} items of at least {item} bytes do not fit in the {self.size - self.offset} "
                "bytes left in the file",
                at,
            )

    # -- the cursor

    def _need(self, size: int) -> None:
        """Make the next ``size`` bytes available in the buffer."""
        offset = self.offset
        if offset + size > self.size:
            raise self._truncated(size)
        keep = self.buf[self.pos :]
        self.buf = keep + self.file.read(max(CHUNK, size - len(keep)))
        self.start, self.pos = offset, 0
        if len(self.buf) < size:  # the file shrank while being read
            raise self._truncated(size)

    def _unpack(self, item: struct.Struct) -> Any:
        if self.pos + item.size > len(self.buf):
            self._need(item.size)
        (value,) = item.unpack_from(self.buf, self.pos)
        self.pos += item.size
        return value

    def _u32(self) -> int:
        if self.pos + 4 > len(self.buf):
            self._need(4)
        value: int
        (value,) = self.u32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return value

    def _u64(self) -> int:
        if self.pos + 8 > len(self.buf):
            self._need(8)
        value: int
        (value,) = self.u64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return value

    def _bytes(self, size: int) -> bytes:
        if self.pos + size > len(self.buf):
            self._need(size)
        data = self.buf[self.pos : self.pos + size]
        self.pos += size
        return data

    def _seek(self, offset: int) -> None:
        """Move to ``offset`` of the file: within the buffer, or past it with one seek."""
        if offset > self.size:
            raise self.fail(f"the data runs to byte {offset}, past the end of the file ({self.size} bytes)")
        if offset - self.start <= len(self.buf):
            self.pos = offset - self.start
        else:
            self.file.seek(offset)
            self.buf, self.start, self.pos = b"", offset, 0

    # -- values

    def _type(self) -> ValueType:
        at = self.offset
        raw = self._u32()
        if raw >= len(TYPES):
            raise self.fail(f"unknown value type {raw}", at)
        return TYPES[raw]

    def _name(self, kind: str) -> str:
        at = self.offset
        size = self._u64()
        if size > MAX_NAME:
            raise self.fail(f"a {kind} of {size} bytes (at most {MAX_NAME})", at)
        self._charge(OBJECT + size)
        return self._bytes(size).decode("utf-8", "replace")

    def _string(self) -> tuple[str | None, int]:
        """A string and its byte count; None when longer than MAX_STRING (skipped)."""
        size = self._u64()
        if size > self.size - self.offset:
            raise self._truncated(size)
        if size > MAX_STRING:
            self._seek(self.offset + size)
            return None, size
        self._charge(size)
        return self._bytes(size).decode("utf-8", "replace"), size

    def _array(self, depth: int) -> tuple[ValueType, int, list[Value] | None]:
        """An array's item type, count and items (None when skipped)."""
        at = self.offset
        if depth > MAX_NESTING:
            raise self.fail(f"arrays nested more than {MAX_NESTING} deep", at)
        item_type = self._type()
        count = self._u64()
        self._check_count(count, MIN_SIZES[item_type], at)
        if count > self.max_array:
            self._skip_items(item_type, count, depth)
            return item_type, count, None
        return item_type, count, self._items(item_type, count, depth)

    def _items(self, item_type: ValueType, count: int, depth: int) -> list[Value]:
        code = CODES.get(item_type)
        if code is not None:
            size = count * SIZES[item_type]
            self._charge(size + 8 * count)
            if self.pos + size > len(self.buf):
                self._need(size)
            values = list(struct.unpack_from(f"{self.order}{count}{code}", self.buf, self.pos))
            self.pos += size
            return values
        self._charge(8 * count)
        if item_type == ValueType.STRING:
            return [self._string()[0] for _ in range(count)]
        return [self._array(depth + 1)[2] for _ in range(count)]

    def _skip_items(self, item_type: ValueType, count: int, depth: int) -> None:
        size = SIZES.get(item_type)
        if size is not None:
            self._seek(self.offset + count * size)
            return
        self.walked += count
        if self.walked > MAX_WALKED:
            raise self.fail(f"more than {MAX_WALKED} strings and arrays to skip")
        if item_type == ValueType.STRING:
            self._skip_strings(count)
            return
        for _ in range(count):
            at = self.offset
            if depth + 1 > MAX_NESTING:
                raise self.fail(f"arrays nested more than {MAX_NESTING} deep", at)
            inner_type = self._type()
            inner_count = self._u64()
            self._check_count(inner_count, MIN_SIZES[inner_type], at)
            self._skip_items(inner_type, inner_count, depth + 1)

    def _skip_strings(self, count: int) -> None:
        """Walk ``count`` strings without building them: each length read with struct straight
        from the buffer, the buffer refilled (or a long string seeked over) when a walk leaves it.

        The hot loop of a big vocabulary: no bounds test per string, struct raises when the next
        length is not in the buffer (measured: a third faster than testing the position)."""
        unpack_from = self.u64.unpack_from
        while count:
            if self.pos + 8 > len(self.buf):
                self._need(8)
            buf, pos, walked = self.buf, self.pos, 0
            try:
                for walked in range(count):  # noqa: B007 (read after the loop)
                    pos += 8 + unpack_from(buf, pos)[0]
                walked = count
            except struct.error:
                pass  # the length of string ``walked`` is not (wholly) in the buffer
            count -= walked
            self._seek(self.start + pos)

    # -- the header

    def header(self, mtime_ns: int) -> GGUFHeader:
        if self.size < 4 or self._bytes(4) != MAGIC:
            raise GGUFError(self.path, 0, f"not a GGUF file (it starts with {self.buf[:4]!r}, not {MAGIC!r})")
        self.what = "the version"
        raw = self._bytes(4)
        version = int.from_bytes(raw, "little")
        if version and not version & 0xFFFF:  # a big-endian file read as little-endian
            version, self.order = int.from_bytes(raw, "big"), ">"
            self._structs()
        if version == 1:
            raise self.fail("GGUF version 1 is not supported (llama.cpp no longer reads it)", 4)
        if version not in VERSIONS:
            raise self.fail(f"unsupported GGUF version {version}", 4)
        self.what = "the counts"
        tensor_count = self._u64()
        kv_count = self._u64()
        # the fewest bytes a key-value (an empty key, a uint8) and a tensor info (a scalar) take
        self._check_count(kv_count, 13, 16)
        self._check_count(tensor_count, 24, 8)
        fields = self._fields(kv_count)
        alignment = self._alignment(fields)
        tensors = self._tensors(tensor_count)
        end = self.offset
        return GGUFHeader(
            path=self.path,
            size=self.size,
            mtime_ns=mtime_ns,
            version=version,
            byte_order="big" if self.order == ">" else "little",
            fields=fields,
            tensors=tensors,
            alignment=alignment,
            data_offset=-(-end // alignment) * alignment,
        )

    def _fields(self, count: int) -> dict[str, Field]:
        fields: dict[str, Field] = {}
        for index in range(count):
            at = self.offset
            self.what = f"key-value {index}"
            key = self._name("key")
            self.what = f"key-value {index} ({key[:80]!r})"
            if key in fields:
                raise self.fail("a duplicate key", at)
            kind = self._type()
            if kind == ValueType.ARRAY:
                item_type, length, items = self._array(1)
                fields[key] = Field(kind, items, item_type, length)
            elif kind == ValueType.STRING:
                text, size = self._string()
                fields[key] = Field(kind, text, None, size if text is None else None)
            else:
                fields[key] = Field(kind, self._unpack(self.scalars[kind]))
        return fields

    def _alignment(self, fields: dict[str, Field]) -> int:
        field = fields.get("general.alignment")
        if field is None:
            return DEFAULT_ALIGNMENT
        value = field.value
        if field.type != ValueType.UINT32 or not isinstance(value, int) or value <= 0 or value & (value - 1):
            self.what = "general.alignment"
            raise self.fail(
                f"the alignment must be a power of two (uint32), not {value!r} ({field.type.name})"
            )
        return value

    def _tensors(self, count: int) -> tuple[TensorInfo, ...]:
        tensors: list[TensorInfo] = []
        names: set[str] = set()
        for index in range(count):
            at = self.offset
            self.what = f"tensor info {index}"
            name = self._name("tensor name")
            self.what = f"tensor info {index} ({name[:80]!r})"
            if name in names:
                raise self.fail("a duplicate tensor name", at)
            names.add(name)
            dims_at = self.offset
            n_dims = self._u32()
            if n_dims > MAX_DIMS:
                raise self.fail(f"{n_dims} dimensions (at most {MAX_DIMS})", dims_at)
            shape = struct.unpack(f"{self.order}{n_dims}Q", self._bytes(8 * n_dims))
            ggml_type = self._u32()
            offset = self._u64()
            self._charge(OBJECT + 8 * n_dims)
            tensors.append(TensorInfo(name, shape, ggml_type, offset))
        return tuple(tensors)
