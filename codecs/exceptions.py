"""Typed decode errors of the SMPP codec.

Every error raised while decoding bytes is a :class:`PduError`. It tells the session
layer what to answer (``command_status``, an ``ESME_*`` code), to which PDU (the
``command_id`` and ``sequence_number`` when the header was readable), and whether the
byte stream is still framed correctly (``in_sync``):

* ``in_sync=True``: the PDU was cut out of the stream correctly, only its content is
  bad. The session answers (the matching ``*_resp`` with ``command_status``, or a
  ``generic_nack`` for an unknown command id) and carries on.
* ``in_sync=False``: the framing is lost (a ``command_length`` that cannot be right).
  The session answers ``generic_nack`` and closes the connection.

Encoding never raises these: it raises ``ValueError``/``TypeError`` naming the field.
"""

from __future__ import annotations

from typing import Final

from .constants import CommandStatus, status_name

__all__ = [
    "FIELD_STATUS",
    "FieldError",
    "InvalidCommandId",
    "InvalidCommandLength",
    "PduError",
    "TlvError",
    "field_status",
]


class PduError(Exception):
    """A PDU (or the stream carrying it) could not be decoded.

    Attributes:
        command_status: the ``ESME_*`` status the session layer should answer with.
        command_id: the PDU's command_id, or None when the header was not readable.
        sequence_number: the PDU's sequence_number, or None when not readable.
        in_sync: True when the stream is still framed correctly (answer and continue),
            False when framing is lost (answer generic_nack and close).
        field: the name of the offending field or TLV, when one is to blame.
    """

    default_status: int = CommandStatus.ESME_RSYSERR
    default_in_sync: bool = True

    def __init__(
        self,
        message: str,
        *,
        command_status: int | None = None,
        command_id: int | None = None,
        sequence_number: int | None = None,
        in_sync: bool | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.command_status: int = self.default_status if command_status is None else command_status
        self.command_id = command_id
        self.sequence_number = sequence_number
        self.in_sync: bool = self.default_in_sync if in_sync is None else in_sync
        self.field = field

    def __str__(self) -> str:
        where = []
        if self.command_id is not None:
            where.append(f"command_id=0x{self.command_id:08X}")
        if self.sequence_number is not None:
            where.append(f"sequence_number={self.sequence_number}")
        suffix = f" [{', '.join(where)}]" if where else ""
        return f"{self.message} ({status_name(self.command_status)}){suffix}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, "
            f"command_status=0x{self.command_status:08X}, command_id={self.command_id!r}, "
            f"sequence_number={self.sequence_number!r}, in_sync={self.in_sync!r}, "
            f"field={self.field!r})"
        )


class InvalidCommandLength(PduError):
    """``command_length`` is below 16, above the limit, or disagrees with the frame.

    Framing is lost, so ``in_sync`` is False: answer generic_nack and close.
    """

    default_status = CommandStatus.ESME_RINVCMDLEN
    default_in_sync = False


class InvalidCommandId(PduError):
    """The command_id is not an SMPP 3.4 command. The frame itself is sound
    (``in_sync=True``): answer generic_nack with ESME_RINVCMDID and carry on."""

    default_status = CommandStatus.ESME_RINVCMDID
    default_in_sync = True


# The status a session answers when a mandatory field is malformed: a C-octet string
# without its NUL, a value over the field's maximum length, or a body that ends early.
FIELD_STATUS: Final[dict[str, int]] = {
    "source_addr": CommandStatus.ESME_RINVSRCADR,
    "destination_addr": CommandStatus.ESME_RINVDSTADR,
    "system_id": CommandStatus.ESME_RINVSYSID,
    "password": CommandStatus.ESME_RINVPASWD,
    "system_type": CommandStatus.ESME_RINVSYSTYP,
    "service_type": CommandStatus.ESME_RINVSERTYP,
    "schedule_delivery_time": CommandStatus.ESME_RINVSCHED,
    "validity_period": CommandStatus.ESME_RINVEXPIRY,
    "message_id": CommandStatus.ESME_RINVMSGID,
    "short_message": CommandStatus.ESME_RINVMSGLEN,
    "sm_length": CommandStatus.ESME_RINVMSGLEN,
    "number_of_dests": CommandStatus.ESME_RINVNUMDESTS,
    "dest_flag": CommandStatus.ESME_RINVDESTFLAG,
    "dl_name": CommandStatus.ESME_RINVDLNAME,
}


def field_status(field: str) -> int:
    """The answer status for a malformed mandatory field (ESME_RINVCMDLEN by default)."""
    return FIELD_STATUS.get(field, CommandStatus.ESME_RINVCMDLEN)


class FieldError(PduError):
    """A mandatory body field is malformed: a missing NUL terminator, a value over its
    maximum length, or a body truncated before the field. ``command_status`` follows
    the field (see :data:`FIELD_STATUS`); the frame is sound (``in_sync=True``)."""

    default_status = CommandStatus.ESME_RINVCMDLEN
    default_in_sync = True

    def __init__(
        self,
        message: str,
        *,
        field: str,
        command_status: int | None = None,
        command_id: int | None = None,
        sequence_number: int | None = None,
        in_sync: bool | None = None,
    ) -> None:
        super().__init__(
            message,
            command_status=field_status(field) if command_status is None else command_status,
            command_id=command_id,
            sequence_number=sequence_number,
            in_sync=in_sync,
            field=field,
        )


class TlvError(PduError):
    """The optional part is malformed.

    ESME_RINVOPTPARSTREAM: a TLV header or value overruns the PDU body, or a tag
    repeats; ESME_RINVPARLEN: a known TLV has a length its type does not allow;
    ESME_RINVOPTPARAMVAL: a known TLV's value is malformed.
    """

    default_status = CommandStatus.ESME_RINVOPTPARSTREAM
    default_in_sync = True
