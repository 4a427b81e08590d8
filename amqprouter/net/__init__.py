"""The network kit under the session layer: non-blocking sockets, and the transports
(plain, TLS) a session forwards over. No routing, no sessions, no control plane."""
