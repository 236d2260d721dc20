package auth

import (
	"crypto/rand"
	"net/http"
	"strings"

	"github.com/myelin-chat/myelin/clientapi/httputil"
)

// maxUserIDBytes is the spec's limit on a whole user ID, sigil and server name included.
const maxUserIDBytes = 255

var errUserInUse = httputil.NewError(http.StatusBadRequest, "M_USER_IN_USE", "Desired user ID is already taken")

func invalidUsername(format string, args ...any) *httputil.Error {
	return httputil.NewError(http.StatusBadRequest, "M_INVALID_USERNAME", format, args...)
}

// userID returns the full user ID of a local localpart.
func (a *Accounts) userID(localpart string) string {
	return "@" + localpart + ":" + a.cfg.ServerName
}

// newLocalpart lower-cases a requested username and checks it against the user ID grammar
// for new accounts (a-z 0-9 . _ = - / +) and the 255-byte limit of the whole ID.
func (a *Accounts) newLocalpart(username string) (string, error) {
	lp := strings.ToLower(username)
	if lp == "" {
		return "", invalidUsername("Username must not be empty")
	}
	for i := 0; i < len(lp); i++ {
		if !isLocalpartByte(lp[i]) {
			return "", invalidUsername("Usernames may only contain the characters a-z, 0-9, '.', '_', '=', '-', '/' and '+'")
		}
	}
	// The server notice sender is the server's: nobody may register it first and
	// read every user's notices.
	if lp == a.cfg.ServerNotices.SystemUserLocalpart {
		return "", invalidUsername("This username is reserved")
	}
	if n := len(a.userID(lp)); n > maxUserIDBytes {
		return "", invalidUsername("User ID would be %d bytes long; the limit is %d", n, maxUserIDBytes)
	}
	return lp, nil
}

func isLocalpartByte(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("._=-/+", c) >= 0
}

// loginUserID turns what a client logs in with (a localpart or a full user ID, in any case)
// into the user ID it names; ok is false for a user of another server.
func (a *Accounts) loginUserID(user string) (string, bool) {
	if strings.HasPrefix(user, "@") {
		lp, server, found := strings.Cut(user[1:], ":")
		if !found || server != a.cfg.ServerName {
			return "", false
		}
		user = lp
	}
	if user == "" {
		return "", false
	}
	return a.userID(strings.ToLower(user)), true
}

// randomLocalpart returns a localpart for registrations that did not ask for one.
func randomLocalpart() string {
	const chars = "abcdefghijklmnopqrstuvwxyz0123456789"
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	out := make([]byte, len(b))
	for i, c := range b {
		out[i] = chars[int(c)%len(chars)]
	}
	return "u" + string(out)
}

// UserIdentifier is the spec's identifier object of logins and m.login.password stages.
type UserIdentifier struct {
	Type    string `json:"type"`
	User    string `json:"user"`
	Medium  string `json:"medium"`
	Address string `json:"address"`
}

// identifiedUser returns the user named by an identifier, or by the deprecated top-level
// "user" (and "medium") fields when there is no identifier.
func identifiedUser(id *UserIdentifier, legacyUser, legacyMedium string) (string, error) {
	if id != nil {
		switch id.Type {
		case "m.id.user":
			if id.User == "" {
				return "", httputil.MissingParam("identifier.user is required")
			}
			return id.User, nil
		case "m.id.thirdparty", "m.id.phone":
			return "", httputil.Unknown("Logging in with a third-party identifier is not supported; use m.id.user")
		case "":
			return "", httputil.MissingParam("identifier.type is required")
		default:
			return "", httputil.Unknown("Unknown identifier type %q", truncate(id.Type, 64))
		}
	}
	if legacyUser != "" {
		return legacyUser, nil
	}
	if legacyMedium != "" {
		return "", httputil.Unknown("Logging in with a third-party identifier is not supported; use m.id.user")
	}
	return "", httputil.MissingParam("identifier is required")
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
