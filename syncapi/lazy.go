package syncapi

import "sync"

// lazyCache remembers, per device and room, which member events a device was sent, so
// lazy-loading /sync does not resend them (unless include_redundant_members). It is a
// cache: forgetting (restart, eviction) only means resending.
type lazyCache struct {
	mu      sync.Mutex
	devices map[string]map[string]map[string]string // device key → room → user → member event ID
}

const lazyCacheMaxDevices = 10000

func newLazyCache() *lazyCache { return &lazyCache{devices: map[string]map[string]map[string]string{}} }

func lazyKey(userID, deviceID string) string { return userID + "|" + deviceID }

// reset forgets a device (initial sync).
func (c *lazyCache) reset(userID, deviceID string) {
	c.mu.Lock()
	delete(c.devices, lazyKey(userID, deviceID))
	c.mu.Unlock()
}

// sent reports whether the device was sent this member event.
func (c *lazyCache) sent(userID, deviceID, roomID, member, eventID string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.devices[lazyKey(userID, deviceID)][roomID][member] == eventID
}

// record notes member events sent to a device.
func (c *lazyCache) record(userID, deviceID, roomID string, members map[string]string) {
	if len(members) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	k := lazyKey(userID, deviceID)
	d := c.devices[k]
	if d == nil {
		if len(c.devices) >= lazyCacheMaxDevices {
			c.devices = map[string]map[string]map[string]string{}
		}
		d = map[string]map[string]string{}
		c.devices[k] = d
	}
	r := d[roomID]
	if r == nil {
		r = map[string]string{}
		d[roomID] = r
	}
	for u, id := range members {
		r[u] = id
	}
}
