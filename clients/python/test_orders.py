"""The golden flow against the live servers (scripts/dev up)."""

from __future__ import annotations

import os
import re
from concurrent import futures

import grpc
import pytest

import orders_client as oc
from orders.v1 import commands_pb2, queries_pb2, queries_pb2_grpc, types_pb2

DEADLINE = oc.DEADLINE


@pytest.fixture(scope="module")
def cmd():
    with oc.channel(oc.command_addr()) as ch:
        grpc.channel_ready_future(ch).result(timeout=DEADLINE)
        yield oc.commands(ch)


@pytest.fixture(scope="module")
def qry():
    with oc.channel(oc.query_addr()) as ch:
        grpc.channel_ready_future(ch).result(timeout=DEADLINE)
        yield oc.queries(ch)


@pytest.fixture(scope="module")
def customer_id() -> str:
    # Unique per run: the database is shared with other runs.
    return f"py-{oc.new_id()}"


def line(product_id: str, quantity: int, unit_price_minor: int) -> types_pb2.OrderLine:
    return types_pb2.OrderLine(product_id=product_id, quantity=quantity, unit_price_minor=unit_price_minor)


def test_golden_flow(cmd, qry, customer_id):
    order_id = oc.new_id()

    # Place an order with two lines.
    placed = cmd.PlaceOrder(
        commands_pb2.PlaceOrderRequest(
            request_id=oc.new_id(),
            order_id=order_id,
            customer_id=customer_id,
            currency_code="EUR",
            lines=[line("sku-1", 2, 1250), line("sku-2", 1, 999)],
        ),
        timeout=DEADLINE,
    )
    assert placed.order_id == order_id
    assert placed.version == 1

    # Add a line, with optimistic concurrency.
    added = cmd.AddOrderLine(
        commands_pb2.AddOrderLineRequest(
            request_id=oc.new_id(), order_id=order_id, expected_version=1, line=line("sku-3", 3, 500)
        ),
        timeout=DEADLINE,
    )
    assert (added.order_id, added.version) == (order_id, 2)

    # Confirm.
    confirmed = cmd.ConfirmOrder(
        commands_pb2.ConfirmOrderRequest(request_id=oc.new_id(), order_id=order_id, expected_version=2),
        timeout=DEADLINE,
    )
    assert (confirmed.order_id, confirmed.version) == (order_id, 3)

    # Read it back: read-your-writes with min_version.
    got = qry.GetOrder(queries_pb2.GetOrderRequest(order_id=order_id, min_version=3), timeout=DEADLINE)
    assert got.order.version >= 3
    # The order as it was at version 3: the fulfilment saga may already have
    # moved the confirmed order on.
    got = qry.GetOrder(queries_pb2.GetOrderRequest(order_id=order_id, as_of_version=3), timeout=DEADLINE)
    order = got.order
    assert order.order_id == order_id
    assert order.customer_id == customer_id
    assert order.status == types_pb2.ORDER_STATUS_CONFIRMED
    assert order.currency_code == "EUR"
    assert order.version == 3
    assert [(ln.product_id, ln.quantity, ln.unit_price_minor) for ln in order.lines] == [
        ("sku-1", 2, 1250),
        ("sku-2", 1, 999),
        ("sku-3", 3, 500),
    ]
    assert order.total_minor == 2 * 1250 + 999 + 3 * 500
    assert got.freshness.projected_version >= 3

    # List the customer's orders.
    listed = qry.ListOrders(
        queries_pb2.ListOrdersRequest(customer_id=customer_id, page_size=10), timeout=DEADLINE
    )
    assert order_id in [o.order_id for o in listed.orders]
    assert all(o.customer_id == customer_id for o in listed.orders)

    # The history, oldest first.
    # The first three events (the saga may have added more since).
    history = qry.GetOrderHistory(
        queries_pb2.GetOrderHistoryRequest(order_id=order_id, page_size=3), timeout=DEADLINE
    )
    assert [e.WhichOneof("event") for e in history.events] == [
        "order_placed",
        "order_line_added",
        "order_confirmed",
    ]
    assert [e.version for e in history.events] == [1, 2, 3]
    assert all(e.order_id == order_id for e in history.events)
    assert history.events[1].order_line_added.line.product_id == "sku-3"


