//go:build linux

package spiretest_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/seed722d2a70/meshproxy/identity"
	"github.com/seed722d2a70/meshproxy/test/spiretest"
)

// fetchEnv, when set, makes the test binary a workload: it fetches its
// X509-SVID from the Workload API at that address, prints the SPIFFE ID and
// exits. The tests run copies of the binary this way to get processes the
// agent tells apart.
const fetchEnv = "SPIRETEST_FETCH_ADDR"

func TestMain(m *testing.M) {
	if addr := os.Getenv(fetchEnv); addr != "" {
		os.Exit(fetchAndPrint(addr))
	}
	goleak.VerifyTestMain(m)
}

func fetchAndPrint(addr string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr(addr))
		if err == nil {
			fmt.Println(svid.ID)
			return 0
		}
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "fetching X509-SVID:", err)
			return 1
		}
		time.Sleep(200 * time.Millisecond) // the entry may not have synced yet
	}
}

// runWorkload runs exe as a fetching workload, as uid/gid if cred is set,
// and returns the SPIFFE ID it was given.
func runWorkload(t *testing.T, env *spiretest.Env, exe string, cred *syscall.Credential) string {
	t.Helper()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), fetchEnv+"="+env.AgentAddr())
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("workload %s: %v\n%s", exe, err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// TestWorkloadAPISourceWithSPIRE fetches a real SVID from a real agent
// through identity.WorkloadAPISource, uses it for mTLS, sees the agent
// rotate it, and survives the agent going away and coming back. With an
// x509SVIDTTL of 30 s the agent rotates about 10 s after issue: it renews
// at half of the SVID's lifetime, which it counts from a NotBefore
// backdated by 10 s. This is the package's one slow test.
func TestWorkloadAPISourceWithSPIRE(t *testing.T) {
	env := spiretest.Start(t, spiretest.Options{})
	id := "spiffe://example.org/workload/self"
	env.CreateEntry(t, id, []string{spiretest.UIDSelector(os.Getuid())}, 30*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src, err := identity.NewWorkloadAPISource(ctx, env.AgentAddr(), zaptest.NewLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if err := src.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	first := currentSVID(t, src)
	if first.ID.String() != id {
		t.Fatalf("SPIFFE ID %s, want %s", first.ID, id)
	}
	if _, _, err := x509svid.Verify(first.Certificates, src); err != nil {
		t.Fatalf("the SVID does not verify against the agent's bundle: %v", err)
	}
	handshake(t, src)

	// Rotation.
	for serialOf(currentSVID(t, src)) == serialOf(first) {
		select {
		case <-src.Changed():
		case <-ctx.Done():
			t.Fatal("the agent did not rotate the SVID")
		}
	}
	rotated := currentSVID(t, src)
	t.Logf("rotated: %s -> %s", serialOf(first), serialOf(rotated))
	handshake(t, src)

	// The agent goes away: the source keeps its SVID and stays ready.
	changed := src.Changed()
	env.StopAgent(t)
	if !src.Ready() {
		t.Fatal("not ready after the agent stopped, with a valid SVID")
	}
	if got := currentSVID(t, src); serialOf(got) != serialOf(rotated) {
		t.Fatal("SVID changed while the agent was away")
	}
	handshake(t, src)

	// The agent comes back and issues a new SVID; the source reconnects.
	env.StartAgent(t)
	select {
	case <-changed:
	case <-ctx.Done():
		t.Fatal("no SVID after the agent came back")
	}
	if got := currentSVID(t, src); got.ID.String() != id || serialOf(got) == serialOf(rotated) {
		t.Fatalf("after the agent's restart: %s serial %s", got.ID, serialOf(got))
	}
}

// handshake runs an mTLS handshake over loopback in which src is both
// sides, as two proxies with the same identity would be.
func handshake(t *testing.T, src identity.Source) {
	t.Helper()
	authorize, err := identity.ParseAuthorizer([]string{"example.org"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	errc := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, identity.ServerConfig(src, authorize))
		if err := tc.Handshake(); err != nil {
			errc <- err
			return
		}
		_, err = tc.Write([]byte("ok"))
		errc <- err
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), identity.ClientConfig(src, authorize))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if id, err := identity.PeerID(c.ConnectionState()); err != nil || id.String() != currentSVID(t, src).ID.String() {
		t.Fatalf("peer %v, %v", id, err)
	}
}

func currentSVID(t *testing.T, src identity.Source) *x509svid.SVID {
	t.Helper()
	svid, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	return svid
}

func serialOf(svid *x509svid.SVID) string { return svid.Certificates[0].SerialNumber.Text(16) }

// TestWorkloadsByPath gives two processes of the same uid two identities:
// they run two copies of one binary, registered by path.
func TestWorkloadsByPath(t *testing.T) {
	env := spiretest.Start(t, spiretest.Options{})
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	a, b := spiretest.CopyExecutable(t, self), spiretest.CopyExecutable(t, self)
	env.CreateEntry(t, "spiffe://example.org/a", []string{spiretest.PathSelector(a)}, 0)
	env.CreateEntry(t, "spiffe://example.org/b", []string{spiretest.PathSelector(b)}, 0)
	if got := runWorkload(t, env, a, nil); got != "spiffe://example.org/a" {
		t.Errorf("copy a got %q", got)
	}
	if got := runWorkload(t, env, b, nil); got != "spiffe://example.org/b" {
		t.Errorf("copy b got %q", got)
	}
}

// TestWorkloadsByUID gives a process of another uid its own identity.
// Changing uid needs root (as in CI).
func TestWorkloadsByUID(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a workload as another uid")
	}
	env := spiretest.Start(t, spiretest.Options{})
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe := spiretest.CopyExecutable(t, self)
	const nobody = 65534
	env.CreateEntry(t, "spiffe://example.org/root", []string{spiretest.UIDSelector(0)}, 0)
	env.CreateEntry(t, "spiffe://example.org/nobody", []string{spiretest.UIDSelector(nobody)}, 0)
	if got := runWorkload(t, env, exe, nil); got != "spiffe://example.org/root" {
		t.Errorf("root workload got %q", got)
	}
	if got := runWorkload(t, env, exe, &syscall.Credential{Uid: nobody, Gid: nobody}); got != "spiffe://example.org/nobody" {
		t.Errorf("nobody's workload got %q", got)
	}
}

// TestBundlePEM: the server's bundle verifies the agent's SVIDs, for tests
// that hand it to a FileSource.
func TestBundlePEM(t *testing.T) {
	env := spiretest.Start(t, spiretest.Options{})
	pem := env.BundlePEM(t)
	if !strings.Contains(string(pem), "BEGIN CERTIFICATE") {
		t.Fatalf("bundle: %q", pem)
	}
}
