// Package ordersclient is a small example client for the orders service.
//
// The stubs in internal/ordersv1 are generated from ../../proto by
// generate.sh and are not committed:
//
//go:generate bash generate.sh
package ordersclient

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// Env vars naming the servers and the bearer token, and the servers' defaults.
const (
	CommandAddrEnv     = "ORDERS_COMMAND_ADDR"
	QueryAddrEnv       = "ORDERS_QUERY_ADDR"
	TokenEnv           = "ORDERS_TOKEN"
	DefaultCommandAddr = "127.0.0.1:50051"
	DefaultQueryAddr   = "127.0.0.1:50052"
)

// CommandAddr is the order-command address from ORDERS_COMMAND_ADDR or the default.
func CommandAddr() string { return envOr(CommandAddrEnv, DefaultCommandAddr) }

// QueryAddr is the order-query address from ORDERS_QUERY_ADDR or the default.
func QueryAddr() string { return envOr(QueryAddrEnv, DefaultQueryAddr) }

// Token is the bearer token from ORDERS_TOKEN ("" when unset).
func Token() string { return os.Getenv(TokenEnv) }

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// ServiceConfigPath is proto/orders/v1/service_config.json of this checkout.
func ServiceConfigPath() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return filepath.Join("..", "..", "proto", "orders", "v1", "service_config.json")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "proto", "orders", "v1", "service_config.json")
}

// Dial opens a plaintext HTTP/2 client for addr with the shared service
// config (per-method timeouts, retries on UNAVAILABLE) that sends
// ORDERS_TOKEN as a bearer token on every call (none when it is unset).
// Connecting is lazy; every call still needs its own deadline
// (context.WithTimeout).
func Dial(addr string) (*grpc.ClientConn, error) { return DialWithToken(addr, Token()) }

// DialWithToken is Dial with an explicit token; "" sends no authorization
// header (for servers run with --auth=disabled).
func DialWithToken(addr, token string) (*grpc.ClientConn, error) {
	cfg, err := os.ReadFile(ServiceConfigPath())
	if err != nil {
		return nil, fmt.Errorf("reading the service config: %w", err)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(string(cfg)),
	}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken(token)))
	}
	return grpc.NewClient(addr, opts...)
}

// bearerToken is per-RPC credentials: `authorization: Bearer <token>` on
// every call.
type bearerToken string

func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

// RequireTransportSecurity is false: the dev stack is plaintext on loopback.
func (bearerToken) RequireTransportSecurity() bool { return false }

// BadRequest returns the google.rpc.BadRequest carried in err's rich status
// (the grpc-status-details-bin trailer), if any.
func BadRequest(err error) (*errdetails.BadRequest, error) {
	st, ok := status.FromError(err)
	if !ok {
		return nil, fmt.Errorf("not a gRPC status error: %w", err)
	}
	for _, d := range st.Details() {
		switch v := d.(type) {
		case *errdetails.BadRequest:
			return v, nil
		case error:
			return nil, fmt.Errorf("undecodable status detail: %w", v)
		}
	}
	return nil, errors.New("no google.rpc.BadRequest in the status details")
}
