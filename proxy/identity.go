package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"go.uber.org/zap"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/identity"
	"github.com/seed722d2a70/meshproxy/internal/header"
	"github.com/seed722d2a70/meshproxy/outbound"
)

type tlsAuthorizer = tlsconfig.Authorizer

// NewIdentitySource builds the configured identity source (for the proxy,
// and for the destination controller, which has an SVID of its own): the Workload API
// when a socket is set, else PEM files when a certificate is set, else the
// embedded dev CA.
func NewIdentitySource(ctx context.Context, c config.Identity, log *zap.Logger, reg prometheus.Registerer) (identity.Source, error) {
	m, err := identity.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	switch {
	case c.SPIFFESocket != "":
		log.Info("identity from the SPIFFE Workload API", zap.String("socket", c.SPIFFESocket))
		return identity.NewWorkloadAPISource(ctx, c.SPIFFESocket, log, m)
	case c.CertFile != "" || c.KeyFile != "":
		log.Info("identity from files", zap.String("cert", c.CertFile), zap.String("key", c.KeyFile), zap.String("bundle", c.BundleFile))
		return identity.NewFileSource(identity.FileOptions{CertFile: c.CertFile, KeyFile: c.KeyFile, BundleFile: c.BundleFile}, log, m)
	}
	td, err := spiffeid.TrustDomainFromString(c.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("trust domain: %w", err)
	}
	id := c.ID
	if id == "" {
		id = "spiffe://" + td.Name() + "/meshproxy"
	}
	sid, err := spiffeid.FromString(id)
	if err != nil {
		return nil, fmt.Errorf("identity ID: %w", err)
	}
	ca, err := devCA(c, td, log)
	if err != nil {
		return nil, err
	}
	log.Info("identity from the embedded dev CA", zap.String("spiffe_id", sid.String()), zap.Duration("svid_ttl", c.SVIDTTL))
	return identity.NewDevSource(ca, sid, c.SVIDTTL, log, m)
}

// devCA loads the dev CA that `meshproxy ca init` wrote, or, when there is
// none, makes one in memory: enough for a single proxy, but peers will not
// trust it, so say so.
func devCA(c config.Identity, td spiffeid.TrustDomain, log *zap.Logger) (*identity.CA, error) {
	dir := c.CADir
	explicit := dir != ""
	if !explicit {
		var err error
		if dir, err = identity.DefaultCADir(); err != nil {
			return nil, err
		}
	}
	ca, err := identity.LoadCADir(dir)
	switch {
	case err == nil:
		if ca.TrustDomain() != td {
			return nil, fmt.Errorf("dev CA in %s is for trust domain %q, not %q", dir, ca.TrustDomain().Name(), td.Name())
		}
		return ca, nil
	case explicit || !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("loading dev CA: %w", err)
	}
	log.Warn("no dev CA found; using a throwaway one in memory, which other proxies will not trust (create a shared one with 'meshproxy ca init')",
		zap.String("ca_dir", dir))
	return identity.NewCA(td)
}

// newClientTLSFunc returns the builder of per-destination client TLS
// configurations: mTLS with our SVID, authorizing the peer's identity, and
// offering the transport header protocol. All of them share one session
// cache, so memory for resumption is bounded however many destinations
// there are.
func newClientTLSFunc(src identity.Source, authorizer func([]string) (tlsAuthorizer, error)) outbound.TLSFunc {
	cache := tls.NewLRUClientSessionCache(identity.DefaultSessionCacheSize)
	return func(ids []string) (*tls.Config, error) {
		authz, err := authorizer(ids)
		if err != nil {
			return nil, err
		}
		return identity.ClientConfig(src, authz,
			identity.WithNextProtos(header.ALPN), identity.WithSessionCache(cache)), nil
	}
}

// authorizerFor returns the parser of authorization lists for a proxy in
// trust domain td: an empty list authorizes td.
func authorizerFor(td spiffeid.TrustDomain) func([]string) (tlsAuthorizer, error) {
	return func(values []string) (tlsAuthorizer, error) {
		if len(values) == 0 {
			values = []string{td.String()}
		}
		return identity.ParseAuthorizer(values)
	}
}
