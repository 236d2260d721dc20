package keys

import (
	"context"
	"encoding/json"
	"sort"
	"sync"
	"time"

	"github.com/myelin-chat/myelin/storage"
)

// DefaultRemoteTimeout bounds the requests to other servers of /keys/query and
// /keys/claim when the client gives no timeout.
const DefaultRemoteTimeout = 10 * time.Second

// RemoteKeys are device and cross-signing keys of users of another server.
type RemoteKeys struct {
	DeviceKeys      map[string]map[string]json.RawMessage
	MasterKeys      map[string]json.RawMessage
	SelfSigningKeys map[string]json.RawMessage
}

// Remote reaches the keys and devices of users of other servers (the federation sender,
// wired in cmd/myelin/app).
type Remote interface {
	// QueryKeys returns device keys (a user mapped to no devices means all of them) and
	// cross-signing keys of users of server.
	QueryKeys(ctx context.Context, server string, users map[string][]string) (*RemoteKeys, error)
	// ClaimKeys claims one-time keys of users of server: user → device → algorithm.
	ClaimKeys(ctx context.Context, server string, want map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error)
	// QueueToDevice queues send-to-device messages for users of other servers in tx and
	// returns the servers to Wake once tx committed.
	QueueToDevice(ctx context.Context, tx *storage.Tx, sender, eventType, messageID string, messages map[string]map[string]json.RawMessage) ([]string, error)
	// Wake tells the senders of servers that messages were committed for them.
	Wake(servers ...string)
}

// WithRemote returns the component using r for users of other servers (without one,
// they are listed in failures and to-device messages for them are dropped).
func (s *Service) WithRemote(r Remote) *Service {
	s.remote = r
	return s
}

// remoteTimeout turns a request's timeout (milliseconds) into a duration.
func remoteTimeout(ms *int64) time.Duration {
	if ms == nil || *ms <= 0 {
		return DefaultRemoteTimeout
	}
	return min(time.Duration(*ms)*time.Millisecond, time.Minute)
}

// failureOf is the failures entry for a server that could not be asked.
func failureOf(err error) map[string]any {
	return map[string]any{"status": 503, "message": err.Error()}
}

// forEachServer runs fn for every server concurrently, under one timeout.
func forEachServer[T any](ctx context.Context, timeout time.Duration, byServer map[string]T, fn func(ctx context.Context, server string, v T)) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	servers := make([]string, 0, len(byServer))
	for srv := range byServer {
		servers = append(servers, srv)
	}
	sort.Strings(servers)
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(ctx, srv, byServer[srv])
		}()
	}
	wg.Wait()
}

// remoteMasterKey returns the master key of a user of another server as its server
// publishes it.
func (s *Service) remoteMasterKey(ctx context.Context, server, userID string) (map[string]storage.CrossSigningKey, *SignatureFailure) {
	if s.remote == nil {
		f := failure("M_UNKNOWN", "keys of users on other servers cannot be reached")
		return nil, &f
	}
	ctx, cancel := context.WithTimeout(ctx, DefaultRemoteTimeout)
	defer cancel()
	keys, err := s.remote.QueryKeys(ctx, server, map[string][]string{userID: {}})
	if err != nil {
		f := failure("M_UNKNOWN", "cannot get the keys of %s: %v", userID, err)
		return nil, &f
	}
	raw, ok := keys.MasterKeys[userID]
	if !ok {
		f := failure("M_NOT_FOUND", "%s has no master key", userID)
		return nil, &f
	}
	var k struct {
		Keys map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(raw, &k); err != nil || len(k.Keys) != 1 {
		f := failure("M_NOT_FOUND", "%s has no valid master key", userID)
		return nil, &f
	}
	var pub string
	for _, v := range k.Keys {
		pub = v
	}
	return map[string]storage.CrossSigningKey{storage.CrossSigningMaster: {UserID: userID, Type: storage.CrossSigningMaster, PublicKey: pub, KeyJSON: raw}}, nil
}

// addOwnSignatures adds to remote users' master keys in resp the signatures requester
// made of them (with their user-signing key), which only this server knows.
func (s *Service) addOwnSignatures(ctx context.Context, requester string, users []string, resp *QueryResponse) error {
	if requester == "" || len(users) == 0 {
		return nil
	}
	sigs, err := storage.QueryKeySignatures(ctx, s.db, users)
	if err != nil {
		return err
	}
	byKey := map[[2]string]map[string]map[string]string{}
	for _, sg := range sigs {
		if sg.SignerUserID != requester {
			continue
		}
		k := [2]string{sg.TargetUserID, sg.TargetKeyID}
		if byKey[k] == nil {
			byKey[k] = map[string]map[string]string{requester: {}}
		}
		byKey[k][requester][sg.SignerKeyID] = sg.Signature
	}
	for k, add := range byKey {
		master, ok := resp.MasterKeys[k[0]]
		if !ok {
			continue
		}
		var mk struct {
			Keys map[string]string `json:"keys"`
		}
		if json.Unmarshal(master, &mk) != nil || mk.Keys["ed25519:"+k[1]] != k[1] {
			continue // a signature of an older master key
		}
		merged, err := mergeSignatures(master, add, nil)
		if err != nil {
			return err
		}
		resp.MasterKeys[k[0]] = merged
	}
	return nil
}

// queryRemote fills resp with the keys of users of other servers (server → users).
func (s *Service) queryRemote(ctx context.Context, timeout time.Duration, byServer map[string]map[string][]string, resp *QueryResponse) {
	var mu sync.Mutex
	forEachServer(ctx, timeout, byServer, func(ctx context.Context, server string, users map[string][]string) {
		keys, err := s.remote.QueryKeys(ctx, server, users)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			resp.Failures[server] = failureOf(err)
			return
		}
		for u := range users {
			if devs, ok := keys.DeviceKeys[u]; ok {
				resp.DeviceKeys[u] = devs
			} else {
				resp.DeviceKeys[u] = map[string]json.RawMessage{}
			}
			if k, ok := keys.MasterKeys[u]; ok {
				resp.MasterKeys[u] = k
			}
			if k, ok := keys.SelfSigningKeys[u]; ok {
				resp.SelfSigningKeys[u] = k
			}
		}
	})
}

// claimRemote fills resp with one-time keys claimed from other servers.
func (s *Service) claimRemote(ctx context.Context, timeout time.Duration, byServer map[string]map[string]map[string]string, resp *ClaimResponse) {
	var mu sync.Mutex
	forEachServer(ctx, timeout, byServer, func(ctx context.Context, server string, want map[string]map[string]string) {
		got, err := s.remote.ClaimKeys(ctx, server, want)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			resp.Failures[server] = failureOf(err)
			return
		}
		for u, devs := range got {
			resp.OneTimeKeys[u] = devs
		}
	})
}
