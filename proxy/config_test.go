package proxy

import (
	"errors"
	"testing"

	"github.com/seed722d2a70/meshproxy/config"
)

// A mistake that only building the policy or the destination table finds
// is reported by New, before Run would wait (perhaps for ever) for an
// identity.
func TestNewRejectsWhatRunWouldBuild(t *testing.T) {
	for _, tt := range []struct {
		name string
		edit func(*config.Config)
	}{
		{"inbound authorization", func(c *config.Config) { c.Inbound.Authorize = []string{"spiffe://"} }},
		{"destination identity", func(c *config.Config) {
			c.Destinations = []config.Destination{{Match: "10.0.0.1", Identity: []string{"spiffe://Bad.Domain/x"}}}
		}},
		{"destination match", func(c *config.Config) {
			c.Destinations = []config.Destination{{Match: "10.0.0.0/33"}}
		}},
		{"listener target port", func(c *config.Config) {
			c.Outbound.Listeners = []config.Listener{{Listen: "127.0.0.1:0", Target: "redis:0"}}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Identity.SPIFFESocket = "unix:///nonexistent/agent.sock" // would wait for ever
			tt.edit(&cfg)
			if _, err := New(cfg, Options{}); !errors.Is(err, config.ErrInvalid) {
				t.Errorf("New: %v, want ErrInvalid", err)
			}
		})
	}
	if _, err := New(config.Default(), Options{}); err != nil {
		t.Errorf("New with the defaults: %v", err)
	}
}
