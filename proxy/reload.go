package proxy

import (
	"context"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/outbound"
)

// watchDestinations re-reads the config file when it changes and swaps in
// the new destination table. Established connections keep the route they
// were given; new ones use the new table. A bad file keeps the old table.
// Other settings need a restart, which the log says.
func (p *Proxy) watchDestinations(ctx context.Context, router *outbound.Router, clientTLS outbound.TLSFunc) {
	path := p.cfg.Path
	w, err := fsnotify.NewWatcher()
	if err != nil {
		p.log.Error("cannot watch the config file; destinations will not reload", zap.Error(err))
		return
	}
	defer w.Close()
	// Watch the directory: editors and ConfigMap mounts replace the file
	// by rename, which a watch on the file itself would lose.
	if err := w.Add(filepath.Dir(path)); err != nil {
		p.log.Error("cannot watch the config file; destinations will not reload", zap.Error(err))
		return
	}
	var debounce <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if filepath.Clean(ev.Name) == filepath.Clean(path) || filepath.Base(ev.Name) == "..data" {
				debounce = time.After(100 * time.Millisecond)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			p.log.Warn("config watch error", zap.Error(err))
		case <-debounce:
			p.reloadDestinations(router, clientTLS)
		}
	}
}

func (p *Proxy) reloadDestinations(router *outbound.Router, clientTLS outbound.TLSFunc) {
	cfg, err := config.LoadFile(p.cfg.Path)
	if err != nil {
		p.log.Error("config reload failed; keeping the current destinations", zap.Error(err))
		return
	}
	// Only the destinations reload; the opaque-port default, the meshed
	// networks and the unmeshed policy may come from flags or the
	// environment, so they keep their start values and are applied again
	// under the new entries.
	table, err := outbound.NewTable(cfg.Destinations, p.cfg.MeshedNetworks, p.cfg.OpaquePorts, p.cfg.Outbound.RefuseUnmeshed, clientTLS)
	if err != nil {
		p.log.Error("config reload failed; keeping the current destinations", zap.Error(err))
		return
	}
	router.Swap(table)
	p.log.Info("destinations reloaded", zap.Int("destinations", len(cfg.Destinations)))
}
