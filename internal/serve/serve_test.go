package serve_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/meridian-id/meridian/internal/serve"
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func ok() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
}

func get(addr string) error {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// TestRunFailureClosesEveryServer: when one server or task fails, Run
// returns its error and no listener is left serving.
func TestRunFailureClosesEveryServer(t *testing.T) {
	for name, fail := range map[string]func(net.Listener) serve.Task{
		"task fails": func(net.Listener) serve.Task {
			return func(context.Context) error { return errors.New("dns.listen: boom") }
		},
		"listener fails": func(l net.Listener) serve.Task {
			return func(ctx context.Context) error { l.Close(); <-ctx.Done(); return nil }
		},
	} {
		t.Run(name, func(t *testing.T) {
			pub, adm := listen(t), listen(t)
			done := make(chan error, 1)
			go func() {
				done <- serve.Run(context.Background(), []serve.Listener{
					{Server: serve.Public(ok()), Listener: pub},
					{Server: serve.Admin(ok(), func(context.Context) error { return nil }, "no"), Listener: adm},
				}, fail(adm))
			}()
			select {
			case err := <-done:
				if err == nil || errors.Is(err, http.ErrServerClosed) {
					t.Fatalf("Run = %v, want the failure", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return after a failure")
			}
			if err := get(pub.Addr().String()); err == nil {
				t.Fatal("public listener still serving after the other one failed")
			}
		})
	}
}

// TestRunDrainsOnCancel: cancelling the context shuts every server down
// and Run returns nil.
func TestRunDrainsOnCancel(t *testing.T) {
	pub := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve.Run(ctx, []serve.Listener{{Server: serve.Public(ok()), Listener: pub}}) }()
	deadline := time.Now().Add(10 * time.Second)
	for get(pub.Addr().String()) != nil {
		if time.Now().After(deadline) {
			t.Fatal("server never answered")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel = %v", err)
	}
	if err := get(pub.Addr().String()); err == nil {
		t.Fatal("still serving after shutdown")
	}
}
