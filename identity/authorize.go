package identity

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// ErrBadAuthorization is wrapped by ParseAuthorizer's errors.
var ErrBadAuthorization = errors.New("invalid authorization value")

// ParseAuthorizer builds an authorizer from configuration values; a peer is
// authorized if any value matches its SPIFFE ID. Each value is one of:
//
//   - "*" or "any": every ID (that verified against a trust bundle);
//   - "spiffe://td/path": exactly that ID;
//   - "spiffe://td/path/*": every ID strictly below that path, on a segment
//     boundary: spiffe://td/path/x and spiffe://td/path/x/y, but neither
//     spiffe://td/path itself nor spiffe://td/pathx;
//   - "td", "spiffe://td" or "spiffe://td/*": every ID in trust domain td.
//
// Surrounding spaces are ignored. An empty list, an empty value or a value
// of none of these forms is an error wrapping ErrBadAuthorization: what an
// empty policy means (the proxy's own trust domain, in meshproxy) is for the
// caller to decide.
func ParseAuthorizer(values []string) (tlsconfig.Authorizer, error) {
	if len(values) == 0 {
		return nil, fmt.Errorf("%w: empty list", ErrBadAuthorization)
	}
	var (
		anyID    bool
		ids      []spiffeid.ID
		prefixes []spiffeid.ID
		domains  []spiffeid.TrustDomain
	)
	for _, raw := range values {
		v := strings.TrimSpace(raw)
		switch {
		case v == "":
			return nil, fmt.Errorf("%w: empty value", ErrBadAuthorization)
		case v == "*" || v == "any":
			// The rest of the list is still checked: a typo next to a
			// wildcard is a mistake to report, not to hide.
			anyID = true
		case strings.HasSuffix(v, "/*"):
			base := strings.TrimSuffix(v, "/*")
			if !strings.HasPrefix(base, "spiffe://") {
				return nil, fmt.Errorf("%w: %q: a prefix must be a spiffe:// ID followed by /*", ErrBadAuthorization, raw)
			}
			if !strings.Contains(strings.TrimPrefix(base, "spiffe://"), "/") {
				td, err := spiffeid.TrustDomainFromString(base)
				if err != nil {
					return nil, fmt.Errorf("%w: %q: %w", ErrBadAuthorization, raw, err)
				}
				domains = append(domains, td)
				continue
			}
			id, err := spiffeid.FromString(base)
			if err != nil {
				return nil, fmt.Errorf("%w: %q: %w", ErrBadAuthorization, raw, err)
			}
			prefixes = append(prefixes, id)
		case strings.HasPrefix(v, "spiffe://") && strings.Contains(strings.TrimPrefix(v, "spiffe://"), "/"):
			id, err := spiffeid.FromString(v)
			if err != nil {
				return nil, fmt.Errorf("%w: %q: %w", ErrBadAuthorization, raw, err)
			}
			ids = append(ids, id)
		default: // "td" or "spiffe://td"
			td, err := spiffeid.TrustDomainFromString(v)
			if err != nil {
				return nil, fmt.Errorf("%w: %q: %w", ErrBadAuthorization, raw, err)
			}
			domains = append(domains, td)
		}
	}
	if anyID {
		return tlsconfig.AuthorizeAny(), nil
	}
	var matchers []spiffeid.Matcher
	if len(ids) > 0 {
		matchers = append(matchers, spiffeid.MatchOneOf(ids...))
	}
	for _, p := range prefixes {
		matchers = append(matchers, matchBelow(p))
	}
	for _, td := range domains {
		matchers = append(matchers, spiffeid.MatchMemberOf(td))
	}
	if len(matchers) == 1 {
		return tlsconfig.AdaptMatcher(matchers[0]), nil
	}
	return tlsconfig.AdaptMatcher(matchAny(matchers)), nil
}

// matchBelow matches IDs strictly below prefix's path. go-spiffe's
// MatchIDPrefix also matches the prefix itself, which "path/*" must not.
func matchBelow(prefix spiffeid.ID) spiffeid.Matcher {
	want := prefix.Path() + "/"
	return func(id spiffeid.ID) error {
		if id.MemberOf(prefix.TrustDomain()) && strings.HasPrefix(id.Path(), want) {
			return nil
		}
		return fmt.Errorf("%s is not below %s", id, prefix)
	}
}

// matchAny matches an ID that one of ms matches.
func matchAny(ms []spiffeid.Matcher) spiffeid.Matcher {
	return func(id spiffeid.ID) error {
		for _, m := range ms {
			if m(id) == nil {
				return nil
			}
		}
		return fmt.Errorf("%s matches no authorized ID, prefix or trust domain", id)
	}
}
