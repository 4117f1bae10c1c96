package ordersclient

import (
	"context"
	"net"
	"os"
	"slices"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "example.com/orders/clients/go/internal/ordersv1"
)

// authEnforced reads ORDERS_AUTH_ENFORCED: "1" when the servers require a
// token (scripts/clients sets it by default), "0" or unset when they do not.
func authEnforced(t *testing.T) bool {
	t.Helper()
	switch v := os.Getenv("ORDERS_AUTH_ENFORCED"); v {
	case "1":
		return true
	case "", "0":
		return false
	default:
		t.Fatalf("ORDERS_AUTH_ENFORCED must be 0 or 1, not %q", v)
		return false
	}
}

// A call without the token is refused once the servers enforce auth.
func TestCallWithoutTokenIsUnauthenticated(t *testing.T) {
	if !authEnforced(t) {
		t.Skip("ORDERS_AUTH_ENFORCED is not 1 (servers not expected to enforce auth)")
	}
	conn, err := DialWithToken(QueryAddr(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	// A call that succeeds on a server without auth: it must be refused here.
	got, err := pb.NewOrderQueriesClient(conn).ListOrders(ctx, &pb.ListOrdersRequest{CustomerId: ptr("go-" + newID()), PageSize: 1})
	if err == nil {
		t.Fatalf("ListOrders without a token succeeded (%d orders): auth not enforced", len(got.GetOrders()))
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("ListOrders without a token: %v, want UNAUTHENTICATED", err)
	}
}

// recordingQueries records each call's authorization header ("<none>" when absent).
type recordingQueries struct {
	pb.UnimplementedOrderQueriesServer
	mu            sync.Mutex
	authorization []string
}

func (r *recordingQueries) GetOrder(ctx context.Context, req *pb.GetOrderRequest) (*pb.GetOrderResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	got := md.Get("authorization")
	if len(got) == 0 {
		got = []string{"<none>"}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.authorization = append(r.authorization, got...)
	return &pb.GetOrderResponse{Order: &pb.Order{OrderId: req.GetOrderId()}}, nil
}

// Dial sends `authorization: Bearer $ORDERS_TOKEN`, and no header when it is
// unset (checked on a fake server: today's servers accept calls either way).
func TestDialSendsOrdersTokenAsBearer(t *testing.T) {
	for _, tc := range []struct{ token, want string }{
		{"token-for-the-test", "Bearer token-for-the-test"},
		{"", "<none>"},
	} {
		t.Run("ORDERS_TOKEN="+tc.token, func(t *testing.T) {
			t.Setenv(TokenEnv, tc.token)
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := grpc.NewServer()
			fake := &recordingQueries{}
			pb.RegisterOrderQueriesServer(srv, fake)
			go func() { _ = srv.Serve(lis) }()
			t.Cleanup(srv.Stop)

			conn, err := Dial(lis.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			for range 2 {
				call(t, "GetOrder", func(ctx context.Context) (*pb.GetOrderResponse, error) {
					return pb.NewOrderQueriesClient(conn).GetOrder(ctx, &pb.GetOrderRequest{OrderId: "o-1"})
				})
			}
			fake.mu.Lock()
			defer fake.mu.Unlock()
			if want := []string{tc.want, tc.want}; !slices.Equal(fake.authorization, want) {
				t.Fatalf("authorization headers seen = %q, want %q", fake.authorization, want)
			}
		})
	}
}
