package natsconn

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

func startEmbedded(t *testing.T, listen string, a Auth) *server.Server {
	t.Helper()
	s, err := StartEmbedded(EmbeddedOptions{Listen: listen, StoreDir: t.TempDir(), Auth: a})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// mustReject checks that a client with opts cannot connect to s.
func mustReject(t *testing.T, s *server.Server, what string, opts ...nats.Option) {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err == nil {
		nc.Close()
		t.Fatalf("%s: connected to a server that requires authentication", what)
	}
	if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("%s: %v, want an authorization violation", what, err)
	}
}

// mustAccept checks that a client with a's credentials connects and can use JetStream.
func mustAccept(t *testing.T, s *server.Server, a Auth) {
	t.Helper()
	opts, err := a.Options()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("right credentials rejected: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(t.Context()); err != nil {
		t.Fatalf("jetstream with credentials: %v", err)
	}
}

func TestEmbeddedRequiresUserPassword(t *testing.T) {
	a := Auth{User: "svc", Password: "s3cret-pw"}
	s := startEmbedded(t, "127.0.0.1:0", a)
	mustReject(t, s, "no credentials")
	mustReject(t, s, "wrong password", nats.UserInfo("svc", "guess"))
	mustReject(t, s, "a token", nats.Token("s3cret-pw"))
	mustAccept(t, s, a)
}

func TestEmbeddedRequiresToken(t *testing.T) {
	a := Auth{Token: "tok-0123456789"}
	s := startEmbedded(t, "127.0.0.1:0", a)
	mustReject(t, s, "no credentials")
	mustReject(t, s, "wrong token", nats.Token("tok-guess"))
	mustAccept(t, s, a)
}

func TestEmbeddedRequiresNKey(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	file := filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(file, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	otherFile := filepath.Join(t.TempDir(), "other.nk")
	_ = os.WriteFile(otherFile, otherSeed, 0o600)

	s := startEmbedded(t, "127.0.0.1:0", Auth{NKeySeedFile: file})
	mustReject(t, s, "no credentials")
	wrong, err := nats.NkeyOptionFromSeed(otherFile)
	if err != nil {
		t.Fatal(err)
	}
	mustReject(t, s, "another user's nkey", wrong)
	mustAccept(t, s, Auth{NKeySeedFile: file})

	acct, _ := nkeys.CreateAccount()
	acctSeed, _ := acct.Seed()
	acctFile := filepath.Join(t.TempDir(), "account.nk")
	_ = os.WriteFile(acctFile, acctSeed, 0o600)
	if _, err := StartEmbedded(EmbeddedOptions{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Auth: Auth{NKeySeedFile: acctFile}}); err == nil ||
		!strings.Contains(err.Error(), "user NKey seed") {
		t.Fatalf("account seed accepted as a user's: %v", err)
	}
}

func TestEmbeddedRefusesUnauthenticatedNonLoopback(t *testing.T) {
	for _, listen := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:0", "nodeq.example:0"} {
		_, err := StartEmbedded(EmbeddedOptions{Listen: listen, StoreDir: t.TempDir()})
		if err == nil {
			t.Fatalf("%s: started without authentication", listen)
		}
		for _, want := range []string{"refusing to listen on " + listen + " without authentication", "nats.user and nats.password", "nats.token", "--listen 127.0.0.1:0"} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("%s: error %q lacks %q", listen, err, want)
			}
		}
	}
	// Loopback without authentication stays allowed (the default).
	for _, listen := range []string{"127.0.0.1:0", "localhost:0"} {
		s := startEmbedded(t, listen, Auth{})
		nc, err := nats.Connect(s.ClientURL())
		if err != nil {
			t.Fatalf("%s: %v", listen, err)
		}
		nc.Close()
	}
}

func TestEmbeddedNonLoopbackWithAuth(t *testing.T) {
	a := Auth{Token: "tok-0123456789"}
	s := startEmbedded(t, "0.0.0.0:0", a)
	mustReject(t, s, "no credentials")
	mustAccept(t, s, a)
}

func TestEmbeddedAuthErrors(t *testing.T) {
	creds := filepath.Join(t.TempDir(), "user.creds")
	_ = os.WriteFile(creds, []byte("-----BEGIN NATS USER JWT-----\n"), 0o600)
	for _, c := range []struct {
		a    Auth
		want string
	}{
		{Auth{CredsFile: creds}, "standalone nats-server"},
		{Auth{User: "svc"}, "needs both nats.user and nats.password"},
		{Auth{Password: "pw"}, "a password without a user"},
		{Auth{User: "svc", Password: "pw", Token: "t"}, "choose one of"},
		{Auth{NKeySeedFile: filepath.Join(t.TempDir(), "missing.nk")}, "nkey seed file"},
	} {
		_, err := StartEmbedded(EmbeddedOptions{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Auth: c.a})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%+v: %v, want an error containing %q", c.a, err, c.want)
		}
	}
}

func TestIsLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{"127.0.0.1": true, "127.9.9.9": true, "::1": true, "localhost": true,
		"": false, "0.0.0.0": false, "::": false, "10.0.0.1": false, "example.com": false, "::ffff:127.0.0.1": true} {
		if got := IsLoopbackHost(host); got != want {
			t.Errorf("IsLoopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}
