package domain

// Receipt says what a committed write produced.
type Receipt struct {
	// Version is the aggregate's version after the write.
	Version int64
	// LSN is the leader's WAL position after the commit: a replica that has
	// replayed past it has the write.
	LSN string
	// Replayed is true when an Idempotency-Key matched an earlier request
	// and nothing new was written.
	Replayed bool
}

// Idempotency identifies a create request that a client may retry. The zero
// value means the request carried no key.
type Idempotency struct {
	Key string
	// Hash is a digest of the request (route and canonical body): the same
	// key with another hash is an EKEYREUSED error.
	Hash []byte
}

// MaxIdempotencyKeyLen bounds the Idempotency-Key header.
const MaxIdempotencyKeyLen = 200
