"""A bounded, distrustful flatbuffer reader (the FlatBuffers binary format, schema-agnostic).

The validator walks untrusted ``.tflite`` bytes with this reader instead of generated code, because
generated accessors trust every offset. Every read here is bounds-checked against the buffer
before it happens, and every failure is a :class:`~edgeward.core.errors.MalformedModelError`
naming what is wrong and where. The rules follow the FlatBuffers verifier
(``flatbuffers/verifier.h``):

* a ``uoffset_t`` (u32) is never 0, below 2**31, and points forward inside the buffer, so chains
  of offsets cannot loop;
* a table starts with an ``soffset_t`` (i32) to its vtable; the vtable (u16 size, u16 table size,
  u16 field offsets) and the table lie inside the buffer, and each present field lies inside its
  table;
* a vector or string is a u32 count followed by its elements, inside the buffer; a string ends
  with a NUL byte and is valid UTF-8.

Tables, vectors and strings are 4-byte aligned, as every FlatBuffers builder writes them.

Shared structure is legal in FlatBuffers (two tables may point at one vector), so a hostile file
could make a linear walk do quadratic work. Each read therefore spends from a work budget
proportional to the file size; a legitimate file never comes close to it.

This module does no I/O and imports nothing outside the standard library.
"""

from __future__ import annotations

import struct

from edgeward.core.errors import MalformedModelError

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")

TABLE_COST = 8
"""Work units one table visit costs; vectors cost their bytes, strings their length."""


