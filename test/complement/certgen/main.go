// Command certgen issues a TLS server certificate for $SERVER_NAME signed by
// Complement's per-run CA (/complement/ca/ca.crt + ca.key). The Complement image runs it
// on every container start, because the CA changes with every Complement package run.
// Static, stdlib only.
//
//	Usage: complement-certgen -name hs1 -ca-cert /complement/ca/ca.crt -ca-key /complement/ca/ca.key \
//	         -cert /data/tls/server.crt -key /data/tls/server.key [-chain /data/tls/fullchain.crt]
package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

func die(err error) {
	fmt.Fprintln(os.Stderr, "complement-certgen:", err)
	os.Exit(1)
}

func readPEM(path, what string) *pem.Block {
	b, err := os.ReadFile(path)
	if err != nil {
		die(fmt.Errorf("read %s: %w", what, err))
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		die(fmt.Errorf("%s %s: no PEM block", what, path))
	}
	return blk
}

func parseKey(blk *pem.Block) (any, error) {
	if k, err := x509.ParsePKCS1PrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	return nil, errors.New("unsupported CA key format")
}

func writeFile(path string, data []byte, mode os.FileMode) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		die(err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		die(err)
	}
}

func main() {
	name := flag.String("name", os.Getenv("SERVER_NAME"), "DNS name (SAN) for the certificate (default $SERVER_NAME)")
	caCertPath := flag.String("ca-cert", "/complement/ca/ca.crt", "CA certificate (PEM)")
	caKeyPath := flag.String("ca-key", "/complement/ca/ca.key", "CA private key (PEM, PKCS#1/PKCS#8/SEC1)")
	certPath := flag.String("cert", "server.crt", "output: leaf certificate (PEM)")
	keyPath := flag.String("key", "server.key", "output: leaf private key (PEM, PKCS#8 'PRIVATE KEY')")
	chainPath := flag.String("chain", "", "optional output: leaf + CA certificate (PEM)")
	bits := flag.Int("bits", 0, "RSA key size; 0 (default) makes an ECDSA P-256 key, which is much faster to generate on every start")
	flag.Parse()
	if *name == "" {
		die(errors.New("no -name and SERVER_NAME unset"))
	}
	caBlk := readPEM(*caCertPath, "CA cert")
	caCert, err := x509.ParseCertificate(caBlk.Bytes)
	if err != nil {
		die(err)
	}
	caKey, err := parseKey(readPEM(*caKeyPath, "CA key"))
	if err != nil {
		die(err)
	}
	var priv crypto.Signer
	if *bits > 0 {
		priv, err = rsa.GenerateKey(rand.Reader, *bits)
	} else {
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		die(err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: *name, Organization: []string{"Complement homeserver"}},
		NotBefore:             time.Now().Add(-1 * time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	if ip := net.ParseIP(*name); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{*name}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, priv.Public(), caKey)
	if err != nil {
		die(err)
	}
	leaf := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	p8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		die(err)
	}
	writeFile(*keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), 0o600)
	writeFile(*certPath, leaf, 0o644)
	if *chainPath != "" {
		writeFile(*chainPath, append(leaf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caBlk.Bytes})...), 0o644)
	}
}
