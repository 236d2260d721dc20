package clientapi

import (
	"context"
	"strconv"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

// TestSyncFilterCache: a filter named again (inline or by ID) is parsed once and
// shared; a refused filter is refused every time; filter IDs are per user.
func TestSyncFilterCache(t *testing.T) {
	s := newDeviceTestServer(t)
	ctx := context.Background()
	inline := `{"room":{"timeline":{"limit":3}}}`
	a, err := s.syncFilter(ctx, "@alice:test", inline)
	if err != nil || a.GetRoom().GetTimeline().LimitOr(10) != 3 {
		t.Fatalf("inline filter = %+v, %v", a, err)
	}
	if b, _ := s.syncFilter(ctx, "@alice:test", inline); b != a {
		t.Error("the same inline filter was parsed twice")
	}
	for i := 0; i < 2; i++ {
		if _, err := s.syncFilter(ctx, "@alice:test", `{"room":{"timeline":{"limit":"x"}}}`); err == nil {
			t.Fatal("a bad inline filter was accepted")
		}
	}
	var id int64
	if err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		id, err = storage.InsertFilter(ctx, tx, "@alice:test", []byte(`{"room":{"timeline":{"limit":5}}}`))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	param := strconv.FormatInt(id, 10)
	f, err := s.syncFilter(ctx, "@alice:test", param)
	if err != nil || f.GetRoom().GetTimeline().LimitOr(10) != 5 {
		t.Fatalf("stored filter = %+v, %v", f, err)
	}
	if g, _ := s.syncFilter(ctx, "@alice:test", param); g != f {
		t.Error("the stored filter was read twice")
	}
	if _, err := s.syncFilter(ctx, "@bob:test", param); err == nil {
		t.Error("bob used alice's filter ID")
	}
}
