from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SASL(_message.Message):
    __slots__ = ("authMechanism", "credentials")
    AUTHMECHANISM_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    authMechanism: str
    credentials: bytes
    def __init__(self, authMechanism: _Optional[str] = ..., credentials: _Optional[bytes] = ...) -> None: ...

class AuthRequest(_message.Message):
    __slots__ = ("vhostName", "authData", "clientHostname", "connectionName")
    VHOSTNAME_FIELD_NUMBER: _ClassVar[int]
    AUTHDATA_FIELD_NUMBER: _ClassVar[int]
    CLIENTHOSTNAME_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONNAME_FIELD_NUMBER: _ClassVar[int]
    vhostName: str
    authData: SASL
    clientHostname: str
    connectionName: str
    def __init__(self, vhostName: _Optional[str] = ..., authData: _Optional[_Union[SASL, _Mapping]] = ..., clientHostname: _Optional[str] = ..., connectionName: _Optional[str] = ...) -> None: ...

class AuthResponse(_message.Message):
    __slots__ = ("result", "reason", "authData")
    class AuthResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ALLOW: _ClassVar[AuthResponse.AuthResult]
        DENY: _ClassVar[AuthResponse.AuthResult]
    ALLOW: AuthResponse.AuthResult
    DENY: AuthResponse.AuthResult
    RESULT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    AUTHDATA_FIELD_NUMBER: _ClassVar[int]
    result: AuthResponse.AuthResult
    reason: str
    authData: SASL
    def __init__(self, result: _Optional[_Union[AuthResponse.AuthResult, str]] = ..., reason: _Optional[str] = ..., authData: _Optional[_Union[SASL, _Mapping]] = ...) -> None: ...
