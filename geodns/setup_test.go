package geodns

import (
	"testing"

	"github.com/meridian-id/meridian/config"
)

func TestFromExampleConfig(t *testing.T) {
	c, err := config.Load("../configs/regions.yaml")
	if err != nil {
		t.Fatal(err)
	}
	g, err := FromConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	if g.Zone != "id.localhost." || len(g.Regions) != 3 || g.Regions[0].DR == nil || g.Regions[0].HealthURL != "http://127.0.0.11:8080/readyz" {
		t.Fatalf("derived config: %+v", g)
	}
}
