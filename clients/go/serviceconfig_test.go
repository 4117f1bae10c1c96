package ordersclient

import (
	"context"
	"net"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "example.com/orders/clients/go/internal/ordersv1"
)

// flakyQueries answers UNAVAILABLE twice, then the order.
type flakyQueries struct {
	pb.UnimplementedOrderQueriesServer
	calls atomic.Int32
}

func (f *flakyQueries) GetOrder(_ context.Context, req *pb.GetOrderRequest) (*pb.GetOrderResponse, error) {
	if f.calls.Add(1) <= 2 {
		return nil, status.Error(codes.Unavailable, "not yet")
	}
	return &pb.GetOrderResponse{Order: &pb.Order{OrderId: req.GetOrderId()}}, nil
}

// The service config from proto/ is loaded: UNAVAILABLE is retried.
func TestServiceConfigRetriesUnavailable(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	fake := &flakyQueries{}
	pb.RegisterOrderQueriesServer(srv, fake)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	conn, err := Dial(lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	got := call(t, "GetOrder", func(ctx context.Context) (*pb.GetOrderResponse, error) {
		return pb.NewOrderQueriesClient(conn).GetOrder(ctx, &pb.GetOrderRequest{OrderId: "o-1"})
	})
	if got.GetOrder().GetOrderId() != "o-1" {
		t.Fatalf("GetOrder = %v", got)
	}
	if n := fake.calls.Load(); n != 3 {
		t.Fatalf("server saw %d attempts, want 3 (2 retried UNAVAILABLE)", n)
	}
}
