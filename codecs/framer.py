"""Cut a byte stream into whole SMPP PDU frames.

``Framer.feed(data)`` takes whatever the transport delivered (a partial PDU, many
PDUs, or both) and returns every whole frame now available, header included, ready
for :func:`smppcodecs.pdu.decode`. The 4-octet command_length is checked as soon as
it is in: a length below 16 or above ``max_command_length`` raises
:class:`~smppcodecs.exceptions.InvalidCommandLength` (``in_sync=False``) before a
single octet of the announced body is kept, so a hostile peer cannot make the framer
buffer more than ``max_command_length`` octets. After that error the stream cannot
be re-synchronised: the framer drops what it holds and raises the same error again
on every later ``feed``; the session answers generic_nack and closes. The error
carries the header's command_id and sequence_number only for a length above the
maximum (the rest of the header is then read as sent); for a length below 16 they
are None, since by its own length nothing after it belongs to the PDU.
"""

from __future__ import annotations

import struct
from typing import Final, NoReturn

from .constants import HEADER_LENGTH
from .exceptions import InvalidCommandLength

__all__ = ["DEFAULT_MAX_COMMAND_LENGTH", "Framer"]

# A data_sm can carry a 64 KiB message_payload; leave room for the rest of the PDU.
DEFAULT_MAX_COMMAND_LENGTH: Final = 65536 + 1024

_U32 = struct.Struct(">I")
_U32x3 = struct.Struct(">III")


class Framer:
    """Incremental SMPP framer (sans I/O)."""

    __slots__ = ("_buf", "_error", "max_command_length")

    def __init__(self, max_command_length: int = DEFAULT_MAX_COMMAND_LENGTH) -> None:
        if max_command_length < HEADER_LENGTH:
            raise ValueError(f"max_command_length must be at least {HEADER_LENGTH}")
        self.max_command_length = max_command_length
        self._buf = bytearray()
        self._error: InvalidCommandLength | None = None

    @property
    def pending(self) -> int:
        """Octets buffered towards the next frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add received octets; return every whole PDU frame now available."""
        if self._error is not None:
            e = self._error
            raise InvalidCommandLength(
                e.message, command_id=e.command_id, sequence_number=e.sequence_number
            )
        buf = self._buf
        if buf:
            have = len(buf)
            if have < 4 and have + len(data) >= 4:
                # Check the length before the new octets are kept.
                head = bytes(buf) + bytes(data[: 4 - have])
                (length,) = _U32.unpack_from(head)
                if length < HEADER_LENGTH or length > self.max_command_length:
                    self._fail(head, 0, 4, length)
            buf += data
            src: bytes | bytearray = buf
        else:
            src = data if type(data) is bytes else bytes(data)
        n = len(src)
        frames: list[bytes] = []
        pos = 0
        maximum = self.max_command_length
        unpack = _U32.unpack_from
        while n - pos >= 4:
            (length,) = unpack(src, pos)
            if length < HEADER_LENGTH or length > maximum:
                self._fail(src, pos, n, length)
            end = pos + length
            if end > n:
                break
            frames.append(bytes(src[pos:end]))
            pos = end
        if src is buf:
            if pos:
                del buf[:pos]  # bytearray drops a prefix without moving the rest
        elif pos < n:
            buf += src[pos:]
        return frames

    def _fail(self, src: bytes | bytearray, pos: int, n: int, length: int) -> NoReturn:
        command_id = sequence_number = None
        # A length below the header's says the next octets are not part of this PDU:
        # they are not its command_id or sequence_number (None: not readable).
        if length < HEADER_LENGTH:
            pass
        elif n - pos >= 16:
            command_id, _, sequence_number = _U32x3.unpack_from(src, pos + 4)
        elif n - pos >= 8:
            (command_id,) = _U32.unpack_from(src, pos + 4)
        if length < HEADER_LENGTH:
            why = f"command_length {length} is below the {HEADER_LENGTH}-octet header"
        else:
            why = f"command_length {length} exceeds the maximum of {self.max_command_length}"
        self._buf = bytearray()
        self._error = InvalidCommandLength(
            why, command_id=command_id, sequence_number=sequence_number
        )
        raise self._error
