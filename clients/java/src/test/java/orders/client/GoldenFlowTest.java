package orders.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.rpc.BadRequest;
import io.grpc.Context;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import orders.v1.Commands.AddOrderLineRequest;
import orders.v1.Commands.AddOrderLineResponse;
import orders.v1.Commands.CancelOrderRequest;
import orders.v1.Commands.CancelOrderResponse;
import orders.v1.Commands.ConfirmOrderRequest;
import orders.v1.Commands.ConfirmOrderResponse;
import orders.v1.Commands.PlaceOrderRequest;
import orders.v1.Commands.PlaceOrderResponse;
import orders.v1.Events.OrderEvent;
import orders.v1.OrderCommandsGrpc;
import orders.v1.OrderQueriesGrpc;
import orders.v1.Queries.GetOrderHistoryRequest;
import orders.v1.Queries.GetOrderHistoryResponse;
import orders.v1.Queries.GetOrderRequest;
import orders.v1.Queries.GetOrderResponse;
import orders.v1.Queries.ListOrdersRequest;
import orders.v1.Queries.ListOrdersResponse;
import orders.v1.Queries.Order;
import orders.v1.Queries.WatchOrderRequest;
import orders.v1.Queries.WatchOrderResponse;
import orders.v1.Types.OrderLine;
import orders.v1.Types.OrderStatus;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;

