package readmodel

import (
	"encoding/binary"
	"sort"
)

// Members is the encoded list of a collection's members and the version of
// each that its body reflects: 16 bytes per member (id, version, both
// big-endian), sorted by id. One compact value keeps a rebuild of a large
// collection to one cheap write, and a lookup is a binary search with no
// decoding.
type Members []byte

// EncodeMembers encodes a map of member id to version.
func EncodeMembers(versions map[int64]int64) Members {
	ids := make([]int64, 0, len(versions))
	for id := range versions {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	out := make(Members, 16*len(ids))
	for i, id := range ids {
		out.set(i, id, versions[id])
	}
	return out
}

// Len returns how many members m lists.
func (m Members) Len() int { return len(m) / 16 }

// Version returns the version of member id, 0 when it is not a member.
func (m Members) Version(id int64) int64 {
	n := m.Len()
	i := sort.Search(n, func(i int) bool { return m.id(i) >= id })
	if i < n && m.id(i) == id {
		return m.version(i)
	}
	return 0
}

func (m Members) id(i int) int64      { return int64(binary.BigEndian.Uint64(m[16*i:])) }
func (m Members) version(i int) int64 { return int64(binary.BigEndian.Uint64(m[16*i+8:])) }

func (m Members) set(i int, id, version int64) {
	binary.BigEndian.PutUint64(m[16*i:], uint64(id))
	binary.BigEndian.PutUint64(m[16*i+8:], uint64(version))
}

// Sum returns the sum of the members' versions.
func (m Members) Sum() int64 {
	var n int64
	for i := range m.Len() {
		n += m.version(i)
	}
	return n
}
