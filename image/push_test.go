package image

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// A registry in the test process (go-containerregistry's), since none is
// reachable from here: `make push` writes what `make image` laid out.
func TestPushWritesTheIndexFromTheLayoutToARegistry(t *testing.T) {
	imgs, err := Build(context.Background(), testOptions(t, "v0.0.0-push"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ref := Ref(DefaultRepository, ProxyName, "v0.0.0-push")
	if err := WriteLayout(dir, imgs.Proxy, ref); err != nil {
		t.Fatal(err)
	}
	idx, err := ReadLayout(dir, ref)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(registry.New())
	t.Cleanup(srv.Close)
	pushed := Ref(strings.TrimPrefix(srv.URL, "http://")+"/team", ProxyName, "v0.0.0-push")
	if err := Push(pushed, idx); err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(pushed)
	if err != nil {
		t.Fatal(err)
	}
	got, err := remote.Index(r)
	if err != nil {
		t.Fatal(err)
	}
	gotDigest, _ := got.Digest()
	wantDigest, _ := imgs.Proxy.Digest()
	if gotDigest != wantDigest {
		t.Errorf("registry has %s as %v, want %v", pushed, gotDigest, wantDigest)
	}
}
