package test

import (
	"fmt"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/myelin-chat/myelin/storage/storagetest"
)

// BenchmarkFederationSendPDUs measures how fast a Myelin server accepts PDUs that one
// remote server (a fake origin signing as itself) pushes into one room through PUT
// /send: each iteration is one transaction of 50 chained messages, all of which must
// be accepted. It reports PDUs/s and ns/PDU (wall time of the requests, building and
// signing the PDUs excluded), on SQLite and PostgreSQL.
func BenchmarkFederationSendPDUs(b *testing.B) {
	const perTxn = 50
	for _, engine := range storagetest.Engines {
		b.Run(engine, func(b *testing.B) {
			if engine == "postgres" {
				storagetest.RequirePostgres(b)
			}
			f := newFedRoom(b, engine, nil)
			prev := f.join
			var total time.Duration
			b.ResetTimer()
			for n := 0; n < b.N; n++ {
				b.StopTimer()
				pdus := make([]gomatrixserverlib.PDU, perTxn)
				for i := range pdus {
					pdus[i] = f.msg(b, fmt.Sprintf("bench %d/%d", n, i), prev)
					prev = pdus[i]
				}
				b.StartTimer()
				start := time.Now()
				res := f.send(b, f.o, pdus...)
				total += time.Since(start)
				b.StopTimer()
				for _, p := range pdus {
					if e, ok := res[p.EventID()]; !ok || e != "" {
						b.Fatalf("PDU %s: %q (%v)", p.EventID(), e, ok)
					}
				}
			}
			pduCount := float64(b.N * perTxn)
			b.ReportMetric(float64(total.Nanoseconds())/pduCount, "ns/PDU")
			b.ReportMetric(pduCount/total.Seconds(), "PDUs/s")
		})
	}
}