def test_place_and_cancel(cmd, qry, customer_id):
    placed = cmd.PlaceOrder(
        commands_pb2.PlaceOrderRequest(
            request_id=oc.new_id(),
            customer_id=customer_id,  # no order_id: the server generates one
            currency_code="EUR",
            lines=[line("sku-9", 1, 4200)],
        ),
        timeout=DEADLINE,
    )
    assert placed.order_id
    assert placed.version == 1

    reason = "customer changed their mind"
    cancelled = cmd.CancelOrder(
        commands_pb2.CancelOrderRequest(request_id=oc.new_id(), order_id=placed.order_id, reason=reason),
        timeout=DEADLINE,
    )
    assert (cancelled.order_id, cancelled.version) == (placed.order_id, 2)

    got = qry.GetOrder(queries_pb2.GetOrderRequest(order_id=placed.order_id, min_version=2), timeout=DEADLINE)
    assert got.order.status == types_pb2.ORDER_STATUS_CANCELLED
    assert got.order.cancel_reason == reason
    assert got.order.version == 2


def test_retry_with_the_same_request_id_appends_nothing(cmd, customer_id):
    req = commands_pb2.PlaceOrderRequest(
        request_id=oc.new_id(),
        order_id=oc.new_id(),
        customer_id=customer_id,
        currency_code="USD",
        lines=[line("sku-1", 1, 100)],
    )
    first = cmd.PlaceOrder(req, timeout=DEADLINE)
    again = cmd.PlaceOrder(req, timeout=DEADLINE)
    assert (again.order_id, again.version) == (first.order_id, first.version) == (req.order_id, 1)


def test_invalid_request_carries_bad_request_details(cmd, customer_id):
    with pytest.raises(grpc.RpcError) as info:
        cmd.PlaceOrder(
            commands_pb2.PlaceOrderRequest(
                request_id=oc.new_id(),
                customer_id=customer_id,
                currency_code="eur",
                lines=[line("sku-1", 0, 100)],
            ),
            timeout=DEADLINE,
        )
    err = info.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    br = oc.bad_request(err)
    assert br is not None, f"no google.rpc.BadRequest in the status details of {err!r}"
    fields = {v.field: v.description for v in br.field_violations}
    assert "currency_code" in fields, fields
    assert "lines[0].quantity" in fields, fields
    assert all(fields.values()), fields


def _watch_summary(messages) -> list[tuple[int, str, bool]]:
    """(version, status name, coalesced) per WatchOrder message."""
    return [(m.order.version, types_pb2.OrderStatus.Name(m.order.status), m.coalesced) for m in messages]


def _read_to_end(stream, received: list) -> None:
    """Appends the rest of a WatchOrder stream to received; fails unless the
    stream ends with OK (an error or the deadline raises grpc.RpcError)."""
    try:
        received.extend(stream)
    except grpc.RpcError as err:
        pytest.fail(f"WatchOrder ended with {err.code()}: {err.details()} after {_watch_summary(received)}")
    assert stream.code() == grpc.StatusCode.OK, (stream.code(), stream.details())


