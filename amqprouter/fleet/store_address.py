"""``--config-store``'s address: one Redis, a Sentinel-managed primary, or a Cluster.

The accepted forms (docs/fleet.md):

* ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS), ``unix:///path``:
  one Redis, handed to ``coredis.Redis.from_url`` as it is.
* ``redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]``: the
  primary that these Sentinels name ``service_name`` (``coredis.Sentinel``); the
  credentials are the primary's, the Sentinels are asked without any. A failover is a
  reconnect: the Sentinels are asked again for the primary.
* ``redis+cluster://[user:password@]host:port[,host:port...]``: a Redis Cluster, found
  from these startup nodes (``coredis.RedisCluster``); a cluster has database 0 only.

coredis has no URL form for Sentinel or Cluster, so these spellings are ours (the ones
other Redis clients use). Anything else, TLS to Sentinels or a Cluster included, is
refused with a message saying what is accepted: never an address half understood.
This module imports nothing of coredis, so the command line checks an address without
the optional extra.
"""

from __future__ import annotations

from typing import Final, Literal

import attrs

SENTINEL_PORT: Final = 26379
REDIS_PORT: Final = 6379
FORMS: Final = (
    "redis://host:port/db, rediss://host:port/db, unix:///path, "
    "redis+sentinel://host:port[,host:port]/service_name[/db], "
    "redis+cluster://host:port[,host:port]"
)


class StoreAddressError(ValueError):
    """An address that is not one of ``FORMS``; the text says why."""


@attrs.frozen
class StoreAddress:
    kind: Literal["redis", "sentinel", "cluster"]
    #: The address as given (a plain Redis URL is handed to coredis unchanged).
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None


def parse_store_address(url: str) -> StoreAddress:
    """The address ``url`` names; StoreAddressError when it is not one of ``FORMS``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise StoreAddressError(f"--config-store must be one of {FORMS}; not {url!r}")
    scheme = scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        return StoreAddress("redis", url)
    if scheme not in ("redis+sentinel", "redis+cluster"):
        raise StoreAddressError(
            f"--config-store: unknown scheme {scheme!r} (TLS to Sentinels or a Cluster is "
            f"not supported); use one of {FORMS}"
        )
    if "?" in rest or "#" in rest:
        raise StoreAddressError(f"--config-store: options (?...) are not supported in {url!r}")
    netloc, _, path = rest.partition("/")
    credentials, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        username, password = (user or None), (secret if colon else None)
    kind: Literal["sentinel", "cluster"] = "sentinel" if scheme == "redis+sentinel" else "cluster"
    default_port = SENTINEL_PORT if kind == "sentinel" else REDIS_PORT
    nodes = tuple(_node(item, default_port, url) for item in hosts.split(","))
    parts = [part for part in path.split("/") if part] if path else []
    if kind == "cluster":
        if parts and parts != ["0"]:
            raise StoreAddressError(
                f"--config-store: a Redis Cluster has database 0 only; "
                f"redis+cluster://host:port[,host:port], not {url!r}"
            )
        return StoreAddress("cluster", url, nodes, username=username, password=password)
    if not parts or len(parts) > 2:
        raise StoreAddressError(
            "--config-store: redis+sentinel://host:port[,host:port]/service_name[/db] "
            f"names the service (the Sentinels' master name); not {url!r}"
        )
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise StoreAddressError(f"--config-store: the database must be a number in {url!r}")
        db = int(parts[1])
    return StoreAddress("sentinel", url, nodes, parts[0], db, username, password)


def _node(item: str, default_port: int, url: str) -> tuple[str, int]:
    if item.startswith("["):  # [IPv6]:port
        host, bracket, after = item[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise StoreAddressError(f"--config-store: bad address {item!r} in {url!r}")
        port_text = after[1:]
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise StoreAddressError(f"--config-store: a host is missing in {url!r}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise StoreAddressError(f"--config-store: bad port {port_text!r} in {url!r}")
    return host, int(port_text)
