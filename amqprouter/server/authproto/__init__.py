"""The auth service's wire schema (amqpprox's ``authproto``), and its generated module.

Regenerate ``auth_pb2.py``/``auth_pb2.pyi`` after editing ``auth.proto`` with::

    .venv/bin/python -m grpc_tools.protoc -I amqprouter/server/authproto \
        --python_out=amqprouter/server/authproto --pyi_out=amqprouter/server/authproto \
        amqprouter/server/authproto/auth.proto

(grpcio-tools is a development tool only; Debian's ``protoc`` from protobuf-compiler
takes the same arguments.)
"""
