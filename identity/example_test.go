package identity_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/seed722d2a70/meshproxy/identity"
)

func ExampleParseAuthorizer() {
	authorize, err := identity.ParseAuthorizer([]string{"spiffe://example.org/ns/web/*", "other.org"})
	if err != nil {
		log.Fatal(err)
	}
	for _, id := range []string{"spiffe://example.org/ns/web/frontend", "spiffe://example.org/ns/db", "spiffe://other.org/x"} {
		fmt.Println(id, authorize(spiffeid.RequireFromString(id), nil) == nil)
	}
	// Output:
	// spiffe://example.org/ns/web/frontend true
	// spiffe://example.org/ns/db false
	// spiffe://other.org/x true
}

// A proxy with the embedded dev CA: an SVID that rotates every half hour,
// and the TLS configurations of both directions.
func ExampleNewDevSource() {
	td := spiffeid.RequireTrustDomainFromString("mesh.local")
	ca, err := identity.NewCA(td)
	if err != nil {
		log.Fatal(err)
	}
	src, err := identity.NewDevSource(ca, spiffeid.RequireFromPath(td, "/meshproxy"), time.Hour, nil, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := src.WaitReady(ctx); err != nil {
		log.Fatal(err)
	}
	peers, _ := identity.ParseAuthorizer([]string{td.String()})
	server := identity.ServerConfig(src, peers)
	client := identity.ClientConfig(src, peers)
	fmt.Println(server.MinVersion == client.MinVersion, src.Ready())
	// Output: true true
}
