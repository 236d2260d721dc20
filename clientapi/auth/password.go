package auth

import (
	"golang.org/x/crypto/bcrypt"
)

// HashPassword hashes a password with bcrypt at the given cost.
func HashPassword(password string, cost int) (string, error) {
	// bcrypt only looks at the first 72 bytes; longer passwords are rejected by
	// x/crypto, so pre-hash would change semantics. Callers bound the length.
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return "", err
	}
	return string(h), nil
}

// CheckPassword reports whether password matches hash, in constant time.
func CheckPassword(hash, password string) bool {
	if hash == "" {
		return false
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil
}

// MaxPasswordBytes is the longest password accepted (bcrypt's input limit).
const MaxPasswordBytes = 72
