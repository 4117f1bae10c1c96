package ordersclient

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "example.com/orders/clients/go/internal/ordersv1"
)

// deadline for every call; GetOrder with min_version waits server-side for at most 5 s.
const deadline = 10 * time.Second

// The golden flow against the live servers (scripts/dev up).

func newID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

type clients struct {
	cmd pb.OrderCommandsClient
	qry pb.OrderQueriesClient
}

func dial(t *testing.T) clients {
	t.Helper()
	conns := make([]*grpc.ClientConn, 0, 2)
	for _, addr := range []string{CommandAddr(), QueryAddr()} {
		conn, err := Dial(addr)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		t.Cleanup(func() { conn.Close() })
		conns = append(conns, conn)
	}
	return clients{cmd: pb.NewOrderCommandsClient(conns[0]), qry: pb.NewOrderQueriesClient(conns[1])}
}

// call runs f with a fresh context that has the deadline.
func call[T any](t *testing.T, what string, f func(ctx context.Context) (T, error)) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	v, err := f(ctx)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

func line(product string, qty uint32, price int64) *pb.OrderLine {
	return &pb.OrderLine{ProductId: product, Quantity: qty, UnitPriceMinor: price}
}

func ptr[T any](v T) *T { return &v }

func TestGoldenFlow(t *testing.T) {
	c := dial(t)
	customer := "go-" + newID()
	orderID := newID()

	placed := call(t, "PlaceOrder", func(ctx context.Context) (*pb.PlaceOrderResponse, error) {
		return c.cmd.PlaceOrder(ctx, &pb.PlaceOrderRequest{
			RequestId: newID(), OrderId: orderID, CustomerId: customer, CurrencyCode: "EUR",
			Lines: []*pb.OrderLine{line("sku-1", 2, 1250), line("sku-2", 1, 999)},
		})
	})
	if placed.GetOrderId() != orderID || placed.GetVersion() != 1 {
		t.Fatalf("PlaceOrder = %v, want order %s version 1", placed, orderID)
	}

	added := call(t, "AddOrderLine", func(ctx context.Context) (*pb.AddOrderLineResponse, error) {
		return c.cmd.AddOrderLine(ctx, &pb.AddOrderLineRequest{
			RequestId: newID(), OrderId: orderID, ExpectedVersion: ptr[uint64](1), Line: line("sku-3", 3, 500),
		})
	})
	if added.GetOrderId() != orderID || added.GetVersion() != 2 {
		t.Fatalf("AddOrderLine = %v, want version 2", added)
	}

	confirmed := call(t, "ConfirmOrder", func(ctx context.Context) (*pb.ConfirmOrderResponse, error) {
		return c.cmd.ConfirmOrder(ctx, &pb.ConfirmOrderRequest{RequestId: newID(), OrderId: orderID, ExpectedVersion: ptr[uint64](2)})
	})
	if confirmed.GetOrderId() != orderID || confirmed.GetVersion() != 3 {
		t.Fatalf("ConfirmOrder = %v, want version 3", confirmed)
	}

	waited := call(t, "GetOrder", func(ctx context.Context) (*pb.GetOrderResponse, error) {
		return c.qry.GetOrder(ctx, &pb.GetOrderRequest{OrderId: orderID, MinVersion: ptr[uint64](3)})
	})
	if v := waited.GetOrder().GetVersion(); v < 3 {
		t.Fatalf("GetOrder(min_version 3) = version %d", v)
	}
	// The order as it was at version 3: the fulfilment saga may already have
	// moved the confirmed order on.
	got := call(t, "GetOrder", func(ctx context.Context) (*pb.GetOrderResponse, error) {
		return c.qry.GetOrder(ctx, &pb.GetOrderRequest{OrderId: orderID, AsOfVersion: ptr[uint64](3)})
	})
	o := got.GetOrder()
	if o.GetOrderId() != orderID || o.GetCustomerId() != customer || o.GetCurrencyCode() != "EUR" || o.GetVersion() != 3 {
		t.Fatalf("GetOrder = %v", o)
	}
	if o.GetStatus() != pb.OrderStatus_ORDER_STATUS_CONFIRMED {
		t.Fatalf("status = %v, want CONFIRMED", o.GetStatus())
	}
	var lines []string
	for _, l := range o.GetLines() {
		lines = append(lines, fmt.Sprintf("%s x%d @%d", l.GetProductId(), l.GetQuantity(), l.GetUnitPriceMinor()))
	}
	if want := []string{"sku-1 x2 @1250", "sku-2 x1 @999", "sku-3 x3 @500"}; !slices.Equal(lines, want) {
		t.Fatalf("lines = %v, want %v", lines, want)
	}
	if want := int64(2*1250 + 999 + 3*500); o.GetTotalMinor() != want {
		t.Fatalf("total_minor = %d, want %d", o.GetTotalMinor(), want)
	}
	if got.GetFreshness().GetProjectedVersion() < 3 {
		t.Fatalf("freshness = %v, want projected_version >= 3", got.GetFreshness())
	}

	listed := call(t, "ListOrders", func(ctx context.Context) (*pb.ListOrdersResponse, error) {
		return c.qry.ListOrders(ctx, &pb.ListOrdersRequest{CustomerId: ptr(customer), PageSize: 10})
	})
	found := false
	for _, lo := range listed.GetOrders() {
		if lo.GetCustomerId() != customer {
			t.Fatalf("ListOrders returned another customer's order: %v", lo)
		}
		found = found || lo.GetOrderId() == orderID
	}
	if !found {
		t.Fatalf("ListOrders(customer %s) = %v, missing %s", customer, listed.GetOrders(), orderID)
	}

	history := call(t, "GetOrderHistory", func(ctx context.Context) (*pb.GetOrderHistoryResponse, error) {
		// The first three events (the saga may have added more since).
		return c.qry.GetOrderHistory(ctx, &pb.GetOrderHistoryRequest{OrderId: orderID, PageSize: 3})
	})
	var kinds []string
	for i, e := range history.GetEvents() {
		if e.GetOrderId() != orderID || e.GetVersion() != uint64(i+1) {
			t.Fatalf("event %d = %v, want order %s version %d", i, e, orderID, i+1)
		}
		switch e.GetEvent().(type) {
		case *pb.OrderEvent_OrderPlaced:
			kinds = append(kinds, "orderPlaced")
		case *pb.OrderEvent_OrderLineAdded:
			kinds = append(kinds, "orderLineAdded")
		case *pb.OrderEvent_OrderConfirmed:
			kinds = append(kinds, "orderConfirmed")
		default:
			kinds = append(kinds, fmt.Sprintf("%T", e.GetEvent()))
		}
	}
	if want := []string{"orderPlaced", "orderLineAdded", "orderConfirmed"}; !slices.Equal(kinds, want) {
		t.Fatalf("history = %v, want %v", kinds, want)
	}
	if p := history.GetEvents()[1].GetOrderLineAdded().GetLine().GetProductId(); p != "sku-3" {
		t.Fatalf("orderLineAdded product = %q, want sku-3", p)
	}
}

