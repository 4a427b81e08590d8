#!/usr/bin/env python3
"""A minimal auth service for amqprouter's ``AUTH SERVICE host port target``.

The router POSTs a protobuf ``AuthRequest`` (amqprouter/server/authproto/auth.proto)
for each client, after routing and before it connects to a broker, and expects a
protobuf ``AuthResponse`` with a 2xx status. This one knows a few users of its own
(``--user name:password``) and, when ``--broker-user`` is given, maps every allowed
user onto that one broker account: the router then sends the broker those
credentials instead of the client's. Anyone else is denied, with a reason the client
sees in its Connection.Close (403 ACCESS_REFUSED).

    python examples/auth_service.py --port 8080 --user alice:secret --broker-user guest:guest
    amqprouter_ctl /tmp/amqprouter.sock AUTH SERVICE 127.0.0.1 8080 /auth

It uses only the standard library and the protobuf module amqprouter ships.
"""

from __future__ import annotations

import argparse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.message import DecodeError

from amqprouter.server.authproto import auth_pb2

MAX_BODY = 64 * 1024


def decide(
    request: auth_pb2.AuthRequest, users: dict[str, str], broker: tuple[str, str] | None
) -> auth_pb2.AuthResponse:
    sasl = request.authData
    if sasl.authMechanism != "PLAIN":
        return _deny(f"mechanism {sasl.authMechanism} not supported: use PLAIN")
    # PLAIN: authzid \0 authcid \0 password.
    parts = sasl.credentials.split(b"\0")
    if len(parts) != 3:
        return _deny("malformed PLAIN credentials")
    user, password = parts[1].decode(errors="replace"), parts[2].decode(errors="replace")
    if users.get(user) != password:
        return _deny(f"unknown user or wrong password for {user!r}")
    reason = f"{user} from {request.clientHostname} to vhost {request.vhostName}"
    if broker is None:
        return auth_pb2.AuthResponse(result=auth_pb2.AuthResponse.ALLOW, reason=reason)
    credentials = b"\0" + broker[0].encode() + b"\0" + broker[1].encode()
    return auth_pb2.AuthResponse(
        result=auth_pb2.AuthResponse.ALLOW,
        reason=f"{reason} as {broker[0]}",
        authData=auth_pb2.SASL(authMechanism="PLAIN", credentials=credentials),
    )


def _deny(reason: str) -> auth_pb2.AuthResponse:
    return auth_pb2.AuthResponse(result=auth_pb2.AuthResponse.DENY, reason=reason)


def _pair(text: str) -> tuple[str, str]:
    name, sep, password = text.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected name:password, got {text!r}")
    return name, password


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--target", default="/auth")
    parser.add_argument("--user", type=_pair, action="append", default=[], metavar="NAME:PASS")
    parser.add_argument("--broker-user", type=_pair, default=None, metavar="NAME:PASS")
    args = parser.parse_args()
    users = dict(args.user)
    broker = args.broker_user
    target = args.target

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            if self.path != target or not 0 <= length <= MAX_BODY:
                self._send(404 if self.path != target else 413, b"")
                return
            request = auth_pb2.AuthRequest()
            try:
                request.ParseFromString(self.rfile.read(length))
            except DecodeError:
                self._send(400, b"")
                return
            response = decide(request, users, broker)
            print(
                f"{request.vhostName!r} {request.connectionName!r}: "
                f"{auth_pb2.AuthResponse.AuthResult.Name(response.result)} {response.reason}",
                flush=True,
            )
            self._send(200, response.SerializeToString())

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"listening on http://{args.host}:{server.server_address[1]}{target}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
