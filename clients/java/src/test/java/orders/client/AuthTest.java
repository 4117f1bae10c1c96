package orders.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.grpc.Grpc;
import io.grpc.InsecureServerCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Server;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import io.grpc.ServerInterceptors;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.StreamObserver;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import orders.v1.OrderQueriesGrpc;
import orders.v1.Queries.GetOrderRequest;
import orders.v1.Queries.GetOrderResponse;
import orders.v1.Queries.ListOrdersRequest;
import orders.v1.Queries.ListOrdersResponse;
import orders.v1.Queries.Order;
import org.junit.jupiter.api.Test;

/** The bearer token: sent when ORDERS_TOKEN is set, required when ORDERS_AUTH_ENFORCED=1. */
class AuthTest {
  /** ORDERS_AUTH_ENFORCED: "1" when the servers require a token (scripts/clients' default). */
  private static boolean authEnforced() {
    String v = System.getenv("ORDERS_AUTH_ENFORCED");
    if (v == null || v.isEmpty() || v.equals("0")) {
      return false;
    }
    if (v.equals("1")) {
      return true;
    }
    throw new IllegalStateException("ORDERS_AUTH_ENFORCED must be 0 or 1, not '" + v + "'");
  }

  @Test
  void callWithoutTokenIsUnauthenticated() throws Exception {
    assumeTrue(
        authEnforced(), "ORDERS_AUTH_ENFORCED is not 1 (servers not expected to enforce auth)");
    ManagedChannel channel = OrdersClient.channel(OrdersClient.queryAddr(), "");
    try {
      // A call that succeeds on a server without auth: it must be refused here.
      ListOrdersRequest req =
          ListOrdersRequest.newBuilder()
              .setCustomerId("java-" + UUID.randomUUID())
              .setPageSize(1)
              .build();
      ListOrdersResponse got;
      try {
        got =
            OrderQueriesGrpc.newBlockingStub(channel)
                .withDeadlineAfter(OrdersClient.DEADLINE_SECONDS, TimeUnit.SECONDS)
                .listOrders(req);
      } catch (StatusRuntimeException e) {
        assertEquals(Status.Code.UNAUTHENTICATED, e.getStatus().getCode(), e.toString());
        return;
      }
      fail(
          "ListOrders without a token succeeded ("
              + got.getOrdersCount()
              + " orders): auth not enforced");
    } finally {
      OrdersClient.close(channel);
    }
  }

  /** The authorization headers a fake OrderQueries server saw ("<none>" when absent). */
  private static List<String> authorizationSeen(String token) throws Exception {
    List<String> seen = Collections.synchronizedList(new ArrayList<>());
    ServerInterceptor record =
        new ServerInterceptor() {
          @Override
          public <Q, R> ServerCall.Listener<Q> interceptCall(
              ServerCall<Q, R> call, Metadata headers, ServerCallHandler<Q, R> next) {
            String v = headers.get(OrdersClient.AUTHORIZATION);
            seen.add(v == null ? "<none>" : v);
            return next.startCall(call, headers);
          }
        };
    Server server =
        Grpc.newServerBuilderForPort(0, InsecureServerCredentials.create())
            .addService(
                ServerInterceptors.intercept(
                    new OrderQueriesGrpc.OrderQueriesImplBase() {
                      @Override
                      public void getOrder(
                          GetOrderRequest req, StreamObserver<GetOrderResponse> out) {
                        out.onNext(
                            GetOrderResponse.newBuilder()
                                .setOrder(Order.newBuilder().setOrderId(req.getOrderId()))
                                .build());
                        out.onCompleted();
                      }
                    },
                    record))
            .build()
            .start();
    String target = "127.0.0.1:" + server.getPort();
    ManagedChannel channel =
        token == null ? OrdersClient.channel(target) : OrdersClient.channel(target, token);
    try {
      for (int i = 0; i < 2; i++) {
        OrderQueriesGrpc.newBlockingStub(channel)
            .withDeadlineAfter(OrdersClient.DEADLINE_SECONDS, TimeUnit.SECONDS)
            .getOrder(GetOrderRequest.newBuilder().setOrderId("o-" + i).build());
      }
      return List.copyOf(seen);
    } finally {
      OrdersClient.close(channel);
      server.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  // Checked on a fake server: today's servers accept calls either way.
  @Test
  void channelSendsTheTokenAsBearer() throws Exception {
    String want = "Bearer token-for-the-test";
    assertEquals(List.of(want, want), authorizationSeen("token-for-the-test"));
  }

  @Test
  void channelWithoutTokenSendsNoAuthorization() throws Exception {
    assertEquals(List.of("<none>", "<none>"), authorizationSeen(""));
  }

  @Test
  void defaultChannelSendsOrdersToken() throws Exception {
    String token = OrdersClient.token();
    String want = token.isEmpty() ? "<none>" : "Bearer " + token;
    assertEquals(List.of(want, want), authorizationSeen(null));
  }
}