def test_watch_order_streams_each_version_until_cancelled(cmd, qry, customer_id):
    order_id = oc.new_id()
    placed = cmd.PlaceOrder(
        commands_pb2.PlaceOrderRequest(
            request_id=oc.new_id(),
            order_id=order_id,
            customer_id=customer_id,
            currency_code="EUR",
            lines=[line("sku-1", 2, 1250), line("sku-2", 1, 999)],
        ),
        timeout=DEADLINE,
    )
    assert (placed.order_id, placed.version) == (order_id, 1)

    # Watch from version 1 before the further commands; reading the first
    # message shows the stream is being served, so versions 2-3 arrive live.
    # (The order is cancelled, not confirmed: a confirmed order belongs to
    # the fulfilment saga.)
    stream = qry.WatchOrder(queries_pb2.WatchOrderRequest(order_id=order_id, from_version=1), timeout=DEADLINE)
    try:
        try:
            received = [next(stream)]
        except grpc.RpcError as err:
            pytest.fail(f"WatchOrder ended with {err.code()}: {err.details()} before its first message")
        except StopIteration:
            pytest.fail(f"WatchOrder ended with {stream.code()} before its first message")
        assert _watch_summary(received) == [(1, "ORDER_STATUS_PLACED", False)]

        reason = "changed my mind"
        added = cmd.AddOrderLine(
            commands_pb2.AddOrderLineRequest(
                request_id=oc.new_id(), order_id=order_id, expected_version=1, line=line("sku-3", 3, 500)
            ),
            timeout=DEADLINE,
        )
        assert (added.order_id, added.version) == (order_id, 2)
        cancelled = cmd.CancelOrder(
            commands_pb2.CancelOrderRequest(
                request_id=oc.new_id(), order_id=order_id, expected_version=2, reason=reason
            ),
            timeout=DEADLINE,
        )
        assert (cancelled.order_id, cancelled.version) == (order_id, 3)

        # The stream ends by itself (OK) once the order is CANCELLED.
        _read_to_end(stream, received)
    finally:
        stream.cancel()  # a no-op once the stream has ended; frees it if an assertion failed
    assert _watch_summary(received) == [
        (1, "ORDER_STATUS_PLACED", False),
        (2, "ORDER_STATUS_PLACED", False),  # a line added leaves the order PLACED
        (3, "ORDER_STATUS_CANCELLED", False),
    ]
    assert all(m.order.order_id == order_id for m in received)
    assert [len(m.order.lines) for m in received] == [2, 3, 3]
    assert [m.order.cancel_reason for m in received] == ["", "", reason]
    assert all(m.freshness.projected_version >= m.order.version for m in received)

    # Resume: from version 2 on the cancelled order, versions 2 and 3, then the end.
    resumed: list = []
    _read_to_end(
        qry.WatchOrder(queries_pb2.WatchOrderRequest(order_id=order_id, from_version=2), timeout=DEADLINE),
        resumed,
    )
    assert _watch_summary(resumed) == [
        (2, "ORDER_STATUS_PLACED", False),
        (3, "ORDER_STATUS_CANCELLED", False),
    ]
    assert resumed[-1].order.cancel_reason == reason


def _auth_enforced() -> bool:
    """ORDERS_AUTH_ENFORCED: "1" when the servers require a token (scripts/clients
    sets it by default), "0" or unset when they do not."""
    value = os.environ.get("ORDERS_AUTH_ENFORCED", "0")
    if value not in ("0", "1"):
        raise ValueError(f"ORDERS_AUTH_ENFORCED must be 0 or 1, not {value!r}")
    return value == "1"


@pytest.mark.skipif(
    not _auth_enforced(), reason="ORDERS_AUTH_ENFORCED is not 1 (servers not expected to enforce auth)"
)
def test_call_without_token_is_unauthenticated(customer_id):
    # A call that succeeds on a server without auth: it must be refused here.
    with oc.channel(oc.query_addr(), send_token=False) as ch:
        try:
            got = oc.queries(ch).ListOrders(
                queries_pb2.ListOrdersRequest(customer_id=customer_id, page_size=1), timeout=DEADLINE
            )
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED, f"{err.code()}: {err.details()}"
        else:
            pytest.fail(f"ListOrders without a token succeeded ({len(got.orders)} orders): auth not enforced")


