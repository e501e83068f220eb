package readmodel

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// Entry is what one key holds: a ready body and what the reader needs to
// decide whether and how to serve it.
type Entry struct {
	Body []byte
	ETag string
	// Version is the version of the data the body reflects: the aggregate's
	// version, or for a collection the sum of its members' versions, which
	// only grows.
	Version int64
	// Org owns the data; a caller of another organization gets 404.
	Org int64
	// Deleted marks a tombstone: the resource is gone, and a late event can
	// still be told apart from a new one.
	Deleted bool
	// Members lists, for a collection, each member (tombstones included)
	// with the version the body reflects, so that a read that must see a
	// given write can check just that member.
	Members Members
	// First and Last bound a factory's history (factory keys only).
	First, Last *int64
}

// Record is an entry with its key.
type Record struct {
	Key   string
	Entry Entry
}

// HashETag returns a strong ETag derived from body. The hash is xxHash: a
// collection body of megabytes is hashed on every change, and xxHash does
// that several times faster than FNV.
func HashETag(body []byte) string {
	return fmt.Sprintf(`"%016x"`, xxhash.Sum64(body))
}

// VersionETag returns the ETag of a /v1 resource: its version, so that a
// client can send it back in If-Match.
func VersionETag(version int64) string { return fmt.Sprintf(`"%d"`, version) }

// Rule is the version guard of a read-model write.
type Rule string

// Rules.
const (
	// Next applies an event: only onto the version just before it. A key
	// further behind is refused: events were missed and it must be rebuilt.
	Next Rule = "next"
	// Newer is for rebuilds: replace anything not newer.
	Newer Rule = "newer"
	// Exact is read-modify-write: write only onto the version that was read;
	// a refusal means someone wrote in between.
	Exact Rule = "exact"
	// AllExact is Exact for every record of the write, or none: when one
	// key already holds its record's version or a newer one, nothing is
	// written and every record reports Dropped; else when one is refused,
	// nothing is written and every record reports Refused.
	AllExact Rule = "all"
)

// Results of a guarded write, per key.
const (
	Written = 1  // the key now holds the record
	Dropped = 0  // the key already held this version or a newer one
	Refused = -1 // the rule refused the write; see Rule
	Fenced  = -2 // the organization was deleted: nothing of it is written
)

// Write is one guarded, atomic change of the read model: records written
// under a rule, and derived bodies marked dirty in the same step, so that
// once it returns both are in place or neither is.
type Write struct {
	// Org owns the records; when set, nothing is written once it is
	// deleted.
	Org     int64
	Rule    Rule
	Records []Record
	// Expected gives, for the Exact and AllExact rules, the version each
	// record's key must hold.
	Expected []int64
	// Dirty names derived bodies to rebuild, or gives MemberMark when the
	// body can be patched with just the member that changed.
	Dirty []string
	// Index, when set, names a set that gets every record key that exists
	// after the write: a factory's buckets (BucketIndexKey), found again
	// when it is deleted.
	Index string
}

// MemberMark marks the derived body name dirty and records that member
// changed: a mark of the body and one of the member, so that the rebuild
// can patch just the members that changed.
func MemberMark(name string, member int64) string { return name + "|" + id(member) }

// SplitMark returns the body a dirty mark is for, and the member it records
// (0 for a mark of the body itself).
func SplitMark(mark string) (name string, member int64) {
	name, m, found := strings.Cut(mark, "|")
	if !found {
		return mark, 0
	}
	member, err := strconv.ParseInt(m, 10, 64)
	if err != nil || member <= 0 {
		return name, 0
	}
	return name, member
}
