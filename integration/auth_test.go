package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/nodeq/nodeq/internal/natsconn"
	"github.com/nodeq/nodeq/internal/natstest"
)

// connectWith dials s with auth; it must fail (or succeed) quickly.
func connectWith(t *testing.T, url string, a natsconn.Auth) error {
	t.Helper()
	opts, err := a.Options()
	if err != nil {
		return err
	}
	start := time.Now()
	nc, err := natsconn.Connect(url, "auth-test", slog.New(slog.NewTextHandler(io.Discard, nil)), opts...)
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("connect took %v: a wrong credential must fail fast, not hang", took)
	}
	if err == nil {
		nc.Close()
	}
	return err
}

func expectAuth(t *testing.T, url string, good, bad natsconn.Auth, badMsg string) {
	t.Helper()
	if err := connectWith(t, url, good); err != nil {
		t.Fatalf("good credentials refused: %v", err)
	}
	err := connectWith(t, url, bad)
	if err == nil || !strings.Contains(err.Error(), badMsg) || !strings.Contains(err.Error(), "connect to NATS at") {
		t.Fatalf("wrong credentials: got %v, want an error containing %q", err, badMsg)
	}
	if bad.Password != "" && strings.Contains(err.Error(), bad.Password) {
		t.Fatalf("the error shows the password: %v", err)
	}
}

func TestAuthUserPassword(t *testing.T) {
	s := natstest.ServerWith(t, func(o *server.Options) { o.Username, o.Password = "svc", "s3cret" })
	expectAuth(t, s.ClientURL(), natsconn.Auth{User: "svc", Password: "s3cret"}, natsconn.Auth{User: "svc", Password: "wrong-pw"}, "Authorization Violation")
}

func TestAuthToken(t *testing.T) {
	s := natstest.ServerWith(t, func(o *server.Options) { o.Authorization = "tok-123" })
	expectAuth(t, s.ClientURL(), natsconn.Auth{Token: "tok-123"}, natsconn.Auth{Token: "tok-999"}, "Authorization Violation")
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAuthNKey(t *testing.T) {
	user, _ := nkeys.CreateUser()
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	s := natstest.ServerWith(t, func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} })
	expectAuth(t, s.ClientURL(), natsconn.Auth{NKeySeedFile: writeFile(t, "user.nk", seed)},
		natsconn.Auth{NKeySeedFile: writeFile(t, "other.nk", otherSeed)}, "Authorization Violation")
}

func TestAuthCredsJWT(t *testing.T) {
	op, _ := nkeys.CreateOperator()
	opPub, _ := op.PublicKey()
	opClaims := jwt.NewOperatorClaims(opPub)
	if _, err := opClaims.Encode(op); err != nil {
		t.Fatal(err)
	}
	account := func() (nkeys.KeyPair, string, string) {
		kp, _ := nkeys.CreateAccount()
		pub, _ := kp.PublicKey()
		ac := jwt.NewAccountClaims(pub)
		ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		token, err := ac.Encode(op)
		if err != nil {
			t.Fatal(err)
		}
		return kp, pub, token
	}
	creds := func(acc nkeys.KeyPair) []byte {
		u, _ := nkeys.CreateUser()
		pub, _ := u.PublicKey()
		token, err := jwt.NewUserClaims(pub).Encode(acc)
		if err != nil {
			t.Fatal(err)
		}
		seed, _ := u.Seed()
		b, err := jwt.FormatUserConfig(token, seed)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	acc, accPub, accJWT := account()
	unknown, _, _ := account() // never told to the server
	resolver := &server.MemAccResolver{}
	s := natstest.ServerWith(t, func(o *server.Options) {
		o.JetStream = false // operator mode with JetStream would need a system account; connecting is what is tested
		o.TrustedOperators = []*jwt.OperatorClaims{opClaims}
		o.AccountResolver = resolver
		if err := resolver.Store(accPub, accJWT); err != nil {
			t.Fatal(err)
		}
	})
	expectAuth(t, s.ClientURL(), natsconn.Auth{CredsFile: writeFile(t, "good.creds", creds(acc))},
		natsconn.Auth{CredsFile: writeFile(t, "bad.creds", creds(unknown))}, "Authorization Violation")
}

// pki writes a CA and a certificate it signed for "localhost" and 127.0.0.1.
type pki struct{ caFile, certFile, keyFile string }

func newPKI(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey, pki) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	p := pki{caFile: writeFile(t, name+"-ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))}
	p.certFile, p.keyFile = issue(t, caCert, caKey, name, x509.ExtKeyUsageServerAuth)
	return caCert, caKey, p
}

func issue(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, name string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	return writeFile(t, name+".pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		writeFile(t, name+"-key.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
}

func TestAuthTLS(t *testing.T) {
	ca, caKey, srv := newPKI(t, "server")
	clientCert, clientKey := issue(t, ca, caKey, "client", x509.ExtKeyUsageClientAuth)
	_, _, strangers := newPKI(t, "stranger")
	s := natstest.ServerWith(t, func(o *server.Options) {
		cfg, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: srv.certFile, KeyFile: srv.keyFile, CaFile: srv.caFile, Verify: true})
		if err != nil {
			t.Fatal(err)
		}
		o.TLSConfig, o.TLS, o.TLSVerify, o.TLSTimeout = cfg, true, true, 2
	})
	url := strings.Replace(s.ClientURL(), "nats://", "tls://", 1)
	good := natsconn.Auth{CAFile: srv.caFile, CertFile: clientCert, KeyFile: clientKey, ServerName: "localhost"}
	expectAuth(t, url, good, natsconn.Auth{CAFile: strangers.caFile, CertFile: clientCert, KeyFile: clientKey, ServerName: "localhost"}, "certificate signed by unknown authority")
	if err := connectWith(t, url, natsconn.Auth{CAFile: srv.caFile, CertFile: clientCert, KeyFile: clientKey, ServerName: "nats.example.com"}); err == nil ||
		!strings.Contains(err.Error(), "nats.example.com") {
		t.Fatalf("server name verification: %v", err)
	}
	if err := connectWith(t, url, natsconn.Auth{CAFile: srv.caFile, ServerName: "localhost"}); err == nil {
		t.Fatal("connected without the client certificate the server requires")
	}
}

func TestAuthOptionErrors(t *testing.T) {
	for _, a := range []natsconn.Auth{
		{Password: "x"},
		{User: "u", Password: "p", Token: "t"},
		{NKeySeedFile: "/no/such/seed"},
		{CredsFile: "/no/such/creds"},
		{CAFile: "/no/such/ca.pem"},
		{CertFile: "/x.pem"},
	} {
		if _, err := a.Options(); err == nil {
			t.Errorf("%+v accepted", a)
		}
	}
}
