"""The checked-in generated module is amqpprox's schema, field for field: a service
written for amqpprox must read our requests and we its responses."""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from amqprouter.server.authproto import auth_pb2

STRING = FieldDescriptor.TYPE_STRING
BYTES = FieldDescriptor.TYPE_BYTES
MESSAGE = FieldDescriptor.TYPE_MESSAGE
ENUM = FieldDescriptor.TYPE_ENUM


def _fields(message: type[Message]) -> dict[str, tuple[int, int]]:
    return {f.name: (f.number, f.type) for f in message.DESCRIPTOR.fields}


def test_package_and_messages() -> None:
    assert auth_pb2.DESCRIPTOR.package == "Bloomberg.amqpprox.authproto"
    assert auth_pb2.AuthRequest.DESCRIPTOR.full_name == "Bloomberg.amqpprox.authproto.AuthRequest"


def test_fields() -> None:
    assert _fields(auth_pb2.SASL) == {
        "authMechanism": (1, STRING),
        "credentials": (2, BYTES),
    }
    assert _fields(auth_pb2.AuthRequest) == {
        "vhostName": (1, STRING),
        "authData": (2, MESSAGE),
        "clientHostname": (3, STRING),
        "connectionName": (4, STRING),
    }
    assert _fields(auth_pb2.AuthResponse) == {
        "result": (1, ENUM),
        "reason": (2, STRING),
        "authData": (3, MESSAGE),
    }
    result = auth_pb2.AuthResponse.DESCRIPTOR.fields_by_name["result"].enum_type
    assert result is not None
    assert {v.name: v.number for v in result.values} == {"ALLOW": 0, "DENY": 1}


def test_wire_bytes_of_a_known_request() -> None:
    request = auth_pb2.AuthRequest(
        vhostName="v",
        authData=auth_pb2.SASL(authMechanism="PLAIN", credentials=b"\0u\0p"),
        clientHostname="h",
        connectionName="c",
    )
    assert request.SerializeToString() == (
        b"\x0a\x01v" + b"\x12\x0d" + b"\x0a\x05PLAIN" + b"\x12\x04\0u\0p" + b"\x1a\x01h\x22\x01c"
    )