func TestPlaceAndCancel(t *testing.T) {
	c := dial(t)
	placed := call(t, "PlaceOrder", func(ctx context.Context) (*pb.PlaceOrderResponse, error) {
		// No order_id: the server generates one.
		return c.cmd.PlaceOrder(ctx, &pb.PlaceOrderRequest{
			RequestId: newID(), CustomerId: "go-" + newID(), CurrencyCode: "EUR",
			Lines: []*pb.OrderLine{line("sku-9", 1, 4200)},
		})
	})
	if placed.GetOrderId() == "" || placed.GetVersion() != 1 {
		t.Fatalf("PlaceOrder = %v, want a generated order id and version 1", placed)
	}
	const reason = "customer changed their mind"
	cancelled := call(t, "CancelOrder", func(ctx context.Context) (*pb.CancelOrderResponse, error) {
		return c.cmd.CancelOrder(ctx, &pb.CancelOrderRequest{RequestId: newID(), OrderId: placed.GetOrderId(), Reason: reason})
	})
	if cancelled.GetOrderId() != placed.GetOrderId() || cancelled.GetVersion() != 2 {
		t.Fatalf("CancelOrder = %v, want version 2", cancelled)
	}
	got := call(t, "GetOrder", func(ctx context.Context) (*pb.GetOrderResponse, error) {
		return c.qry.GetOrder(ctx, &pb.GetOrderRequest{OrderId: placed.GetOrderId(), MinVersion: ptr[uint64](2)})
	})
	o := got.GetOrder()
	if o.GetStatus() != pb.OrderStatus_ORDER_STATUS_CANCELLED || o.GetCancelReason() != reason || o.GetVersion() != 2 {
		t.Fatalf("GetOrder = %v, want CANCELLED with reason %q at version 2", o, reason)
	}
}

