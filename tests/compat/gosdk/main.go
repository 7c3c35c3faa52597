// Command verify-gosdk verifies an identity assertion with Pomerium's own Go SDK
// (github.com/pomerium/sdk-go), the library Pomerium tells upstream Go apps to use.
//
// It exists so Vallum's tests can prove that an app written for Pomerium accepts Vallum's
// assertion unchanged. The SDK is used exactly as an app would use it: sdk.New + GetIdentity.
// Without -jwks-url the SDK derives the JWKS URL from the token's iss
// (https://<iss>/.well-known/pomerium/jwks.json) and rejects a kid it cannot find there.
//
// Flags:
//
//	-token T         the JWT (or @FILE, or - for standard input)
//	-jwks-url URL    static JWKS endpoint (optional; default: derived from iss by the SDK)
//	-issuer S        expected iss (optional)
//	-audience S      expected aud (optional)
//	-ca-file F       PEM CA bundle trusted for HTTPS (optional; default: system roots)
//	-resolve H=ADDR  dial ADDR (ip or ip:port) whenever H is contacted (repeatable)
//
// Output: on success, exit 0 and one JSON object on stdout: the identity's claims, the kid
// and whether that kid is the RFC 7638 thumbprint (hex) of the key go-jose used. On rejection,
// exit 1 and the SDK's error on stderr. Usage errors exit 2.
package main

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v3"
	"github.com/go-jose/go-jose/v3/jwt"
	sdk "github.com/pomerium/sdk-go"
)

type resolveFlag map[string]string

func (r resolveFlag) String() string { return fmt.Sprint(map[string]string(r)) }

func (r resolveFlag) Set(v string) error {
	host, addr, ok := strings.Cut(v, "=")
	if !ok || host == "" || addr == "" {
		return fmt.Errorf("want HOST=IP[:PORT], got %q", v)
	}
	r[strings.ToLower(host)] = addr
	return nil
}

func main() {
	os.Exit(run())
}

func run() int {
	resolve := resolveFlag{}
	token := flag.String("token", "", "the JWT, @FILE, or - for stdin")
	jwksURL := flag.String("jwks-url", "", "static JWKS endpoint (default: derived from iss)")
	issuer := flag.String("issuer", "", "expected iss")
	audience := flag.String("audience", "", "expected aud")
	caFile := flag.String("ca-file", "", "PEM CA bundle to trust")
	flag.Var(resolve, "resolve", "HOST=IP[:PORT] (repeatable)")
	flag.Parse()

	raw, err := readToken(*token)
	if err != nil {
		fmt.Fprintln(os.Stderr, "usage:", err)
		return 2
	}
	client, err := httpClient(*caFile, resolve)
	if err != nil {
		fmt.Fprintln(os.Stderr, "usage:", err)
		return 2
	}
	expected := &jwt.Expected{Issuer: *issuer}
	if *audience != "" {
		expected.Audience = jwt.Audience{*audience}
	}
	verifier, err := sdk.New(&sdk.Options{
		JWKSEndpoint: *jwksURL,
		HTTPClient:   client,
		Expected:     expected,
		Logger:       log.New(io.Discard, "", 0),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "usage:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	id, err := verifier.GetIdentity(ctx, raw)
	if err != nil {
		fmt.Fprintln(os.Stderr, "rejected:", err)
		return 1
	}

	var key jose.JSONWebKey
	if err := key.UnmarshalJSON([]byte(id.PublicKey)); err != nil {
		fmt.Fprintln(os.Stderr, "rejected: unreadable key:", err)
		return 1
	}
	thumb, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		fmt.Fprintln(os.Stderr, "rejected: thumbprint:", err)
		return 1
	}
	out := map[string]any{
		"iss":            id.Issuer,
		"aud":            []string(id.Audience),
		"sub":            id.Subject,
		"user":           id.User,
		"email":          id.Email,
		"name":           id.Name,
		"groups":         id.Groups,
		"jti":            id.ID,
		"kid":            key.KeyID,
		"kid_thumbprint": key.KeyID == hex.EncodeToString(thumb),
		"alg":            key.Algorithm,
	}
	if id.Expiry != nil {
		out["exp"] = id.Expiry.Time().Unix()
	}
	if id.IssuedAt != nil {
		out["iat"] = id.IssuedAt.Time().Unix()
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		return 1
	}
	return 0
}

func readToken(v string) (string, error) {
	switch {
	case v == "":
		return "", fmt.Errorf("-token is required")
	case v == "-":
		b, err := io.ReadAll(os.Stdin)
		return strings.TrimSpace(string(b)), err
	case strings.HasPrefix(v, "@"):
		b, err := os.ReadFile(v[1:])
		return strings.TrimSpace(string(b)), err
	}
	return strings.TrimSpace(v), nil
}

func httpClient(caFile string, resolve resolveFlag) (*http.Client, error) {
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate found", caFile)
		}
		tlsConfig.RootCAs = pool
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	transport := &http.Transport{
		TLSClientConfig: tlsConfig,
		Proxy:           nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			if target, ok := resolve[strings.ToLower(host)]; ok {
				if _, _, err := net.SplitHostPort(target); err == nil {
					addr = target
				} else {
					addr = net.JoinHostPort(target, port)
				}
			}
			return dialer.DialContext(ctx, network, addr)
		},
	}
	return &http.Client{Transport: transport, Timeout: 20 * time.Second}, nil
}
