package auth

import (
	"crypto/sha256"
	"encoding/base64"

	"golang.org/x/crypto/bcrypt"
)

// MaxPasswordBytes is the longest password accepted. Every byte counts: passwords are
// pre-hashed before bcrypt, so its 72-byte input limit does not truncate them.
const MaxPasswordBytes = 512

// prehash maps a password of any length to 44 ASCII bytes for bcrypt, which otherwise
// ignores everything after its 72nd byte (and x/crypto rejects longer input). Base64
// keeps NUL bytes out of bcrypt's input. Every stored hash uses this form.
func prehash(password string) []byte {
	sum := sha256.Sum256([]byte(password))
	out := make([]byte, base64.StdEncoding.EncodedLen(len(sum)))
	base64.StdEncoding.Encode(out, sum[:])
	return out
}

// HashPassword hashes a password with bcrypt (over its SHA-256) at the given cost.
func HashPassword(password string, cost int) (string, error) {
	h, err := bcrypt.GenerateFromPassword(prehash(password), cost)
	if err != nil {
		return "", err
	}
	return string(h), nil
}

// CheckPassword reports whether password matches hash, in constant time. An empty hash
// (no password, or a deactivated account) matches nothing.
func CheckPassword(hash, password string) bool {
	if hash == "" {
		return false
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), prehash(password)) == nil
}