func TestRetryWithTheSameRequestIDAppendsNothing(t *testing.T) {
	c := dial(t)
	req := &pb.PlaceOrderRequest{
		RequestId: newID(), OrderId: newID(), CustomerId: "go-" + newID(), CurrencyCode: "USD",
		Lines: []*pb.OrderLine{line("sku-1", 1, 100)},
	}
	for i := 0; i < 2; i++ {
		r := call(t, "PlaceOrder", func(ctx context.Context) (*pb.PlaceOrderResponse, error) { return c.cmd.PlaceOrder(ctx, req) })
		if r.GetOrderId() != req.GetOrderId() || r.GetVersion() != 1 {
			t.Fatalf("PlaceOrder attempt %d = %v, want order %s version 1", i+1, r, req.GetOrderId())
		}
	}
}

func TestInvalidRequestCarriesBadRequestDetails(t *testing.T) {
	c := dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	_, err := c.cmd.PlaceOrder(ctx, &pb.PlaceOrderRequest{
		RequestId: newID(), CustomerId: "go-" + newID(), CurrencyCode: "eur",
		Lines: []*pb.OrderLine{line("sku-1", 0, 100)},
	})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("PlaceOrder error = %v, want INVALID_ARGUMENT", err)
	}
	br, derr := BadRequest(err)
	if derr != nil {
		t.Fatalf("decoding the rich status of %v: %v", err, derr)
	}
	fields := map[string]string{}
	for _, v := range br.GetFieldViolations() {
		fields[v.GetField()] = v.GetDescription()
	}
	for _, f := range []string{"currency_code", "lines[0].quantity"} {
		if fields[f] == "" {
			t.Errorf("no field violation for %s in %v", f, fields)
		}
	}
}

// watched is one WatchOrder message as "version STATUS", with " coalesced" when set.
func watched(m *pb.WatchOrderResponse) string {
	s := fmt.Sprintf("%d %s", m.GetOrder().GetVersion(), m.GetOrder().GetStatus())
	if m.GetCoalesced() {
		s += " coalesced"
	}
	return s
}

// readToEnd appends the rest of a WatchOrder stream to got; it fails unless
// the stream ends with OK (io.EOF), not an error or the deadline.
func readToEnd(t *testing.T, stream grpc.ServerStreamingClient[pb.WatchOrderResponse], got []*pb.WatchOrderResponse) []*pb.WatchOrderResponse {
	t.Helper()
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return got
		}
		if err != nil {
			var seen []string
			for _, g := range got {
				seen = append(seen, watched(g))
			}
			t.Fatalf("WatchOrder ended with %v after %q", err, seen)
		}
		got = append(got, m)
	}
}

