package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/batchio/threadpool/internal/nbd"
)

// tlsFlags is the TLS part of the command line.
type tlsFlags struct {
	mode     string // off, on or require
	cert     string // server certificate chain, PEM
	key      string // its private key, PEM
	clientCA string // CA certificates that client certificates must chain to, PEM
}

func (f *tlsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.mode, "tls", "off", "TLS (NBD_OPT_STARTTLS): off, on (the client chooses) or require (nothing is served without TLS)")
	fs.StringVar(&f.cert, "tls-cert", "", "server certificate file (PEM, with any intermediate certificates after it); needed by -tls=on and -tls=require")
	fs.StringVar(&f.key, "tls-key", "", "private key file of -tls-cert (PEM)")
	fs.StringVar(&f.clientCA, "tls-client-ca", "", "verify clients: refuse any client without a certificate signed by a CA in this file (PEM)")
}

// check validates the flags' combination without touching the files.
func (f *tlsFlags) check() error {
	mode, err := nbd.ParseTLSMode(f.mode)
	if err != nil {
		return errors.New("-tls must be off, on or require")
	}
	if mode == nbd.TLSOff {
		if f.cert != "" || f.key != "" || f.clientCA != "" {
			return errors.New("-tls-cert, -tls-key and -tls-client-ca need -tls=on or -tls=require")
		}
		return nil
	}
	if f.cert == "" || f.key == "" {
		return fmt.Errorf("-tls=%s needs -tls-cert and -tls-key", f.mode)
	}
	return nil
}

// load reads the certificate, key and client CAs the flags name and
// returns the server's TLS settings.
func (f *tlsFlags) load() (nbd.TLSMode, *tls.Config, error) {
	mode, err := nbd.ParseTLSMode(f.mode)
	if err != nil || mode == nbd.TLSOff {
		return nbd.TLSOff, nil, err
	}
	cert, err := tls.LoadX509KeyPair(f.cert, f.key)
	if err != nil {
		return mode, nil, fmt.Errorf("TLS certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if f.clientCA != "" {
		pem, err := os.ReadFile(f.clientCA)
		if err != nil {
			return mode, nil, fmt.Errorf("TLS client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return mode, nil, fmt.Errorf("TLS client CA: no PEM certificate in %s", f.clientCA)
		}
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = pool
	}
	return mode, cfg, nil
}
