"""Our GGUF header reader against the gguf package's (GGUFReader is the oracle), and against broken
and hostile files: every failure is a GGUFError that names the file and the offset, and comes fast."""

from __future__ import annotations

import math
import os
import struct
import time
import tracemalloc
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from llamacontroller import gguf_header
from llamacontroller.demo_model import DemoShape, write_demo_model
from llamacontroller.gguf_header import (
    CHUNK,
    MAX_ARRAY,
    MAX_STRING,
    GGUFError,
    GGUFHeader,
    ValueType,
    read_header,
)
from llamacontroller.local.real_model import real_model_path

EVERYTHING = 10**9  # a max_array that builds every array, for comparisons with the oracle

# ---------------------------------------------------------------------------------------------
# the real model


def real_model_file() -> Path:
    """SmolLM2-135M-Instruct Q4_1 (98 MB, a 49k-token vocabulary), fetched once into the cache."""
    return real_model_path()


# ---------------------------------------------------------------------------------------------
# the oracle


def flat(value: Any) -> Any:
    """GGUFReader flattens arrays of arrays into one list of their items."""
    if not isinstance(value, list) or not any(isinstance(item, list) for item in value):
        return value
    return [leaf for item in value for leaf in (flat(item) if isinstance(item, list) else [item])]


def assert_same_as_gguf(path: Path, max_array: int = EVERYTHING) -> GGUFHeader:
    """Our header equals GGUFReader's reading: keys in order, types, values (exactly, types
    included, through repr), array lengths, tensor infos, alignment and data offset."""
    ours = read_header(path, max_array)
    reader = gguf.GGUFReader(path)
    fields = {name: f for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    assert list(ours.fields) == list(fields)
    assert ours.version == reader.fields["GGUF.version"].contents()
    for key, theirs in fields.items():
        field = ours.fields[key]
        assert field.type == theirs.types[0], key
        if field.type != ValueType.ARRAY:
            assert repr(field.value) == repr(theirs.contents()), key
            continue
        assert field.length == int(theirs.parts[4][0]), key  # the count after the item type
        if len(theirs.types) > 1:
            assert field.item_type == theirs.types[1], key
        if field.length > max_array:
            assert field.value is None, key
        elif None not in flat(field.value):  # inner arrays longer than max_array are None
            assert repr(flat(field.value)) == repr(theirs.contents()), key
    assert [(t.name, t.shape, t.ggml_type, ours.data_offset + t.offset) for t in ours.tensors] == [
        (t.name, tuple(int(d) for d in t.field.parts[3]), int(t.tensor_type), t.data_offset)
        for t in reader.tensors
    ]
    assert [t.nbytes for t in ours.tensors] == [int(t.n_bytes) for t in reader.tensors]
    assert ours.alignment == reader.alignment
    assert ours.data_offset == reader.data_offset
    assert ours.size == path.stat().st_size
    return ours


# ---------------------------------------------------------------------------------------------
# files written by GGUFWriter

SCALARS: list[tuple[str, Any, gguf.GGUFValueType]] = [
    ("t.uint8", 255, gguf.GGUFValueType.UINT8),
    ("t.int8", -128, gguf.GGUFValueType.INT8),
    ("t.uint16", 65535, gguf.GGUFValueType.UINT16),
    ("t.int16", -32768, gguf.GGUFValueType.INT16),
    ("t.uint32", 2**32 - 1, gguf.GGUFValueType.UINT32),
    ("t.int32", -(2**31), gguf.GGUFValueType.INT32),
    ("t.float32", 0.1, gguf.GGUFValueType.FLOAT32),
    ("t.float32_inf", -math.inf, gguf.GGUFValueType.FLOAT32),
    ("t.bool_true", True, gguf.GGUFValueType.BOOL),
    ("t.bool_false", False, gguf.GGUFValueType.BOOL),
    ("t.string", "héllo ✓ 日本", gguf.GGUFValueType.STRING),
    ("t.empty_string", "", gguf.GGUFValueType.STRING),
    ("t.uint64", 2**64 - 1, gguf.GGUFValueType.UINT64),
    ("t.int64", -(2**63), gguf.GGUFValueType.INT64),
    ("t.float64", math.pi, gguf.GGUFValueType.FLOAT64),
]
FIXED = list(dict.fromkeys(kind for _, _, kind in SCALARS if kind != gguf.GGUFValueType.STRING))


def sample(kind: gguf.GGUFValueType, index: int) -> Any:
    if kind == gguf.GGUFValueType.BOOL:
        return index % 3 == 0
    if kind in (gguf.GGUFValueType.FLOAT32, gguf.GGUFValueType.FLOAT64):
        return index / 7 - 3
    if kind in (gguf.GGUFValueType.INT8, gguf.GGUFValueType.INT16, gguf.GGUFValueType.INT32):
        return (-1) ** index * (index % 100)
    if kind == gguf.GGUFValueType.INT64:
        return -(2**40) * index
    return index % 200


def add_typed_array(writer: gguf.GGUFWriter, key: str, kind: gguf.GGUFValueType, count: int) -> None:
    writer.add_key_value(key, [sample(kind, i) for i in range(count)], gguf.GGUFValueType.ARRAY, kind)


def add_everything(writer: gguf.GGUFWriter, long: int, vocab: int, long_string: int) -> None:
    """Every value type as a scalar, short and long (``long`` items) arrays of each, string arrays
    (a long one of ``vocab`` strings, one of them ``long_string`` bytes long), arrays of arrays."""
    for key, value, kind in SCALARS:
        writer.add_key_value(key, value, kind)
    for kind in FIXED:
        name = kind.name.lower()
        add_typed_array(writer, f"a.{name}.short", kind, 5)
        add_typed_array(writer, f"a.{name}.max", kind, MAX_ARRAY)
        add_typed_array(writer, f"a.{name}.long", kind, long)
    writer.add_array("a.strings.short", ["", "a", "ünï", "x" * 300])
    writer.add_array("a.strings.max", [f"s{i}" for i in range(MAX_ARRAY)])
    tokens = [f"tok{i}" * (1 + i % 5) for i in range(vocab)]
    if long_string:
        tokens[len(tokens) // 2] = "L" * long_string  # crosses the reader's buffer
    writer.add_array("a.strings.long", tokens)
    writer.add_array("a.nested.short", [[1, 2], [3, 4, 5], [6]])
    writer.add_array("a.nested.strings", [["a", "b"], ["c"]])
    writer.add_array("a.nested.deep", [[[1, 2], [3]], [[4]]])
    writer.add_array("a.nested.long_outer", [[i, i + 1] for i in range(100)])
    writer.add_array("a.nested.long_inner", [list(range(100)), [1]])
    writer.add_array("a.nested.long_strings", [[f"w{i}" for i in range(3)] for _ in range(80)])


def add_tensors(writer: gguf.GGUFWriter) -> None:
    """Tensors of several ggml types and 1 to 4 dimensions, odd sizes (padding between them)."""
    rng = np.random.default_rng(0)
    writer.add_tensor("t.f32.1d", rng.standard_normal(7).astype(np.float32))
    writer.add_tensor("t.f16.2d", rng.standard_normal((3, 5)).astype(np.float16))
    writer.add_tensor("t.i8.3d", np.arange(2 * 3 * 5, dtype=np.int8).reshape(2, 3, 5))
    writer.add_tensor("t.i32.4d", np.arange(2 * 1 * 3 * 2, dtype=np.int32).reshape(2, 1, 3, 2))
    writer.add_tensor("t.f64.1d", np.arange(3, dtype=np.float64))
    writer.add_tensor("t.i16.2d", np.arange(6, dtype=np.int16).reshape(2, 3))
    # quantized: bytes, the shape derived by the writer (Q8_0: 34 bytes per 32 values)
    q8 = rng.integers(0, 255, size=(2, 34 * 2), dtype=np.uint8)
    writer.add_tensor("t.q8_0", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    q4 = rng.integers(0, 255, size=(3, 18), dtype=np.uint8)
    writer.add_tensor("t.q4_0", q4, raw_dtype=gguf.GGMLQuantizationType.Q4_0)


def write(
    path: Path,
    *,
    alignment: int | None = None,
    endianess: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE,
    long: int = 1000,
    vocab: int = 1000,
    long_string: int = 0,
    tensors: bool = True,
) -> Path:
    writer = gguf.GGUFWriter(path, "llama", endianess=endianess)
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    add_everything(writer, long, vocab, long_string)
    if tensors:
        add_tensors(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("alignment", [None, 1, 64, 4096])
def test_every_type_and_tensor_as_gguf_reads_them(tmp_path: Path, alignment: int | None):
    path = write(tmp_path / "all.gguf", alignment=alignment)
    ours = assert_same_as_gguf(path)
    assert ours.alignment == (alignment or 32)
    assert ours.data_offset % ours.alignment == 0
    assert len(ours.tensors) == 8
    shapes = {t.name: t.shape for t in ours.tensors}
    assert shapes["t.i32.4d"] == (2, 3, 1, 2)  # ggml's order: numpy's reversed
    assert shapes["t.q8_0"] == (64, 2)
    types = {t.name: t.ggml_type for t in ours.tensors}
    assert types["t.q4_0"] == gguf.GGMLQuantizationType.Q4_0 == 2


def test_long_arrays_are_skipped_with_their_length(tmp_path: Path):
    path = write(tmp_path / "all.gguf")
    header = assert_same_as_gguf(path, MAX_ARRAY)  # the default bound, as the API uses it
    kv = header.kv
    for kind in FIXED:
        name = kind.name.lower()
        assert kv[f"a.{name}.long"] is None
        assert header.array_length(f"a.{name}.long") == 1000
        assert len(kv[f"a.{name}.max"]) == MAX_ARRAY  # 64 items are built, 65 would not be
    assert kv["a.strings.long"] is None and header.array_length("a.strings.long") == 1000
    assert kv["a.strings.short"] == ["", "a", "ünï", "x" * 300]
    assert kv["a.nested.short"] == [[1, 2], [3, 4, 5], [6]]  # nested, as in the file
    assert kv["a.nested.deep"] == [[[1, 2], [3]], [[4]]]
    assert kv["a.nested.long_outer"] is None and header.array_length("a.nested.long_outer") == 100
    assert kv["a.nested.long_inner"] == [None, [1]]
    assert kv["a.nested.long_strings"] is None
    assert kv["t.float32"] == struct.unpack("<f", struct.pack("<f", 0.1))[0]
    assert header.fields["a.strings.long"].item_type == ValueType.STRING
    assert header.array_length("t.uint8") is None  # not an array


def test_a_vocabulary_across_many_buffers_and_a_string_longer_than_one(tmp_path: Path):
    path = write(tmp_path / "vocab.gguf", vocab=30_000, long_string=3 * CHUNK, tensors=False)
    assert path.stat().st_size > 4 * CHUNK
    assert_same_as_gguf(path)  # every array built and compared
    header = assert_same_as_gguf(path, MAX_ARRAY)  # the long ones walked and skipped
    assert header.array_length("a.strings.long") == 30_000
    assert header.kv["t.float64"] == math.pi  # what follows the skipped arrays is read right


def test_a_big_endian_file(tmp_path: Path):
    path = write(tmp_path / "be.gguf", endianess=gguf.GGUFEndian.BIG)
    header = assert_same_as_gguf(path)
    assert header.byte_order == "big"
    assert header.kv["t.uint64"] == 2**64 - 1


def test_ggml_types_are_the_gguf_packages():
    assert {
        gguf.GGMLQuantizationType(number): (kind.block_size, kind.type_size)
        for number, kind in gguf_header.GGML_TYPES.items()
    } == gguf.GGML_QUANT_SIZES
    assert all(gguf.GGMLQuantizationType(n).name == kind.name for n, kind in gguf_header.GGML_TYPES.items())


@pytest.mark.parametrize("weight_type", ["F16", "Q8_0", "Q4_0", "Q4_1", "Q5_0"])
def test_tensor_sizes_of_quantized_files_come_from_the_header(tmp_path: Path, weight_type: str):
    path = write_demo_model(tmp_path / "q.gguf", shape=DemoShape(weight_type=weight_type))
    header = assert_same_as_gguf(path)
    matrices = [t for t in header.tensors if len(t.shape) == 2]
    assert {t.type_name for t in matrices} == {weight_type}
    last = max(header.tensors, key=lambda t: t.offset)
    end = header.data_offset + last.offset + (last.nbytes or 0)
    assert -(-end // header.alignment) * header.alignment == header.size  # the last data ends the file


def test_an_unknown_tensor_type_has_no_size():
    info = gguf_header.TensorInfo("x", (64, 2), 99, 0)
    assert (info.nbytes, info.type_name) == (None, "type 99")


def test_the_real_model_as_gguf_reads_it():
    path = real_model_file()
    header = assert_same_as_gguf(path)  # the whole vocabulary and merges built and compared
    assert header.vocab_size == 49152 == header.kv["llama.vocab_size"]
    assert header.kv["general.architecture"] == "llama"
    assert header.kv["general.file_type"] == 3  # Q4_1
    assert len(header.tensors) == 272
    skipped = read_header(path)
    assert skipped.kv["tokenizer.ggml.tokens"] is None
    assert skipped.kv["tokenizer.ggml.merges"] is None
    assert skipped.array_length("tokenizer.ggml.merges") == 48900
    assert skipped.tensors == header.tensors and skipped.data_offset == header.data_offset


# ---------------------------------------------------------------------------------------------
# broken and hostile files, crafted byte by byte


def u32(value: int) -> bytes:
    return struct.pack("<I", value)


def u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def text(value: str) -> bytes:
    data = value.encode()
    return u64(len(data)) + data


def kv(key: str, kind: int, payload: bytes) -> bytes:
    return text(key) + u32(kind) + payload


def array(item_type: int, count: int, items: bytes = b"") -> bytes:
    return u32(item_type) + u64(count) + items


def tensor(name: str, dims: tuple[int, ...], ggml_type: int = 0, offset: int = 0) -> bytes:
    return text(name) + u32(len(dims)) + b"".join(map(u64, dims)) + u32(ggml_type) + u64(offset)


def gguf_file(
    kvs: list[bytes] = (),  # type: ignore[assignment]
    tensors: list[bytes] = (),  # type: ignore[assignment]
    version: int = 3,
    kv_count: int | None = None,
    tensor_count: int | None = None,
) -> bytes:
    kv_count = len(kvs) if kv_count is None else kv_count
    tensor_count = len(tensors) if tensor_count is None else tensor_count
    return b"GGUF" + u32(version) + u64(tensor_count) + u64(kv_count) + b"".join(kvs) + b"".join(tensors)


STRING, ARRAY, UINT8, UINT32, UINT64 = 8, 9, 0, 4, 10
HUGE = 2**62

HOSTILE: dict[str, tuple[bytes, str]] = {
    "empty file": (b"", "not a GGUF file"),
    "three bytes": (b"GGU", "not a GGUF file"),
    "bad magic": (b"GGML" + bytes(40), "not a GGUF file"),
    "version 1": (gguf_file(version=1), "version 1 is not supported"),
    "version 4": (gguf_file(version=4), "unsupported GGUF version 4"),
    "version 0": (gguf_file(version=0), "unsupported GGUF version 0"),
    "huge key-value count": (gguf_file(kv_count=2**63), "do not fit"),
    "huge tensor count": (gguf_file(tensor_count=2**64 - 1), "do not fit"),
    "huge key length": (gguf_file([u64(HUGE) + b"key" + bytes(20)]), "a key of"),
    "key longer than the file": (gguf_file([u64(100) + b"key" + bytes(20)]), "truncated"),
    "huge string length": (gguf_file([text("k") + u32(STRING) + u64(HUGE) + b"abc"]), "truncated"),
    "huge uint8 array": (gguf_file([kv("k", ARRAY, array(UINT8, HUGE))]), "do not fit"),
    "huge string array": (gguf_file([kv("k", ARRAY, array(STRING, HUGE))]), "do not fit"),
    "huge array of arrays": (gguf_file([kv("k", ARRAY, array(ARRAY, HUGE))]), "do not fit"),
    "huge inner array": (
        gguf_file([kv("k", ARRAY, array(ARRAY, 1, array(UINT64, HUGE)))]),
        "do not fit",
    ),
    "huge inner array of a long array": (
        gguf_file([kv("k", ARRAY, array(ARRAY, 100, array(UINT8, 0) * 99 + array(STRING, HUGE)))]),
        "do not fit",
    ),
    "a huge string inside a long array": (
        gguf_file([kv("k", ARRAY, array(STRING, 100, text("ok") * 70 + u64(HUGE) + bytes(300)))]),
        "past the end of the file",
    ),
    "a long string array cut short": (
        gguf_file([kv("k", ARRAY, array(STRING, 100, text("abcdefgh") * 70))]),
        "truncated",
    ),
    "unknown value type": (gguf_file([kv("k", 13, bytes(8))]), "unknown value type 13"),
    "unknown item type": (gguf_file([kv("k", ARRAY, array(99, 1, bytes(8)))]), "unknown value type 99"),
    "arrays nested too deep": (
        gguf_file([kv("k", ARRAY, array(ARRAY, 1) * 9 + array(UINT8, 0))]),
        "nested more than 8 deep",
    ),
    "duplicate key": (gguf_file([kv("k", UINT8, b"\1"), kv("k", UINT8, b"\2")]), "duplicate key"),
    "alignment zero": (gguf_file([kv("general.alignment", UINT32, u32(0))]), "power of two"),
    "alignment three": (gguf_file([kv("general.alignment", UINT32, u32(3))]), "power of two"),
    "alignment of another type": (gguf_file([kv("general.alignment", UINT64, u64(32))]), "power of two"),
    "five dimensions": (gguf_file(tensors=[tensor("t", (1, 1, 1, 1, 1))]), "5 dimensions"),
    "huge dimension count": (gguf_file(tensors=[text("t") + u32(2**32 - 1) + bytes(40)]), "dimensions"),
    "huge tensor name": (gguf_file(tensors=[u64(HUGE) + bytes(40)]), "a tensor name of"),
    "duplicate tensor": (gguf_file(tensors=[tensor("t", (2,)), tensor("t", (2,))]), "duplicate tensor"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_broken_and_hostile_files_raise_our_error_fast_and_small(tmp_path: Path, name: str):
    data, reason = HOSTILE[name]
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(GGUFError) as caught:
            read_header(path)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    error = caught.value
    assert isinstance(error, ValueError)
    assert reason in str(error)
    assert str(path) in str(error) and f"at byte {error.offset}" in str(error)
    assert 0 <= error.offset <= len(data)
    assert elapsed < 0.5
    assert peak < 2 * CHUNK + (1 << 20)  # nothing allocated for the hostile sizes


def write_small(path: Path) -> Path:
    """A few kilobytes with every kind of value: each scalar type, short arrays, long ones of
    fixed-size items, of strings and of arrays, nested short ones, and tensor infos."""
    writer = gguf.GGUFWriter(path, "llama")
    for key, value, kind in SCALARS:
        writer.add_key_value(key, value, kind)
    for kind in FIXED:
        add_typed_array(writer, f"a.{kind.name.lower()}", kind, 3)
    add_typed_array(writer, "a.long.uint16", gguf.GGUFValueType.UINT16, MAX_ARRAY + 1)
    writer.add_array("a.long.strings", [f"t{i}" for i in range(MAX_ARRAY + 1)])
    writer.add_array("a.long.nested", [list(range(1 + i % 3)) for i in range(MAX_ARRAY + 1)])
    writer.add_array("a.strings", ["a", "bc"])
    writer.add_array("a.nested", [[[1, 2]], [[3]]])
    add_tensors(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_every_prefix_of_a_file_is_refused_until_the_header_is_whole(tmp_path: Path):
    """Truncated anywhere in the header (long arrays and nested ones included): our error, at an
    offset inside the prefix; from the end of the tensor infos on, the header reads whole."""
    path = write_small(tmp_path / "small.gguf")
    whole = assert_same_as_gguf(path, MAX_ARRAY)
    reader = gguf.GGUFReader(path)
    last = reader.tensors[-1].field
    header_end = last.offset + sum(int(part.nbytes) for part in last.parts)
    assert header_end < path.stat().st_size < 8_000
    started = time.perf_counter()
    for size in reversed(range(header_end + 40)):
        os.truncate(path, size)
        if size < header_end:
            with pytest.raises(GGUFError) as caught:
                read_header(path)
            assert 0 <= caught.value.offset <= size, (size, str(caught.value))
        else:
            header = read_header(path)
            assert (header.fields, header.tensors, header.data_offset) == (
                whole.fields,
                whole.tensors,
                whole.data_offset,
            )
    assert time.perf_counter() - started < 60


def test_prefixes_of_a_vocabulary_file_are_refused(tmp_path: Path):
    """Cut inside a long string array that spans several buffers, and inside a long string."""
    path = write(tmp_path / "vocab.gguf", vocab=30_000, long_string=3 * CHUNK, tensors=False)
    data = path.read_bytes()
    header_end = len(data) - 1  # no tensors: the last key-value ends the header
    while data[header_end - 1 : header_end] == b"\0" and header_end > len(data) - 64:
        header_end -= 1  # GGUFWriter pads after the key-values
    cut = tmp_path / "cut.gguf"
    rng = np.random.default_rng(1)
    for size in sorted({*rng.integers(0, header_end - 64, 150).tolist(), CHUNK, CHUNK + 3, 2 * CHUNK}):
        cut.write_bytes(data[:size])
        with pytest.raises(GGUFError) as caught:
            read_header(cut)
        assert 0 <= caught.value.offset <= size


def test_a_file_that_does_not_exist_is_an_os_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        read_header(tmp_path / "missing.gguf")
    with pytest.raises(IsADirectoryError):
        read_header(tmp_path)


def test_a_string_too_long_to_build_is_skipped_with_its_length(tmp_path: Path):
    path = tmp_path / "long.gguf"
    long = u64(MAX_STRING + 1) + b"x" * (MAX_STRING + 1)
    path.write_bytes(gguf_file([text("k.long") + u32(STRING) + long, kv("k.after", UINT32, u32(7))]))
    header = read_header(path)
    assert header.kv == {"k.long": None, "k.after": 7}
    assert header.fields["k.long"].length == MAX_STRING + 1


def test_what_one_header_builds_and_walks_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The bounds at a small scale (the real ones take files of hundreds of megabytes)."""
    path = tmp_path / "many.gguf"
    strings = [kv(f"k{i}", STRING, text("s" * 1000)) for i in range(40)]
    path.write_bytes(gguf_file([*strings, kv("k.tokens", ARRAY, array(STRING, 5000, text("t") * 5000))]))
    assert read_header(path).array_length("k.tokens") == 5000
    monkeypatch.setattr(gguf_header, "MAX_BUILT", 30_000)
    with pytest.raises(GGUFError, match="values exceed 30000 bytes"):
        read_header(path)
    monkeypatch.setattr(gguf_header, "MAX_BUILT", 1 << 20)
    monkeypatch.setattr(gguf_header, "MAX_WALKED", 4999)
    with pytest.raises(GGUFError, match="more than 4999 strings"):
        read_header(path)