func TestWatchOrderStreamsEachVersionUntilCancelled(t *testing.T) {
	c := dial(t)
	orderID := newID()
	placed := call(t, "PlaceOrder", func(ctx context.Context) (*pb.PlaceOrderResponse, error) {
		return c.cmd.PlaceOrder(ctx, &pb.PlaceOrderRequest{
			RequestId: newID(), OrderId: orderID, CustomerId: "go-" + newID(), CurrencyCode: "EUR",
			Lines: []*pb.OrderLine{line("sku-1", 2, 1250), line("sku-2", 1, 999)},
		})
	})
	if placed.GetOrderId() != orderID || placed.GetVersion() != 1 {
		t.Fatalf("PlaceOrder = %v, want order %s version 1", placed, orderID)
	}

	// Watch from version 1 before the further commands; reading the first
	// message shows the stream is being served, so versions 2-3 arrive live.
	// (The order is cancelled, not confirmed: a confirmed order belongs to
	// the fulfilment saga.)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	stream, err := c.qry.WatchOrder(ctx, &pb.WatchOrderRequest{OrderId: orderID, FromVersion: 1})
	if err != nil {
		t.Fatalf("WatchOrder: %v", err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatalf("WatchOrder ended with %v before its first message", err)
	}
	if got, want := watched(first), "1 ORDER_STATUS_PLACED"; got != want {
		t.Fatalf("first message = %q, want %q", got, want)
	}

	reason := "changed my mind"
	added := call(t, "AddOrderLine", func(ctx context.Context) (*pb.AddOrderLineResponse, error) {
		return c.cmd.AddOrderLine(ctx, &pb.AddOrderLineRequest{
			RequestId: newID(), OrderId: orderID, ExpectedVersion: ptr[uint64](1), Line: line("sku-3", 3, 500),
		})
	})
	if added.GetOrderId() != orderID || added.GetVersion() != 2 {
		t.Fatalf("AddOrderLine = %v, want version 2", added)
	}
	cancelled := call(t, "CancelOrder", func(ctx context.Context) (*pb.CancelOrderResponse, error) {
		return c.cmd.CancelOrder(ctx, &pb.CancelOrderRequest{
			RequestId: newID(), OrderId: orderID, ExpectedVersion: ptr[uint64](2), Reason: reason,
		})
	})
	if cancelled.GetOrderId() != orderID || cancelled.GetVersion() != 3 {
		t.Fatalf("CancelOrder = %v, want version 3", cancelled)
	}

	// The stream ends by itself (OK) once the order is CANCELLED.
	got := readToEnd(t, stream, []*pb.WatchOrderResponse{first})
	var summary, reasons []string
	var lineCounts []int
	for _, m := range got {
		summary = append(summary, watched(m))
		reasons = append(reasons, m.GetOrder().GetCancelReason())
		lineCounts = append(lineCounts, len(m.GetOrder().GetLines()))
		if m.GetOrder().GetOrderId() != orderID {
			t.Errorf("message for order %q, want %s", m.GetOrder().GetOrderId(), orderID)
		}
		if m.GetFreshness().GetProjectedVersion() < m.GetOrder().GetVersion() {
			t.Errorf("version %d with freshness %v: projected_version below it", m.GetOrder().GetVersion(), m.GetFreshness())
		}
	}
	want := []string{
		"1 ORDER_STATUS_PLACED",
		"2 ORDER_STATUS_PLACED", // a line added leaves the order PLACED
		"3 ORDER_STATUS_CANCELLED",
	}
	if !slices.Equal(summary, want) {
		t.Fatalf("WatchOrder sent %q, want %q", summary, want)
	}
	if want := []int{2, 3, 3}; !slices.Equal(lineCounts, want) {
		t.Errorf("line counts = %v, want %v", lineCounts, want)
	}
	if want := []string{"", "", reason}; !slices.Equal(reasons, want) {
		t.Errorf("cancel reasons = %q, want %q", reasons, want)
	}

	// Resume: from version 2 on the cancelled order, versions 2 and 3, then the end.
	rctx, rcancel := context.WithTimeout(context.Background(), deadline)
	defer rcancel()
	resume, err := c.qry.WatchOrder(rctx, &pb.WatchOrderRequest{OrderId: orderID, FromVersion: 2})
	if err != nil {
		t.Fatalf("WatchOrder from version 2: %v", err)
	}
	resumed := readToEnd(t, resume, nil)
	summary = summary[:0]
	for _, m := range resumed {
		summary = append(summary, watched(m))
	}
	if want := []string{"2 ORDER_STATUS_PLACED", "3 ORDER_STATUS_CANCELLED"}; !slices.Equal(summary, want) {
		t.Fatalf("WatchOrder from version 2 sent %q, want %q", summary, want)
	}
	if r := resumed[1].GetOrder().GetCancelReason(); r != reason {
		t.Errorf("resumed cancel reason = %q, want %q", r, reason)
	}
}