class Reader:
    """Bounded reads over one flatbuffer. Not thread-safe; one instance per validation."""

    def __init__(self, buf: memoryview, *, max_vector_length: int, max_string_bytes: int) -> None:
        self.buf = buf
        self.size = len(buf)
        self.max_vector_length = max_vector_length
        self.max_string_bytes = max_string_bytes
        self.budget = 2 * self.size + 65536
        self.spent = 0
        self.extent = 8  # end of the furthest byte any object reaches (for trailing-data checks)

    # -- primitives ---------------------------------------------------------------------------

    def spend(self, units: int, where: str) -> None:
        self.spent += units
        if self.spent > self.budget:
            raise MalformedModelError(
                f"{where}: the flatbuffer shares structure so much that walking it would take "
                f"more than {self.budget} units of work (aliased offsets?)"
            )

    def check_range(self, pos: int, length: int, where: str) -> None:
        if pos < 0 or length < 0 or pos + length > self.size:
            raise MalformedModelError(
                f"{where}: bytes {pos}..{pos + length} lie outside the {self.size}-byte file"
            )
        end = pos + length
        if end > self.extent:
            self.extent = end

    def u8(self, pos: int, where: str) -> int:
        self.check_range(pos, 1, where)
        return int(self.buf[pos])

    def u16(self, pos: int, where: str) -> int:
        self.check_range(pos, 2, where)
        return int(_U16.unpack_from(self.buf, pos)[0])

    def u32(self, pos: int, where: str) -> int:
        self.check_range(pos, 4, where)
        return int(_U32.unpack_from(self.buf, pos)[0])

    def i32(self, pos: int, where: str) -> int:
        self.check_range(pos, 4, where)
        return int(_I32.unpack_from(self.buf, pos)[0])

    def scalar(self, fmt: struct.Struct, pos: int, where: str) -> int | float:
        self.check_range(pos, fmt.size, where)
        value: int | float = fmt.unpack_from(self.buf, pos)[0]
        return value

    def follow(self, pos: int, where: str) -> int:
        """Target of the ``uoffset_t`` stored at ``pos`` (forward, non-zero, 4-byte aligned)."""
        off = self.u32(pos, where)
        if off == 0 or off >= 1 << 31:
            raise MalformedModelError(f"{where}: invalid offset {off} at byte {pos}")
        target = pos + off
        if target >= self.size:
            raise MalformedModelError(
                f"{where}: offset at byte {pos} points to byte {target}, past the "
                f"{self.size}-byte file"
            )
        if target % 4:
            raise MalformedModelError(f"{where}: offset at byte {pos} points to unaligned {target}")
        return target

    # -- objects ------------------------------------------------------------------------------

    def table(self, pos: int, where: str) -> Table:
        """Parse and check the table header at ``pos``."""
        self.spend(TABLE_COST, where)
        if pos % 4:
            raise MalformedModelError(f"{where}: table at unaligned byte {pos}")
        vt = pos - self.i32(pos, where)
        if vt < 0 or vt % 2 or vt + 4 > self.size:
            raise MalformedModelError(f"{where}: vtable of table at byte {pos} is outside the file")
        vt_size = self.u16(vt, where)
        table_size = self.u16(vt + 2, where)
        if vt_size < 4 or vt_size % 2:
            raise MalformedModelError(f"{where}: vtable at byte {vt} has bad size {vt_size}")
        self.check_range(vt, vt_size, where)
        if table_size < 4:
            raise MalformedModelError(f"{where}: table at byte {pos} has bad size {table_size}")
        self.check_range(pos, table_size, where)
        self.spend(vt_size, where)
        return Table(self, pos, vt, (vt_size - 4) // 2, table_size, where)

    def vector(
        self, pos: int, elem_size: int, where: str, limit: int | None = None
    ) -> tuple[int, int]:
        """``(start, count)`` of the vector whose length prefix is at ``pos``.

        ``limit`` defaults to ``max_vector_length``; byte blobs (tensor data) pass the file size.
        """
        count = self.u32(pos, where)
        limit = self.max_vector_length if limit is None else limit
        if count > limit:
            raise MalformedModelError(
                f"{where}: vector length {count} exceeds the limit of {limit}"
            )
        start = pos + 4
        self.check_range(start, count * elem_size, where)
        return start, count

    def string(self, pos: int, where: str) -> str:
        count = self.u32(pos, where)
        if count > self.max_string_bytes:
            raise MalformedModelError(
                f"{where}: string of {count} bytes exceeds the limit of {self.max_string_bytes}"
            )
        start = pos + 4
        self.check_range(start, count + 1, where)
        self.spend(4 + count, where)
        if self.buf[start + count] != 0:
            raise MalformedModelError(f"{where}: string at byte {pos} is not NUL-terminated")
        try:
            return bytes(self.buf[start : start + count]).decode("utf-8", errors="strict")
        except UnicodeDecodeError as e:
            raise MalformedModelError(f"{where}: string at byte {pos} is not valid UTF-8") from e


class Table:
    """A checked table: field lookups never read outside the table or the file."""

    __slots__ = ("n_slots", "pos", "reader", "size", "vt", "where")

    def __init__(self, reader: Reader, pos: int, vt: int, n_slots: int, size: int, where: str):
        self.reader = reader
        self.pos = pos
        self.vt = vt
        self.n_slots = n_slots
        self.size = size
        self.where = where

    def field(self, slot: int, size: int, where: str | None = None) -> int | None:
        """Absolute position of field ``slot`` (``size`` bytes), or None when it is absent."""
        if slot >= self.n_slots:
            return None
        off = self.reader.u16(self.vt + 4 + 2 * slot, where or self.where)
        if off == 0:
            return None
        if off < 4 or off + size > self.size:
            raise MalformedModelError(
                f"{where or self.where}: field {slot} of table at byte {self.pos} lies outside "
                f"the table ({off}+{size} > {self.size})"
            )
        return self.pos + off

    def scalar(self, slot: int, fmt: struct.Struct, default: int | float, where: str | None = None):
        pos = self.field(slot, fmt.size, where)
        if pos is None:
            return default
        return self.reader.scalar(fmt, pos, where or self.where)

    def table(self, slot: int, where: str) -> Table | None:
        pos = self.field(slot, 4, where)
        if pos is None:
            return None
        return self.reader.table(self.reader.follow(pos, where), where)

    def string(self, slot: int, where: str) -> str | None:
        pos = self.field(slot, 4, where)
        if pos is None:
            return None
        return self.reader.string(self.reader.follow(pos, where), where)

    def vector(
        self, slot: int, elem_size: int, where: str, limit: int | None = None
    ) -> tuple[int, int] | None:
        """``(start, count)`` of a vector field; costs O(1) work (elements are not read)."""
        pos = self.field(slot, 4, where)
        if pos is None:
            return None
        self.reader.spend(4, where)
        return self.reader.vector(self.reader.follow(pos, where), elem_size, where, limit)

    def numbers(self, slot: int, fmt: str, where: str, limit: int) -> tuple[int | float, ...]:
        """All elements of a vector of scalars (``fmt`` a struct letter such as ``i`` or ``q``).

        Refuses more than ``limit`` elements: each becomes a Python object, so this bounds memory.
        """
        elem = struct.calcsize("<" + fmt)
        vec = self.vector(slot, elem, where)
        if vec is None:
            return ()
        start, count = vec
        if count > limit:
            raise MalformedModelError(f"{where}: {count} entries exceed the limit of {limit}")
        self.reader.spend(count * elem, where)
        values: tuple[int | float, ...] = struct.unpack_from(
            f"<{count}{fmt}", self.reader.buf, start
        )
        return values

    def tables(self, slot: int, where: str, limit: int) -> list[Table]:
        """All tables of a vector of tables, refusing more than ``limit`` of them."""
        vec = self.vector(slot, 4, where)
        if vec is None:
            return []
        start, count = vec
        if count > limit:
            raise MalformedModelError(f"{where}: {count} entries exceed the limit of {limit}")
        reader = self.reader
        reader.spend(4 * count, where)
        return [
            reader.table(reader.follow(start + 4 * i, f"{where} {i}"), f"{where} {i}")
            for i in range(count)
        ]
