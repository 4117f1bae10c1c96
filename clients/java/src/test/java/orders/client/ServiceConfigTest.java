package orders.client;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.grpc.Grpc;
import io.grpc.InsecureServerCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Server;
import io.grpc.Status;
import io.grpc.stub.StreamObserver;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import orders.v1.OrderQueriesGrpc;
import orders.v1.Queries.GetOrderRequest;
import orders.v1.Queries.GetOrderResponse;
import orders.v1.Queries.Order;
import org.junit.jupiter.api.Test;

/** The service config from proto/ is loaded: UNAVAILABLE is retried. */
class ServiceConfigTest {
  @Test
  void unavailableIsRetried() throws Exception {
    AtomicInteger calls = new AtomicInteger();
    Server server =
        Grpc.newServerBuilderForPort(0, InsecureServerCredentials.create())
            .addService(
                new OrderQueriesGrpc.OrderQueriesImplBase() {
                  @Override
                  public void getOrder(
                      GetOrderRequest req, StreamObserver<GetOrderResponse> out) {
                    if (calls.incrementAndGet() <= 2) {
                      out.onError(Status.UNAVAILABLE.withDescription("not yet").asRuntimeException());
                      return;
                    }
                    out.onNext(
                        GetOrderResponse.newBuilder()
                            .setOrder(Order.newBuilder().setOrderId(req.getOrderId()))
                            .build());
                    out.onCompleted();
                  }
                })
            .build()
            .start();
    ManagedChannel channel = OrdersClient.channel("127.0.0.1:" + server.getPort());
    try {
      GetOrderResponse got =
          OrderQueriesGrpc.newBlockingStub(channel)
              .withDeadlineAfter(OrdersClient.DEADLINE_SECONDS, TimeUnit.SECONDS)
              .getOrder(GetOrderRequest.newBuilder().setOrderId("o-1").build());
      assertEquals("o-1", got.getOrder().getOrderId());
      assertEquals(3, calls.get(), "attempts seen by the server (2 retried UNAVAILABLE)");
    } finally {
      OrdersClient.close(channel);
      server.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }
}
