"""Just enough of Thrift's compact protocol to move a Parquet row group: decode a footer, shift its offsets, encode it.

pyarrow writes a Parquet file in one go and cannot append to one (its writer refuses a sink that does not start at
offset 0). A scan that must survive a kill appends row groups to one file: each new row group is written by pyarrow
into memory as a file of its own, its bytes are placed after the file's last row group, and the offsets in its
footer (which count from the start of that small file) are shifted to where the bytes now lie. The footer is then
merged with the file's by pyarrow (`FileMetaData.append_row_groups`). Every field is kept as read: this codec never
needs to know the Parquet schema beyond the few offset fields it shifts.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Compact protocol types.
TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(1, 13)


@dataclass
class Field:
    id: int
    type: int
    value: object


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        value = self.data[self.pos]
        self.pos += 1
        return value

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def value(self, kind: int) -> object:
        if kind in (TRUE, FALSE):  # inside a container a bool is a byte of its own
            return self.byte() == TRUE
        if kind == BYTE:
            return struct.unpack("b", bytes([self.byte()]))[0]
        if kind in (I16, I32, I64):
            return self.zigzag()
        if kind == DOUBLE:
            (value,) = struct.unpack_from("<d", self.data, self.pos)
            self.pos += 8
            return value
        if kind == BINARY:
            size = self.varint()
            value = self.data[self.pos : self.pos + size]
            self.pos += size
            return value
        if kind in (LIST, SET):
            header = self.byte()
            size, element = header >> 4, header & 0x0F
            if size == 15:
                size = self.varint()
            return (element, [self.value(element) for _ in range(size)])
        if kind == MAP:
            size = self.varint()
            if size == 0:
                return (0, 0, [])
            types = self.byte()
            key, val = types >> 4, types & 0x0F
            return (key, val, [(self.value(key), self.value(val)) for _ in range(size)])
        if kind == STRUCT:
            return self.struct()
        raise ValueError(f"unknown thrift compact type {kind}")

    def struct(self) -> list[Field]:
        fields: list[Field] = []
        last = 0
        while True:
            header = self.byte()
            if header == 0:
                return fields
            delta, kind = header >> 4, header & 0x0F
            field_id = last + delta if delta else self.zigzag()
            if kind in (TRUE, FALSE):
                fields.append(Field(field_id, kind, kind == TRUE))
            else:
                fields.append(Field(field_id, kind, self.value(kind)))
            last = field_id


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()

    def varint(self, n: int) -> None:
        while True:
            if n < 0x80:
                self.out.append(n)
                return
            self.out.append((n & 0x7F) | 0x80)
            n >>= 7

    def zigzag(self, n: int) -> None:
        self.varint((n << 1) ^ (n >> 63))

    def value(self, kind: int, value: object) -> None:
        if kind in (TRUE, FALSE):
            self.out.append(TRUE if value else FALSE)
        elif kind == BYTE:
            self.out += struct.pack("b", value)
        elif kind in (I16, I32, I64):
            self.zigzag(value)
        elif kind == DOUBLE:
            self.out += struct.pack("<d", value)
        elif kind == BINARY:
            self.varint(len(value))
            self.out += value
        elif kind in (LIST, SET):
            element, items = value
            if len(items) < 15:
                self.out.append((len(items) << 4) | element)
            else:
                self.out.append(0xF0 | element)
                self.varint(len(items))
            for item in items:
                self.value(element, item)
        elif kind == MAP:
            key, val, items = value
            self.varint(len(items))
            if items:
                self.out.append((key << 4) | val)
                for k, v in items:
                    self.value(key, k)
                    self.value(val, v)
        elif kind == STRUCT:
            self.struct(value)
        else:
            raise ValueError(f"unknown thrift compact type {kind}")

    def struct(self, fields: list[Field]) -> None:
        last = 0
        for field in fields:
            kind = (TRUE if field.value else FALSE) if field.type in (TRUE, FALSE) else field.type
            delta = field.id - last
            if 0 < delta <= 15:
                self.out.append((delta << 4) | kind)
            else:
                self.out.append(kind)
                self.zigzag(field.id)
            if kind not in (TRUE, FALSE):
                self.value(kind, field.value)
            last = field.id
        self.out.append(0)


def decode(data: bytes) -> list[Field]:
    return _Reader(data).struct()


def encode(fields: list[Field]) -> bytes:
    writer = _Writer()
    writer.struct(fields)
    return bytes(writer.out)


def _get(fields: list[Field], field_id: int) -> Field | None:
    return next((f for f in fields if f.id == field_id), None)


def _shift(fields: list[Field], ids: tuple[int, ...], by: int) -> None:
    for field in fields:
        if field.id in ids and field.type == I64:
            field.value += by


# Parquet's FileMetaData: 4 row_groups; RowGroup: 1 columns, 5 file_offset, 7 ordinal; ColumnChunk: 2 file_offset,
# 3 meta_data, 4 offset_index_offset, 6 column_index_offset; ColumnMetaData: 9 data_page_offset, 10 index_page_offset,
# 11 dictionary_page_offset, 14 bloom_filter_offset.
def shift_footer(footer: bytes, by: int, first_ordinal: int) -> bytes:
    """A Parquet footer (FileMetaData) with every byte offset moved `by` bytes and row groups numbered from
    `first_ordinal`."""
    meta = decode(footer)
    groups = _get(meta, 4)
    for number, group in enumerate(groups.value[1] if groups else []):
        _shift(group, (5,), by)
        ordinal = _get(group, 7)
        if ordinal is not None:
            ordinal.value = first_ordinal + number
        for chunk in _get(group, 1).value[1]:
            _shift(chunk, (2, 4, 6), by)
            column = _get(chunk, 3)
            if column is not None:
                _shift(column.value, (9, 10, 11, 14), by)
    return encode(meta)
