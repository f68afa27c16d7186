package httpapi

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDashboardQueriesRealMetrics checks that every metric the shipped
// Grafana dashboard queries is exported by a real appliance.
func TestDashboardQueriesRealMetrics(t *testing.T) {
	raw, err := os.ReadFile("../../monitoring/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	// A real run: a device registers, then the metrics are scraped.
	e := newDeviceEnv(t, false)
	model := e.modelAssertion("line-1")
	rid := e.requestID("line-a")
	if code, _, raw := e.call("line-a", "POST", "/v1/serial", "application/x.ubuntu.assertion",
		stream(newDevice(t).serialRequest(t, rid, "line-1", "DASH-1", nil), model), nil); code != 200 {
		t.Fatalf("serial: %d %s", code, raw)
	}
	_, _, scrape := e.call("", "GET", "/metrics", "", nil, nil)
	exported := string(scrape)
	names := regexp.MustCompile(`keyrack_[a-z0-9_]+`)
	n := 0
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			for _, name := range names.FindAllString(tg.Expr, -1) {
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
				if !strings.Contains(exported, "# TYPE "+base+" ") {
					t.Errorf("panel %q queries %s, which the appliance does not export", p.Title, name)
				}
				n++
			}
		}
	}
	if n < 10 {
		t.Fatalf("only %d metric references in the dashboard", n)
	}
}
