package node_test

import (
	"fmt"
	"testing"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/internal/testenv"
	"github.com/meridian-id/meridian/region/node"
	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/region/store/mysql"
	"github.com/meridian-id/meridian/region/store/postgres"
	"github.com/meridian-id/meridian/region/store/sqlite"
)

// TestOpenStore: the database setting picks the backend, which comes back
// migrated and usable.
func TestOpenStore(t *testing.T) {
	tests := []struct {
		name     string
		database func(t *testing.T) string
		want     string
	}{
		{"sqlite", func(*testing.T) string { return "" }, fmt.Sprintf("%T", &sqlite.Store{})},
		{"postgres", func(t *testing.T) string { return testenv.PostgresSchema(t) }, fmt.Sprintf("%T", &postgres.Store{})},
		{"mysql", func(t *testing.T) string { return testenv.MySQLURL(t) }, fmt.Sprintf("%T", &mysql.Store{})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &config.Region{ID: "eu", Site: config.Site{Database: tt.database(t)}}
			s, err := node.OpenStore(t.Context(), r, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if got := fmt.Sprintf("%T", s); got != tt.want {
				t.Fatalf("OpenStore gave a %s, want a %s", got, tt.want)
			}
			if err := s.CreateUser(t.Context(), store.User{ID: "usr-1", Username: "ada"}); err != nil {
				t.Fatal(err)
			}
		})
	}
}