/** The golden flow against the live servers (scripts/dev up). */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class GoldenFlowTest {
  private ManagedChannel commandChannel;
  private ManagedChannel queryChannel;
  // Unique per run: the database is shared with other runs.
  private final String customerId = "java-" + UUID.randomUUID();

  @BeforeAll
  void connect() throws Exception {
    commandChannel = OrdersClient.channel(OrdersClient.commandAddr());
    queryChannel = OrdersClient.channel(OrdersClient.queryAddr());
  }

  @AfterAll
  void disconnect() throws Exception {
    OrdersClient.close(commandChannel);
    OrdersClient.close(queryChannel);
  }

  // A fresh stub per call, each with its own deadline.
  private OrderCommandsGrpc.OrderCommandsBlockingStub cmd() {
    return OrderCommandsGrpc.newBlockingStub(commandChannel)
        .withDeadlineAfter(OrdersClient.DEADLINE_SECONDS, TimeUnit.SECONDS);
  }

  private OrderQueriesGrpc.OrderQueriesBlockingStub qry() {
    return OrderQueriesGrpc.newBlockingStub(queryChannel)
        .withDeadlineAfter(OrdersClient.DEADLINE_SECONDS, TimeUnit.SECONDS);
  }

  private static String newId() {
    return UUID.randomUUID().toString();
  }

  private static OrderLine line(String product, int quantity, long unitPriceMinor) {
    return OrderLine.newBuilder()
        .setProductId(product)
        .setQuantity(quantity)
        .setUnitPriceMinor(unitPriceMinor)
        .build();
  }

  @Test
  void goldenFlow() {
    String orderId = newId();

    PlaceOrderResponse placed =
        cmd().placeOrder(
                PlaceOrderRequest.newBuilder()
                    .setRequestId(newId())
                    .setOrderId(orderId)
                    .setCustomerId(customerId)
                    .setCurrencyCode("EUR")
                    .addLines(line("sku-1", 2, 1250))
                    .addLines(line("sku-2", 1, 999))
                    .build());
    assertEquals(orderId, placed.getOrderId());
    assertEquals(1, placed.getVersion());

    AddOrderLineResponse added =
        cmd().addOrderLine(
                AddOrderLineRequest.newBuilder()
                    .setRequestId(newId())
                    .setOrderId(orderId)
                    .setExpectedVersion(1)
                    .setLine(line("sku-3", 3, 500))
                    .build());
    assertEquals(orderId, added.getOrderId());
    assertEquals(2, added.getVersion());

    ConfirmOrderResponse confirmed =
        cmd().confirmOrder(
                ConfirmOrderRequest.newBuilder()
                    .setRequestId(newId())
                    .setOrderId(orderId)
                    .setExpectedVersion(2)
                    .build());
    assertEquals(orderId, confirmed.getOrderId());
    assertEquals(3, confirmed.getVersion());

    // Read-your-writes: wait for the projection to reach version 3.
    qry().getOrder(GetOrderRequest.newBuilder().setOrderId(orderId).setMinVersion(3).build());
    // Assert on the order as of version 3: the fulfilment saga may already have moved it on.
    GetOrderResponse got =
        qry().getOrder(GetOrderRequest.newBuilder().setOrderId(orderId).setAsOfVersion(3).build());
    Order o = got.getOrder();
    assertEquals(orderId, o.getOrderId());
    assertEquals(customerId, o.getCustomerId());
    assertEquals(OrderStatus.ORDER_STATUS_CONFIRMED, o.getStatus());
    assertEquals("EUR", o.getCurrencyCode());
    assertEquals(3, o.getVersion());
    assertEquals(
        List.of("sku-1 x2 @1250", "sku-2 x1 @999", "sku-3 x3 @500"),
        o.getLinesList().stream()
            .map(l -> l.getProductId() + " x" + l.getQuantity() + " @" + l.getUnitPriceMinor())
            .collect(Collectors.toList()));
    assertEquals(2 * 1250 + 999 + 3 * 500, o.getTotalMinor());
    assertTrue(got.getFreshness().getProjectedVersion() >= 3, got.getFreshness().toString());

    ListOrdersResponse listed =
        qry().listOrders(
                ListOrdersRequest.newBuilder().setCustomerId(customerId).setPageSize(10).build());
    assertTrue(
        listed.getOrdersList().stream().anyMatch(x -> x.getOrderId().equals(orderId)),
        () -> "ListOrders misses " + orderId + ": " + listed);
    assertTrue(listed.getOrdersList().stream().allMatch(x -> x.getCustomerId().equals(customerId)));

    // The first three events only: the fulfilment saga may already have appended a cancellation.
    GetOrderHistoryResponse history =
        qry().getOrderHistory(
                GetOrderHistoryRequest.newBuilder().setOrderId(orderId).setPageSize(3).build());
    assertEquals(
        List.of(
            OrderEvent.EventCase.ORDER_PLACED,
            OrderEvent.EventCase.ORDER_LINE_ADDED,
            OrderEvent.EventCase.ORDER_CONFIRMED),
        history.getEventsList().stream().map(OrderEvent::getEventCase).collect(Collectors.toList()));
    assertEquals(
        List.of(1L, 2L, 3L),
        history.getEventsList().stream().map(OrderEvent::getVersion).collect(Collectors.toList()));
    assertTrue(history.getEventsList().stream().allMatch(e -> e.getOrderId().equals(orderId)));
    assertEquals("sku-3", history.getEvents(1).getOrderLineAdded().getLine().getProductId());
  }

  @Test
  void placeAndCancel() {
    // No order_id: the server generates one.
    PlaceOrderResponse placed =
        cmd().placeOrder(
                PlaceOrderRequest.newBuilder()
                    .setRequestId(newId())
                    .setCustomerId(customerId)
                    .setCurrencyCode("EUR")
                    .addLines(line("sku-9", 1, 4200))
                    .build());
    assertFalse(placed.getOrderId().isEmpty());
    assertEquals(1, placed.getVersion());

    String reason = "customer changed their mind";
    CancelOrderResponse cancelled =
        cmd().cancelOrder(
                CancelOrderRequest.newBuilder()
                    .setRequestId(newId())
                    .setOrderId(placed.getOrderId())
                    .setReason(reason)
                    .build());
    assertEquals(placed.getOrderId(), cancelled.getOrderId());
    assertEquals(2, cancelled.getVersion());

    Order o =
        qry().getOrder(
                GetOrderRequest.newBuilder()
                    .setOrderId(placed.getOrderId())
                    .setMinVersion(2)
                    .build())
            .getOrder();
    assertEquals(OrderStatus.ORDER_STATUS_CANCELLED, o.getStatus());
    assertEquals(reason, o.getCancelReason());
    assertEquals(2, o.getVersion());
  }

  @Test
  void retryWithTheSameRequestIdAppendsNothing() {
    PlaceOrderRequest req =
        PlaceOrderRequest.newBuilder()
            .setRequestId(newId())
            .setOrderId(newId())
            .setCustomerId(customerId)
            .setCurrencyCode("USD")
            .addLines(line("sku-1", 1, 100))
            .build();
    PlaceOrderResponse first = cmd().placeOrder(req);
    PlaceOrderResponse again = cmd().placeOrder(req);
    assertEquals(req.getOrderId(), first.getOrderId());
    assertEquals(1, first.getVersion());
    assertEquals(first, again);
  }

  @Test
  void invalidRequestCarriesBadRequestDetails() throws Exception {
    StatusRuntimeException e =
        assertThrows(
            StatusRuntimeException.class,
            () ->
                cmd().placeOrder(
                        PlaceOrderRequest.newBuilder()
                            .setRequestId(newId())
                            .setCustomerId(customerId)
                            .setCurrencyCode("eur")
                            .addLines(line("sku-1", 0, 100))
                            .build()));
    assertEquals(Status.Code.INVALID_ARGUMENT, e.getStatus().getCode(), e.toString());
    BadRequest br =
        OrdersClient.badRequest(e)
            .orElseThrow(() -> new AssertionError("no google.rpc.BadRequest in " + e));
    Map<String, String> fields =
        br.getFieldViolationsList().stream()
            .collect(
                Collectors.toMap(
                    BadRequest.FieldViolation::getField,
                    BadRequest.FieldViolation::getDescription,
                    (a, b) -> a));
    assertNotNull(fields.get("currency_code"), () -> "no violation for currency_code: " + fields);
    assertNotNull(
        fields.get("lines[0].quantity"), () -> "no violation for lines[0].quantity: " + fields);
  }

  /** "version STATUS" per WatchOrder message, with " coalesced" when set. */
  private static List<String> watched(List<WatchOrderResponse> messages) {
    return messages.stream()
        .map(
            m ->
                m.getOrder().getVersion()
                    + " "
                    + m.getOrder().getStatus()
                    + (m.getCoalesced() ? " coalesced" : ""))
        .collect(Collectors.toList());
  }

  /**
   * Appends the rest of a WatchOrder stream to received; fails unless the stream ends with OK (the
   * blocking iterator throws on an error or the deadline).
   */
  private static List<WatchOrderResponse> readToEnd(
      Iterator<WatchOrderResponse> stream, List<WatchOrderResponse> received) {
    try {
      stream.forEachRemaining(received::add);
    } catch (StatusRuntimeException e) {
      throw new AssertionError(
          "WatchOrder ended with " + e.getStatus() + " after " + watched(received), e);
    }
    return received;
  }

  @Test
  void watchOrderStreamsEachVersionUntilCancelledAndResumes() throws Exception {
    String orderId = newId();
    PlaceOrderResponse placed =
        cmd().placeOrder(
                PlaceOrderRequest.newBuilder()
                    .setRequestId(newId())
                    .setOrderId(orderId)
                    .setCustomerId(customerId)
                    .setCurrencyCode("EUR")
                    .addLines(line("sku-1", 2, 1250))
                    .addLines(line("sku-2", 1, 999))
                    .build());
    assertEquals(orderId, placed.getOrderId());
    assertEquals(1, placed.getVersion());

    // Watch from version 1 before the further commands; reading the first message shows the
    // stream is being served, so versions 2-3 arrive live. The call runs in a cancellable
    // context, cancelled at the end in case an assertion failed with the stream still open.
    // The order is cancelled, never confirmed: the fulfilment saga acts on every confirmed order
    // and could cancel it under the test.
    String reason = "changed my mind";
    List<WatchOrderResponse> received = new ArrayList<>();
    Context.CancellableContext watching = Context.current().withCancellation();
    try {
      Iterator<WatchOrderResponse> stream =
          watching.call(
              () ->
                  qry().watchOrder(
                          WatchOrderRequest.newBuilder()
                              .setOrderId(orderId)
                              .setFromVersion(1)
                              .build()));
      try {
        assertTrue(stream.hasNext(), "WatchOrder ended before its first message");
        received.add(stream.next());
      } catch (StatusRuntimeException e) {
        throw new AssertionError(
            "WatchOrder ended with " + e.getStatus() + " before its first message", e);
      }
      assertEquals(List.of("1 ORDER_STATUS_PLACED"), watched(received));

      AddOrderLineResponse added =
          cmd().addOrderLine(
                  AddOrderLineRequest.newBuilder()
                      .setRequestId(newId())
                      .setOrderId(orderId)
                      .setExpectedVersion(1)
                      .setLine(line("sku-3", 3, 500))
                      .build());
      assertEquals(2, added.getVersion());
      CancelOrderResponse cancelled =
          cmd().cancelOrder(
                  CancelOrderRequest.newBuilder()
                      .setRequestId(newId())
                      .setOrderId(orderId)
                      .setExpectedVersion(2)
                      .setReason(reason)
                      .build());
      assertEquals(orderId, cancelled.getOrderId());
      assertEquals(3, cancelled.getVersion());

      // The stream ends by itself (OK) once the order is CANCELLED.
      readToEnd(stream, received);
    } finally {
      watching.cancel(null);
    }
    assertEquals(
        List.of(
            "1 ORDER_STATUS_PLACED",
            "2 ORDER_STATUS_PLACED", // a line added leaves the order PLACED
            "3 ORDER_STATUS_CANCELLED"),
        watched(received));
    assertTrue(received.stream().allMatch(m -> m.getOrder().getOrderId().equals(orderId)));
    assertEquals(
        List.of(2, 3, 3),
        received.stream().map(m -> m.getOrder().getLinesCount()).collect(Collectors.toList()));
    assertEquals(reason, received.get(2).getOrder().getCancelReason());
    assertEquals(2 * 1250 + 999 + 3 * 500, received.get(2).getOrder().getTotalMinor());
    for (WatchOrderResponse m : received) {
      assertTrue(
          m.getFreshness().getProjectedVersion() >= m.getOrder().getVersion(), m.toString());
    }

    // Resume: from version 2 on the cancelled order, versions 2 and 3, then the end.
    List<WatchOrderResponse> resumed =
        readToEnd(
            qry().watchOrder(
                    WatchOrderRequest.newBuilder().setOrderId(orderId).setFromVersion(2).build()),
            new ArrayList<>());
    assertEquals(List.of("2 ORDER_STATUS_PLACED", "3 ORDER_STATUS_CANCELLED"), watched(resumed));
    assertEquals(reason, resumed.get(1).getOrder().getCancelReason());
  }
}
