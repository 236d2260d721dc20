// Package state stores room state as snapshots made of immutable blocks.
//
// A state entry maps (event type NID, state key NID) to an event NID. A block is a
// sorted run of at most maxBlock entries; a snapshot is the sorted list of blocks that
// together hold the whole state. Changing state rewrites only the blocks the change
// touches and writes a new block list, so a state event in a 10,000-member room writes
// one block of ~128 entries and a list of ~80 block references, and reading one key
// reads one block, whatever the length of the room's history.
package state

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Key is the (event type NID, state key NID) of a state entry.
type Key struct{ Type, StateKey int64 }

// Compare orders keys by type then state key.
func (k Key) Compare(o Key) int {
	switch {
	case k.Type < o.Type:
		return -1
	case k.Type > o.Type:
		return 1
	case k.StateKey < o.StateKey:
		return -1
	case k.StateKey > o.StateKey:
		return 1
	}
	return 0
}

// Entry is one state entry. Event 0 in a change set means "remove the key".
type Entry struct {
	Key
	Event int64
}

// Block is an immutable sorted run of entries.
type Block struct {
	NID     int64
	Entries []Entry
}

// BlockRef points at a block from a snapshot.
type BlockRef struct {
	First Key   // key of the block's first entry
	NID   int64 // block NID
	Len   int   // number of entries
	blk   *Block
}

const formatV1 = 1

var errCorrupt = errors.New("state: corrupt encoding")

// encodeEntries encodes sorted entries: version, count, then per entry the type delta,
// the state key (delta when the type repeats) and the event NID, as varints.
func encodeEntries(entries []Entry) []byte {
	buf := make([]byte, 0, 2+len(entries)*10)
	buf = append(buf, formatV1)
	buf = binary.AppendUvarint(buf, uint64(len(entries)))
	var prev Key
	for i, e := range entries {
		dt := e.Type - prev.Type
		buf = binary.AppendUvarint(buf, uint64(dt))
		if i > 0 && dt == 0 {
			buf = binary.AppendUvarint(buf, uint64(e.StateKey-prev.StateKey))
		} else {
			buf = binary.AppendUvarint(buf, uint64(e.StateKey))
		}
		buf = binary.AppendUvarint(buf, uint64(e.Event))
		prev = e.Key
	}
	return buf
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.b = r.b[n:]
	return int64(v)
}

func newReader(data []byte) (*reader, error) {
	if len(data) == 0 || data[0] != formatV1 {
		return nil, fmt.Errorf("%w: unknown format", errCorrupt)
	}
	return &reader{b: data[1:]}, nil
}

func decodeEntries(data []byte) ([]Entry, error) {
	r, err := newReader(data)
	if err != nil {
		return nil, err
	}
	n := r.uvarint()
	if r.err != nil || n < 0 || n > int64(len(data)) {
		return nil, errCorrupt
	}
	out := make([]Entry, n)
	var prev Key
	for i := range out {
		dt := r.uvarint()
		sk := r.uvarint()
		ev := r.uvarint()
		k := Key{Type: prev.Type + dt}
		if i > 0 && dt == 0 {
			k.StateKey = prev.StateKey + sk
		} else {
			k.StateKey = sk
		}
		out[i] = Entry{Key: k, Event: ev}
		prev = k
	}
	if r.err != nil {
		return nil, r.err
	}
	return out, nil
}

// encodeRefs encodes a snapshot's block list: version, count, then per block its
// first key, NID and length as varints.
func encodeRefs(refs []BlockRef) []byte {
	buf := make([]byte, 0, 2+len(refs)*12)
	buf = append(buf, formatV1)
	buf = binary.AppendUvarint(buf, uint64(len(refs)))
	for _, r := range refs {
		buf = binary.AppendUvarint(buf, uint64(r.First.Type))
		buf = binary.AppendUvarint(buf, uint64(r.First.StateKey))
		buf = binary.AppendUvarint(buf, uint64(r.NID))
		buf = binary.AppendUvarint(buf, uint64(r.Len))
	}
	return buf
}

func decodeRefs(data []byte) ([]BlockRef, error) {
	r, err := newReader(data)
	if err != nil {
		return nil, err
	}
	n := r.uvarint()
	if r.err != nil || n < 0 || n > int64(len(data)) {
		return nil, errCorrupt
	}
	out := make([]BlockRef, n)
	for i := range out {
		out[i].First.Type = r.uvarint()
		out[i].First.StateKey = r.uvarint()
		out[i].NID = r.uvarint()
		out[i].Len = int(r.uvarint())
	}
	if r.err != nil {
		return nil, r.err
	}
	return out, nil
}
