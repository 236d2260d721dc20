package test

import "testing"

// TestJSClientSync runs test/js/sync.mjs (matrix-js-sdk sync loops: messages, typing,
// receipts, read markers, room name, catch-up with back-pagination) on both engines.
func TestJSClientSync(t *testing.T) {
	forEachSyncEngine(t, func(t *testing.T, e *syncEnv) {
		runJS(t, "sync.mjs", e.hs.URL)
	})
}