@pytest.mark.parametrize("count", [101, 100])
def test_bad_lines_are_refused_with_decodable_details(customer_id, count):
    """101 lines (over the limit) or 100 lines with an empty product_id:
    INVALID_ARGUMENT whose BadRequest a default-settings grpcio channel can
    receive (grpcio's default metadata size limits, no
    grpc.max_metadata_size) and decode, with at most 20 field violations
    plus one summary."""
    req = commands_pb2.PlaceOrderRequest(
        request_id=oc.new_id(),
        customer_id=customer_id,
        currency_code="EUR",
        lines=[line("", 1, 100) for _ in range(count)],
    )
    # No options at all (not oc.channel's service config either); only the token.
    with oc.authorized(grpc.insecure_channel(oc.command_addr())) as ch:
        with pytest.raises(grpc.RpcError) as info:
            oc.commands(ch).PlaceOrder(req, timeout=DEADLINE)
    err = info.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{err.code()}: {err.details()}"
    br = oc.bad_request(err)  # grpc_status.rpc_status.from_call
    assert br is not None, f"no google.rpc.BadRequest in the status details of {err!r}"
    fields = [v.field for v in br.field_violations]
    assert 1 <= len(fields) <= 21, f"{len(fields)} field violations: {fields}"
    if count > 100:
        # The line count is checked before any line is parsed.
        assert fields == ["lines"], fields
    else:
        assert any(re.fullmatch(r"lines\[\d+\]\.product_id", f) for f in fields), fields
        assert "more" in br.field_violations[-1].description, br.field_violations[-1]


class _FlakyQueries(queries_pb2_grpc.OrderQueriesServicer):
    """Answers UNAVAILABLE twice, then the order."""

    def __init__(self):
        self.calls = 0

    def GetOrder(self, request, context):
        self.calls += 1
        if self.calls <= 2:
            context.abort(grpc.StatusCode.UNAVAILABLE, "not yet")
        return queries_pb2.GetOrderResponse(order=queries_pb2.Order(order_id=request.order_id))


def test_service_config_retries_unavailable():
    """The service config from proto/ is loaded: UNAVAILABLE is retried."""
    fake = _FlakyQueries()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    queries_pb2_grpc.add_OrderQueriesServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with oc.channel(f"127.0.0.1:{port}") as ch:
            got = oc.queries(ch).GetOrder(queries_pb2.GetOrderRequest(order_id="o-1"), timeout=DEADLINE)
        assert got.order.order_id == "o-1"
        assert fake.calls == 3, "attempts seen by the server (2 retried UNAVAILABLE)"
    finally:
        server.stop(grace=None)


class _RecordingQueries(queries_pb2_grpc.OrderQueriesServicer):
    """Records each call's authorization header (None when absent)."""

    def __init__(self):
        self.authorization = []

    def GetOrder(self, request, context):
        md = dict(context.invocation_metadata())
        self.authorization.append(md.get("authorization"))
        return queries_pb2.GetOrderResponse(order=queries_pb2.Order(order_id=request.order_id))


@pytest.mark.parametrize("token", ["token-for-the-test", None, ""])
def test_channel_sends_orders_token_as_bearer(monkeypatch, token):
    """channel() sends `authorization: Bearer $ORDERS_TOKEN`, and no header when
    ORDERS_TOKEN is unset or empty (checked on a fake server: today's servers
    accept calls either way)."""
    if token is None:
        monkeypatch.delenv("ORDERS_TOKEN", raising=False)
    else:
        monkeypatch.setenv("ORDERS_TOKEN", token)
    fake = _RecordingQueries()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    queries_pb2_grpc.add_OrderQueriesServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with oc.channel(f"127.0.0.1:{port}") as ch:
            for _ in range(2):
                oc.queries(ch).GetOrder(queries_pb2.GetOrderRequest(order_id="o-1"), timeout=DEADLINE)
    finally:
        server.stop(grace=None)
    want = f"Bearer {token}" if token else None
    assert fake.authorization == [want, want]
