package httpapi

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/keyrack/keyrack/appliance"
)

// tlsConfig is TLS 1.2+ with the configured certificate. Client
// certificates are asked for: with a client CA they are verified when
// sent (officer endpoints may require one); without, a certificate a
// client sends is only proved held (the handshake's signature), which is
// what a signing client bound to its certificate's SHA-256 needs.
func tlsConfig(c appliance.TLSConfig) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequestClientCert}
	if c.ClientCAFile != "" {
		pem, err := os.ReadFile(c.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: no certificate in %s", c.ClientCAFile)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return tc, nil
}
