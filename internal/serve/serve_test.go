package serve_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
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

// TestRunDrainFailsReadinessFirst: after the context ends, /readyz on the
// public and the admin listener answers 503 "draining" while every other
// request is still served; when the drain period is over, the listeners
// close.
func TestRunDrainFailsReadinessFirst(t *testing.T) {
	pub, adm := listen(t), listen(t)
	readyz := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok " + r.URL.Path))
	})
	ctx, cancel := context.WithCancel(context.Background())
	taskDone := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- serve.RunDrain(ctx, 2*time.Second, []serve.Listener{
			{Server: serve.Public(readyz), Listener: pub},
			{Server: serve.Admin(ok(), func(context.Context) error { return nil }, "no"), Listener: adm},
		}, func(tctx context.Context) error { <-tctx.Done(); close(taskDone); return nil })
	}()
	c := &http.Client{Timeout: 2 * time.Second}
	status := func(addr, path string) (int, string, error) {
		resp, err := c.Get("http://" + addr + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	for _, l := range []net.Listener{pub, adm} {
		if code, _, err := status(l.Addr().String(), "/readyz"); err != nil || code != http.StatusOK {
			t.Fatalf("before the drain: /readyz %d %v", code, err)
		}
	}
	// A caller's keep-alive connection, idle when the drain starts.
	kc := &http.Client{Transport: &http.Transport{}, Timeout: 2 * time.Second}
	kcall := func() (*http.Response, bool) {
		reused := false
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+pub.Addr().String()+"/oauth/token", strings.NewReader("x=1"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := kc.Do(req)
		if err != nil {
			t.Fatalf("call on a keep-alive connection: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp, reused
	}
	if resp, _ := kcall(); resp.Header.Get(serve.DrainingHeader) != "" || resp.Close {
		t.Fatalf("before the drain: %s %q, close %v", serve.DrainingHeader, resp.Header.Get(serve.DrainingHeader), resp.Close)
	}
	cancel()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body, err := status(pub.Addr().String(), "/readyz")
		if err != nil {
			t.Fatalf("public /readyz during the drain: %v", err)
		}
		if code == http.StatusServiceUnavailable && strings.TrimSpace(body) == serve.DrainingText {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("public /readyz still %d %q after cancel", code, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, body, err := status(adm.Addr().String(), "/readyz"); err != nil || code != http.StatusServiceUnavailable || strings.TrimSpace(body) != serve.DrainingText {
		t.Fatalf("admin /readyz during the drain: %d %q %v", code, body, err)
	}
	if code, body, err := status(pub.Addr().String(), "/authorize"); err != nil || code != http.StatusOK || body != "ok /authorize" {
		t.Fatalf("public request during the drain: %d %q %v", code, body, err)
	}
	// The idle connection was not closed under the caller (a call sent on
	// it at that moment would fail, and a code redemption is never
	// repeated): it carries the call, whose answer says the node drains
	// and closes it.
	if resp, reused := kcall(); !reused || resp.StatusCode != http.StatusOK || resp.Header.Get(serve.DrainingHeader) != "1" || !resp.Close {
		t.Fatalf("call on the connection idle at the drain's start: reused %v, status %d, %s %q, close %v",
			reused, resp.StatusCode, serve.DrainingHeader, resp.Header.Get(serve.DrainingHeader), resp.Close)
	}
	if code, _, err := status(adm.Addr().String(), "/healthz"); err != nil || code != http.StatusOK {
		t.Fatalf("admin /healthz during the drain: %d %v", code, err)
	}
	select {
	case <-taskDone:
		t.Fatal("a task was cancelled before the drain period ended")
	default:
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("RunDrain = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("RunDrain did not return after the drain period")
	}
	<-taskDone
	for _, l := range []net.Listener{pub, adm} {
		if _, _, err := status(l.Addr().String(), "/healthz"); err == nil {
			t.Fatalf("%s still serves after the drain", l.Addr())
		}
	}
}
