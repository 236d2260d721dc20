package config

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
)

// SigningKey is the server's ed25519 key used to sign events and federation requests.
type SigningKey struct {
	ID      gomatrixserverlib.KeyID
	Private ed25519.PrivateKey
}

// Public returns the public half of the key.
func (k SigningKey) Public() ed25519.PublicKey { return k.Private.Public().(ed25519.PublicKey) }

const pemType = "MATRIX PRIVATE KEY"

// LoadOrCreateSigningKey reads the PEM key at path, generating and writing a new one (mode 0600) when absent.
// The format is the one Dendrite and gomatrixserverlib tooling use: a PEM block of type
// "MATRIX PRIVATE KEY" whose Key-ID header names the key and whose body is the 32-byte seed.
func LoadOrCreateSigningKey(path string) (SigningKey, bool, error) {
	k, err := LoadSigningKey(path)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return SigningKey{}, false, err
	}
	k, err = GenerateSigningKey()
	if err != nil {
		return SigningKey{}, false, err
	}
	if err := WriteSigningKey(path, k); err != nil {
		return SigningKey{}, false, err
	}
	return k, true, nil
}

// GenerateSigningKey makes a new random key with a random key ID.
func GenerateSigningKey() (SigningKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return SigningKey{}, fmt.Errorf("generate signing key: %w", err)
	}
	var idBytes [6]byte
	if _, err := rand.Read(idBytes[:]); err != nil {
		return SigningKey{}, fmt.Errorf("generate key id: %w", err)
	}
	id := "ed25519:" + strings.NewReplacer("+", "", "/", "", "=", "").Replace(base64.RawStdEncoding.EncodeToString(idBytes[:]))
	return SigningKey{ID: gomatrixserverlib.KeyID(id), Private: priv}, nil
}

// LoadSigningKey reads a PEM signing key file.
func LoadSigningKey(path string) (SigningKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return SigningKey{}, fmt.Errorf("read signing key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != pemType {
		return SigningKey{}, fmt.Errorf("signing key %s: no %q PEM block", path, pemType)
	}
	id := block.Headers["Key-ID"]
	if !strings.HasPrefix(id, "ed25519:") {
		return SigningKey{}, fmt.Errorf("signing key %s: Key-ID header must start with ed25519:", path)
	}
	if len(block.Bytes) != ed25519.SeedSize {
		return SigningKey{}, fmt.Errorf("signing key %s: want a %d-byte seed, got %d bytes", path, ed25519.SeedSize, len(block.Bytes))
	}
	return SigningKey{ID: gomatrixserverlib.KeyID(id), Private: ed25519.NewKeyFromSeed(block.Bytes)}, nil
}

// WriteSigningKey writes the key as PEM with mode 0600, creating parent directories.
func WriteSigningKey(path string, k SigningKey) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create key directory: %w", err)
	}
	block := &pem.Block{Type: pemType, Headers: map[string]string{"Key-ID": string(k.ID)}, Bytes: k.Private.Seed()}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create signing key %s: %w", path, err)
	}
	if err := pem.Encode(f, block); err != nil {
		f.Close()
		return fmt.Errorf("write signing key %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync signing key %s: %w", path, err)
	}
	return f.Close()
}
