package geodns

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// State is the operator's view of the checker, as served by
// [Checker.AdminHandler] at GET /dns/state.
type State struct {
	Regions []RegionState `json:"regions"`
}

// RegionState is one region: whether it is failed over to its DR site, and
// the health of each checked address.
type RegionState struct {
	Region     string         `json:"region"`
	HasDR      bool           `json:"has_dr"`
	FailedOver bool           `json:"failed_over"`
	Addresses  []AddressState `json:"addresses"`
}

// AddressState is one checked address of a site.
type AddressState struct {
	Site    string `json:"site"` // primary | dr
	Address string `json:"address"`
	Up      bool   `json:"up"`
}

// State returns the current health and failover state, regions in
// configuration order.
func (c *Checker) State() State {
	snap := c.Snapshot()
	st := State{Regions: make([]RegionState, 0, len(c.regions))}
	for _, id := range c.regions {
		rs := RegionState{Region: id, FailedOver: snap.FailedOver(id), Addresses: []AddressState{}}
		for _, l := range c.latches {
			rs.HasDR = rs.HasDR || l.id == id
		}
		for _, t := range c.targets {
			if t.up.Region == id {
				rs.Addresses = append(rs.Addresses, AddressState{Site: t.up.site(), Address: t.up.Addr.String(), Up: snap.Up(t.up)})
			}
		}
		st.Regions = append(st.Regions, rs)
	}
	return st
}

// AdminHandler serves the operator endpoints. Mount it on an admin listener
// only (loopback or a management network): it has no authentication of its
// own.
//
//   - GET /dns/state: [State] as JSON.
//   - POST /dns/failback/{region}: [Checker.Failback]; 200 with the region's
//     new state, 404 for a region without a DR site, 409 when it is not
//     failed over or no primary address is up, 500 when the state file
//     could not be written. The request must carry Content-Type
//     application/json (an empty body is fine): a web page cannot send
//     that cross-origin without a CORS preflight, which is never granted,
//     so a browser on the operator's machine cannot be made to fail a
//     region back.
func (c *Checker) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /dns/state", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, c.State())
	})
	mux.HandleFunc("POST /dns/failback/{region}", func(w http.ResponseWriter, r *http.Request) {
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
			writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"error": "Content-Type must be application/json"})
			return
		}
		region := r.PathValue("region")
		err := c.Failback(r.Context(), region)
		switch {
		case err == nil:
			for _, rs := range c.State().Regions {
				if rs.Region == region {
					writeJSON(w, http.StatusOK, rs)
					return
				}
			}
			writeJSON(w, http.StatusOK, map[string]string{"region": region})
		case errors.Is(err, ErrUnknownRegion):
			writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
		case errors.Is(err, ErrNotFailedOver), errors.Is(err, ErrPrimaryDown):
			writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
		default:
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		}
	})
	return mux
}

// AdminHandler is the health checker's [Checker.AdminHandler].
func (s *Server) AdminHandler() http.Handler { return s.health.AdminHandler() }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// RequestFailback asks the GeoDNS admin endpoint at base (for example
// "http://127.0.0.1:9053") to fail region back to its primary, and returns
// the server's error message when it refuses. client nil means
// http.DefaultClient. It is what `geodns failback` runs; a hub serving DNS
// mounts the same [Server.AdminHandler] on its admin listener.
func RequestFailback(ctx context.Context, client *http.Client, base, region string) (RegionState, error) {
	if client == nil {
		client = http.DefaultClient
	}
	u := strings.TrimSuffix(base, "/") + "/dns/failback/" + url.PathEscape(region)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return RegionState{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return RegionState{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return RegionState{}, err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return RegionState{}, fmt.Errorf("failback %s: %s (HTTP %d)", region, e.Error, resp.StatusCode)
		}
		return RegionState{}, fmt.Errorf("failback %s: HTTP %d", region, resp.StatusCode)
	}
	var rs RegionState
	if err := json.Unmarshal(body, &rs); err != nil {
		return RegionState{}, fmt.Errorf("failback %s: reply: %w", region, err)
	}
	return rs, nil
}
