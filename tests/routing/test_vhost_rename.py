"""The routing decision carries a mapping's rename (MAP ... AS): an exact vhost's and a
pattern's give the broker's vhost, whatever the target kind; the default farm and an
unrenamed mapping give None (the broker opens the client's own vhost)."""

from __future__ import annotations

from amqprouter.routing import Backend, Farm, RoutingTable

_BACKENDS = {n: Backend(n, "dc", f"{n}.example", 5672) for n in ("b1", "b2")}


def _table() -> RoutingTable:
    return RoutingTable(
        backends=_BACKENDS,
        farms={"f": Farm("f", "round-robin", ("b1", "b2"))},
        mappings={
            "orders": ("backend", "b1"),
            "tenant-*": ("farm", "f"),
            "plain": ("farm", "f"),
            # A vhost named like the default's mapping: its rename is its own alone.
            "(default)": ("backend", "b2"),
        },
        renames={"orders": "prod orders", "tenant-*": "tenants", "(default)": "renamed"},
        default_farm="f",
    )


def test_exact_and_pattern_mappings_give_the_brokers_vhost() -> None:
    table = _table()
    exact = table.route("orders")
    assert (exact.mapping, exact.broker_vhost) == ("orders", "prod orders")
    assert [b.name for b in exact.candidates] == ["b1"]
    # Every vhost a pattern matches opens the pattern's one broker vhost.
    for vhost in ("tenant-a", "tenant-b"):
        route = table.route(vhost, "10.0.0.1")
        assert (route.mapping, route.broker_vhost, route.farm) == (
            "tenant-*",
            "tenants",
            table.farms["f"],
        )
        route.release()
    assert table.route("(default)").broker_vhost == "renamed"


def test_unrenamed_mappings_and_the_default_farm_keep_the_clients_vhost() -> None:
    table = _table()
    assert table.route("plain").broker_vhost is None
    other = table.route("anything")
    assert (other.mapping, other.broker_vhost) == ("(default)", None)


def test_a_rename_is_configuration() -> None:
    assert _table() != RoutingTable(
        backends=_BACKENDS,
        farms=_table().farms,
        mappings=_table().mappings,
        renames={"orders": "prod orders"},
        default_farm="f",
    )
