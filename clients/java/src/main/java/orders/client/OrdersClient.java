package orders.client;

import com.google.gson.Gson;
import com.google.gson.reflect.TypeToken;
import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.BadRequest;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.protobuf.StatusProto;
import io.grpc.stub.MetadataUtils;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.TimeUnit;

/**
 * A small client for the orders service: plaintext channels that load the shared service config
 * ({@code proto/orders/v1/service_config.json}: per-method timeouts, retries on UNAVAILABLE), and
 * rich-error decoding.
 *
 * <p>Addresses come from {@code ORDERS_COMMAND_ADDR} (default 127.0.0.1:50051) and {@code
 * ORDERS_QUERY_ADDR} (default 127.0.0.1:50052). Callers set a deadline on every call ({@code
 * stub.withDeadlineAfter(...)}).
 *
 * <p>When {@code ORDERS_TOKEN} is set, every call on a channel from {@link #channel(String)}
 * carries the metadata {@code authorization: Bearer $ORDERS_TOKEN}; unset or empty, no
 * authorization header is sent (for servers run with {@code --auth=disabled}).
 */
public final class OrdersClient {
  /** Per-call deadline; GetOrder with min_version waits server-side for at most 5 s. */
  public static final long DEADLINE_SECONDS = 10;

  private OrdersClient() {}

  public static String commandAddr() {
    return env("ORDERS_COMMAND_ADDR", "127.0.0.1:50051");
  }

  public static String queryAddr() {
    return env("ORDERS_QUERY_ADDR", "127.0.0.1:50052");
  }

  /** The bearer token from ORDERS_TOKEN, or "" when it is unset. */
  public static String token() {
    return env("ORDERS_TOKEN", "");
  }

  static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

  private static String env(String key, String def) {
    String v = System.getenv(key);
    return v == null || v.isEmpty() ? def : v;
  }

  /** proto/orders/v1/service_config.json, from ORDERS_PROTO_ROOT or ../../proto. */
  public static Path serviceConfigPath() {
    Path root = Path.of(env("ORDERS_PROTO_ROOT", Path.of("..", "..", "proto").toString()));
    return root.resolve(Path.of("orders", "v1", "service_config.json"));
  }

  /** The service config as the nested Map/List/String/Double/Boolean values grpc-java takes. */
  public static Map<String, ?> serviceConfig() throws IOException {
    String json = Files.readString(serviceConfigPath(), StandardCharsets.UTF_8);
    // Gson maps JSON objects to Map, arrays to List and numbers to Double, as grpc-java expects.
    return new Gson().fromJson(json, new TypeToken<Map<String, Object>>() {}.getType());
  }

  /**
   * A plaintext channel to target with the service config loaded and retries on, sending
   * ORDERS_TOKEN as a bearer token on every call (none when it is unset).
   */
  public static ManagedChannel channel(String target) throws IOException {
    return channel(target, token());
  }

  /**
   * {@link #channel(String)} with an explicit token; null or "" sends no authorization header.
   * The header is added by a channel-wide {@code ClientInterceptor} rather than {@code
   * CallCredentials}, which grpc-java sets per stub.
   */
  public static ManagedChannel channel(String target, String token) throws IOException {
    ManagedChannelBuilder<?> builder =
        ManagedChannelBuilder.forTarget(target)
            .usePlaintext()
            .defaultServiceConfig(serviceConfig())
            .enableRetry();
    if (token != null && !token.isEmpty()) {
      Metadata headers = new Metadata();
      headers.put(AUTHORIZATION, "Bearer " + token);
      builder.intercept(MetadataUtils.newAttachHeadersInterceptor(headers));
    }
    return builder.build();
  }

  /** Shuts a channel down, waiting a bounded time. */
  public static void close(ManagedChannel channel) throws InterruptedException {
    channel.shutdown();
    if (!channel.awaitTermination(5, TimeUnit.SECONDS)) {
      channel.shutdownNow();
    }
  }

  /**
   * The google.rpc.BadRequest in an RPC failure's rich status (the grpc-status-details-bin
   * trailer), if any.
   */
  public static Optional<BadRequest> badRequest(Throwable t) throws InvalidProtocolBufferException {
    com.google.rpc.Status status = StatusProto.fromThrowable(t);
    if (status == null) {
      return Optional.empty();
    }
    for (Any detail : status.getDetailsList()) {
      if (detail.is(BadRequest.class)) {
        return Optional.of(detail.unpack(BadRequest.class));
      }
    }
    return Optional.empty();
  }
}
