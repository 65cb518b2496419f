package identity

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// FuzzParseAuthorizer: authorization values come from configuration files,
// flags and environment variables. Parsing must never panic, must fail
// only with ErrBadAuthorization, and an exact ID must authorize itself.
func FuzzParseAuthorizer(f *testing.F) {
	f.Add("spiffe://example.org/ns/web", "spiffe://example.org/ns/web")
	f.Add("spiffe://example.org/ns/*,other.org", "spiffe://example.org/ns/db")
	f.Fuzz(func(t *testing.T, values, id string) {
		list := strings.Split(values, ",")
		authorize, err := ParseAuthorizer(list)
		if err != nil {
			if !errors.Is(err, ErrBadAuthorization) {
				t.Fatalf("error %v does not wrap ErrBadAuthorization", err)
			}
			return
		}
		peer, err := spiffeid.FromString(id)
		if err != nil {
			return
		}
		allowed := authorize(peer, nil) == nil
		for _, v := range list {
			if strings.TrimSpace(v) == peer.String() && !allowed {
				t.Fatalf("%q does not authorize %s", values, peer)
			}
		}
	})
}

// fuzzNow is when the certificates of the seed corpus were made; the
// fuzzer checks them at that time so they never expire.
var fuzzNow = time.Date(2026, time.November, 25, 7, 30, 0, 0, time.UTC)

// FuzzParseSVIDFiles: the identity files are written by other programs and
// may be torn, truncated or wrong. Parsing must never panic, and whatever
// it accepts must be a usable SVID that verifies against its bundle.
func FuzzParseSVIDFiles(f *testing.F) {
	f.Add([]byte{}, []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, cert, key, bundle []byte) {
		svid, bundles, reason, err := parseSVIDFiles(cert, key, bundle, nil, fuzzNow)
		if err != nil {
			if reason == "" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		if _, err := tlsCertificate(svid); err != nil {
			t.Fatalf("accepted SVID unusable for TLS: %v", err)
		}
		if _, _, err := x509svid.Verify(svid.Certificates, bundles, x509svid.WithTime(fuzzNow)); err != nil {
			t.Fatalf("accepted SVID does not verify: %v", err)
		}
	})
}

// TestFuzzSeedIsValid keeps the seed corpus honest: its "valid" entry must
// reach FuzzParseSVIDFiles's success path.
func TestFuzzSeedIsValid(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzParseSVIDFiles", "valid"))
	if err != nil {
		t.Fatal(err)
	}
	var args [][]byte
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n")[1:] {
		s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(line, "[]byte("), ")"))
		if err != nil {
			t.Fatal(err)
		}
		args = append(args, []byte(s))
	}
	if len(args) != 3 {
		t.Fatalf("%d arguments", len(args))
	}
	if _, _, _, err := parseSVIDFiles(args[0], args[1], args[2], nil, fuzzNow); err != nil {
		t.Fatal(err)
	}
}
