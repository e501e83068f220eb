// Package live sends organizations' changes to dashboards as they are
// projected: Server-Sent Events (GET /v1/stream) from each organization's
// live log in Redis (see readmodel/live.go). A reader follows the log of
// each organization it has streams of once, and hands every entry to all
// of them: a stream costs the broker and Redis nothing of its own.
package live

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sprockets-api/sprockets/internal/auth"
	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/readmodel"
)

// Log reads organizations' live logs (rediscache.Cache.ReadLive).
type Log interface {
	ReadLive(ctx context.Context, org int64, after string, count int64) (readmodel.LiveLog, error)
}

// Authenticator says what a token may do now (auth.Authenticator): a
// stream's token is checked again whenever grants change, and at every
// heartbeat.
type Authenticator interface {
	Authenticate(ctx context.Context, token string, admit auth.Admit) (domain.Principal, error)
}

// Config tunes a Hub.
type Config struct {
	// Heartbeat is how often an idle stream sends a comment.
	Heartbeat time.Duration
	// MaxStreams bounds the streams open at once; MaxPerClient those of
	// one client (a token, or an address); MaxPerOrg those of one
	// organization, whatever its tokens, so that no one organization can
	// take a reader's every stream.
	MaxStreams, MaxPerClient, MaxPerOrg int
	// Poll is how often an organization's log is read when no change was
	// told (the feed of changes may have been lost).
	Poll time.Duration
}

const (
	// batch is how many entries one read of a log returns at most.
	batch = 512
	// openWait bounds how long opening a stream waits for its
	// organization's log to be found.
	openWait = 2 * time.Second
	// coalesce is the least time between two reads of one log: changes
	// that come closer together reach the streams in one write.
	coalesce = 5 * time.Millisecond
)

// Hub follows the organizations' logs and fans their entries out to the
// streams open on this reader.
type Hub struct {
	log   Log
	authn Authenticator
	cfg   Config
	slog  *slog.Logger

	mu      sync.Mutex
	orgs    map[int64]*orgLog
	clients map[string]int // open streams per client
	total   int
	ctx     context.Context
	// checks is closed, and replaced, when grants changed.
	checks atomic.Pointer[chan struct{}]

	open    prometheus.Gauge
	sent    prometheus.Counter
	ended   *prometheus.CounterVec
	resets  *prometheus.CounterVec
	refused *prometheus.CounterVec
}

// New returns a Hub; Run must be running for its streams to get entries.
// Its metrics are registered with reg.
func New(log Log, authn Authenticator, cfg Config, logger *slog.Logger, reg prometheus.Registerer) *Hub {
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.MaxPerClient <= 0 {
		cfg.MaxPerClient = cfg.MaxStreams
	}
	if cfg.MaxPerOrg <= 0 {
		cfg.MaxPerOrg = cfg.MaxStreams
	}
	h := &Hub{
		log: log, authn: authn, cfg: cfg, slog: logger,
		orgs: map[int64]*orgLog{}, clients: map[string]int{}, ctx: context.Background(),
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sprockets_live_streams", Help: "Streams of live changes open on this reader.",
		}),
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sprockets_live_events_total", Help: "Events sent on streams of live changes.",
		}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sprockets_live_streams_ended_total", Help: "Streams of live changes ended, by reason.",
		}, []string{"reason"}),
		resets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sprockets_live_resets_total", Help: "Streams told to reload (events they would have needed are gone), by reason.",
		}, []string{"reason"}),
	}
	h.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sprockets_live_refused_total", Help: "Streams of live changes refused, by the limit in the way: reader_full (503), org_limit or client_limit (429).",
	}, []string{"reason"})
	for _, reason := range []string{"reader_full", "org_limit", "client_limit"} {
		h.refused.WithLabelValues(reason) // each series exists, at 0, before its first refusal
	}
	reg.MustRegister(h.open, h.sent, h.ended, h.resets, h.refused)
	checks := make(chan struct{})
	h.checks.Store(&checks)
	return h
}

// Run serves the hub until ctx is done; then every stream ends (its client
// reconnects, to this reader or another, and resumes).
func (h *Hub) Run(ctx context.Context) error {
	h.mu.Lock()
	h.ctx = ctx
	h.mu.Unlock()
	<-ctx.Done()
	return ctx.Err()
}

// Changed is told of every change of the read model (the feed): a change
// of an organization's log wakes the reading of it.
func (h *Hub) Changed(key string, _ int64) {
	org, ok := readmodel.LiveOrg(key)
	if !ok {
		return
	}
	h.mu.Lock()
	o := h.orgs[org]
	h.mu.Unlock()
	if o != nil {
		o.poke()
	}
}

// Recheck has every stream check its token again: a grant was revoked or
// changed, or the feed that tells of it was lost.
func (h *Hub) Recheck() {
	next := make(chan struct{})
	close(*h.checks.Swap(&next))
}

// Filter says which changes a stream wants.
type Filter struct {
	// Kinds holds readmodel.LiveSprocket and/or LiveFactory; empty: both.
	Kinds map[string]bool
	// Factories, when not empty, limits factory changes to these ids.
	Factories map[int64]bool
}

func (f Filter) wants(c readmodel.Change) bool {
	if c.Type == readmodel.LiveReset {
		return true // every stream reads again
	}
	if len(f.Kinds) > 0 && !f.Kinds[c.Kind] {
		return false
	}
	return c.Kind != readmodel.LiveFactory || len(f.Factories) == 0 || f.Factories[c.ID]
}

// Request is what a stream is opened with.
type Request struct {
	Principal domain.Principal
	// Token is the bearer token the stream was opened with ("" for a
	// public read): checked again while the stream lasts.
	Token string
	// Client names who counts against MaxPerClient.
	Client string
	// From is the Last-Event-ID the client resumes after ("": from now).
	From   string
	Filter Filter
}

// Open opens a stream of r.Principal's organization. A malformed From is
// an EINVALID error; too many streams, of the client or of its
// organization (ELIMITED) or of the reader (EUNAVAILABLE), are refused.
// Serve sends it; it ends when Serve returns.
func (h *Hub) Open(ctx context.Context, r Request) (*Stream, error) {
	var from Position
	if r.From != "" {
		var ok bool
		if from, ok = ParsePosition(r.From); !ok {
			return nil, domain.Errorf(domain.EINVALID, "Last-Event-ID: %q is not an event id this stream sent", clip(r.From))
		}
	}
	h.mu.Lock()
	org := r.Principal.OrgID
	o, ok := h.orgs[org]
	switch {
	case h.total >= h.cfg.MaxStreams:
		h.mu.Unlock()
		h.refused.WithLabelValues("reader_full").Inc()
		return nil, domain.Errorf(domain.EUNAVAILABLE, "this reader holds as many streams as it may (%d); try again", h.cfg.MaxStreams)
	case ok && len(o.subs) >= h.cfg.MaxPerOrg:
		h.mu.Unlock()
		h.refused.WithLabelValues("org_limit").Inc()
		return nil, domain.Errorf(domain.ELIMITED, "%d streams are open for this organization on this reader, as many as one organization may hold", h.cfg.MaxPerOrg)
	case h.clients[r.Client] >= h.cfg.MaxPerClient:
		h.mu.Unlock()
		h.refused.WithLabelValues("client_limit").Inc()
		return nil, domain.Errorf(domain.ELIMITED, "%d streams are open with these credentials on this reader, as many as one client may hold", h.cfg.MaxPerClient)
	}
	h.total++
	h.clients[r.Client]++
	h.open.Inc()
	if !ok {
		o = &orgLog{id: org, wake: make(chan struct{}, 1), subs: map[*Stream]struct{}{}, started: make(chan struct{}), more: make(chan struct{})}
		h.orgs[org] = o
		go h.follow(h.ctx, o)
	}
	// Grants that change from now on are checked again: the request's
	// token was checked just before.
	s := &Stream{hub: h, ctx: h.ctx, req: r, org: o, from: from, resume: r.From != "", gone: make(chan struct{}),
		checks: *h.checks.Load()}
	o.subs[s] = struct{}{}
	h.mu.Unlock()

	// The stream starts where the log's follower is: what it reads next
	// comes to the stream; what came before, the stream reads itself.
	wait := time.NewTimer(openWait)
	defer wait.Stop()
	select {
	case <-o.started:
	case <-wait.C:
		s.close("unavailable")
		return nil, domain.Errorf(domain.EUNAVAILABLE, "the organization's live log cannot be read now")
	case <-ctx.Done():
		s.close("client_gone")
		return nil, domain.Errorf(domain.EUNAVAILABLE, "the request ended before its stream opened")
	}
	o.mu.Lock()
	s.start, s.next = o.pos, o.base+uint64(len(o.recent))
	o.mu.Unlock()
	return s, nil
}

// orgLog is one organization's log as this reader follows it: the
// deliveries it read last, which each of its streams sends at its own pace.
type orgLog struct {
	id      int64
	wake    chan struct{}
	started chan struct{}        // closed once pos is known
	subs    map[*Stream]struct{} // guarded by Hub.mu

	mu     sync.Mutex
	pos    Position      // the newest entry read
	recent []delivery    // the last deliveries, oldest first; never changed in place
	bytes  int           // their entries' data
	base   uint64        // the number of recent[0]
	more   chan struct{} // closed, and replaced, when deliveries are added
}

// An organization's follower keeps its last keep deliveries, and at most
// keepBytes of their entries' data, for its streams: a stream further
// behind ends, and its client resumes from the log in Redis.
const (
	keep      = 1024
	keepBytes = 8 << 20
)

// add appends d to o's recent deliveries, and wakes the streams.
func (o *orgLog) add(d delivery) {
	d.size = 0
	for _, e := range d.entries {
		d.size += len(e.Data)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.recent) == keep || o.bytes+d.size > keepBytes {
		// The older half goes, into a new array: streams may hold the old
		// one.
		half := (len(o.recent) + 1) / 2
		for _, old := range o.recent[:half] {
			o.bytes -= old.size
		}
		o.recent = append(make([]delivery, 0, keep), o.recent[half:]...)
		o.base += uint64(half)
	}
	o.recent = append(o.recent, d)
	o.bytes += d.size
	close(o.more)
	o.more = make(chan struct{})
}

// since returns the deliveries from number n on, and a channel closed when
// there are more; behind is true when the first of them is gone.
func (o *orgLog) since(n uint64) (ds []delivery, more <-chan struct{}, behind bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if n < o.base {
		return nil, o.more, true
	}
	return o.recent[n-o.base:], o.more, false
}

func (o *orgLog) poke() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// follow reads o's log whenever it is told of a change, and every Poll,
// until o has no stream left.
func (h *Hub) follow(ctx context.Context, o *orgLog) {
	h.locate(ctx, o)
	t := time.NewTicker(h.cfg.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			h.endAll(o, "shutdown")
			return
		case <-o.wake:
		case <-t.C:
		}
		h.mu.Lock()
		if len(o.subs) == 0 {
			delete(h.orgs, o.id)
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
		h.read(ctx, o)
		time.Sleep(coalesce)
	}
}

// locate finds the newest entry of o's log, where its streams start.
func (h *Hub) locate(ctx context.Context, o *orgLog) {
	defer close(o.started)
	for {
		lg, err := h.log.ReadLive(ctx, o.id, "0-0", 1)
		if err == nil {
			o.mu.Lock()
			o.pos, _ = ParsePosition(lg.Last) // no log: "0-0"
			o.mu.Unlock()
			return
		}
		h.slog.Debug("live log", "org", o.id, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(h.cfg.Poll):
		}
	}
}

// read hands o's entries past its position to its streams, or tells them
// to reload when the log lost entries they need.
func (h *Hub) read(ctx context.Context, o *orgLog) {
	for ctx.Err() == nil {
		lg, err := h.log.ReadLive(ctx, o.id, o.pos.String(), batch)
		if err != nil {
			h.slog.Debug("live log", "org", o.id, "err", err)
			return
		}
		if reason := gap(lg, o.pos); reason != "" {
			last, _ := ParsePosition(lg.Last)
			h.resets.WithLabelValues(reason).Inc()
			o.mu.Lock()
			o.pos = last
			o.mu.Unlock()
			o.add(delivery{reset: reason, at: last})
			return
		}
		if len(lg.Entries) == 0 {
			return
		}
		last, _ := ParsePosition(lg.Entries[len(lg.Entries)-1].ID)
		o.mu.Lock()
		o.pos = last
		o.mu.Unlock()
		o.add(delivery{entries: lg.Entries})
		if len(lg.Entries) < batch {
			return
		}
	}
}

// gap says why a log read past after cannot be trusted to hold every
// entry after it ("" when it can).
func gap(lg readmodel.LiveLog, after Position) string {
	if !lg.Exists {
		if after.IsZero() {
			return ""
		}
		return "log_lost" // Redis lost it (or never had it)
	}
	last, _ := ParsePosition(lg.Last)
	deleted, _ := ParsePosition(lg.Trimmed)
	switch {
	case last.Less(after):
		return "log_lost" // made again since: its ids started over
	case after.Less(deleted):
		return "too_old" // entries after it were trimmed
	case !after.IsZero() && deleted.Less(after) && !lg.HoldsAfter:
		// Not trimmed, yet not there: Redis lost it, and whatever came
		// after it that it did not keep.
		return "log_lost"
	}
	return ""
}

func (h *Hub) endAll(o *orgLog, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range o.subs {
		h.drop(s, reason)
	}
	delete(h.orgs, o.id)
}

// drop removes s from its organization's streams and tells it to end;
// h.mu is held.
func (h *Hub) drop(s *Stream, reason string) {
	if _, ok := s.org.subs[s]; !ok {
		return
	}
	delete(s.org.subs, s)
	h.total--
	if h.clients[s.req.Client]--; h.clients[s.req.Client] <= 0 {
		delete(h.clients, s.req.Client)
	}
	h.open.Dec()
	h.ended.WithLabelValues(reason).Inc()
	s.why = reason
	close(s.gone)
}

// delivery is what a stream gets from its organization's follower:
// entries, or a reset at a position.
type delivery struct {
	entries []readmodel.LiveEntry // shared by every stream: read only
	reset   string
	at      Position
	size    int // the entries' data, in bytes
}

// Stream is one client's stream of changes.
type Stream struct {
	hub    *Hub
	ctx    context.Context // the hub's: done when it stops
	req    Request
	org    *orgLog
	from   Position        // the client's Last-Event-ID
	resume bool            // whether it sent one
	start  Position        // where the follower was when the stream opened
	next   uint64          // the number of the next delivery of org to send
	gone   chan struct{}   // closed by Hub.drop
	checks <-chan struct{} // closed when grants change (Hub.checks when opened)
	why    string          // why it was dropped; set before gone is closed
	sent   Position
}

func (s *Stream) close(reason string) {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	s.hub.drop(s, reason)
}

// Serve sends the stream to w until the client is gone, its token no
// longer reads the organization, the hub stops, or it fell too far behind.
// deadline bounds each write (the connection's write deadline); left is
// closed when the client closes its connection. Without left, only a
// failed write tells that the client left, a write or two after it did:
// up to three heartbeats (45 s by default), while the stream still counts
// against its client's and its organization's limits.
func (s *Stream) Serve(w *bufio.Writer, deadline func(time.Time) error, left <-chan struct{}) {
	reason := s.serve(w, deadline, left)
	s.close(reason)
}

func (s *Stream) serve(w *bufio.Writer, deadline func(time.Time) error, left <-chan struct{}) string {
	ctx := s.ctx
	flush := func() bool {
		_ = deadline(time.Now().Add(2 * s.hub.cfg.Heartbeat))
		return w.Flush() == nil
	}
	w.WriteString("retry: 1000\n\n") // a client reconnects after a second
	if err := s.catchUp(ctx, w); err != nil {
		return "unavailable"
	}
	if !flush() {
		return "client_gone"
	}
	beat := time.NewTicker(s.hub.cfg.Heartbeat)
	defer beat.Stop()
	// Taken before each check: a Recheck after it closes this channel.
	checks := s.checks
	for {
		// Everything delivered since the last write, in one write: a
		// stream that falls behind sends more at a time.
		ds, more, behind := s.org.since(s.next)
		if behind {
			// The client resumes from the log in Redis.
			s.end(w, "slow")
			flush()
			return "slow"
		}
		if len(ds) > 0 {
			for _, d := range ds {
				s.write(w, d)
			}
			s.next += uint64(len(ds))
			if !flush() {
				return "client_gone"
			}
		}
		select {
		case <-s.gone:
			return s.why
		case <-left:
			return "client_gone"
		case <-more:
			continue
		case <-checks:
			checks = *s.hub.checks.Load()
			if reason := s.check(ctx); reason != "" {
				s.end(w, reason)
				flush()
				return reason
			}
			continue
		case <-beat.C:
			if reason := s.check(ctx); reason != "" {
				s.end(w, reason)
				flush()
				return reason
			}
			w.WriteString(": heartbeat\n\n")
		}
		if !flush() {
			return "client_gone"
		}
	}
}

// catchUp writes what the client missed since its Last-Event-ID, up to
// where the follower was when the stream opened; or, when the log no longer
// holds all of it, a reset; or, for a new stream, a ready event at the
// stream's start.
func (s *Stream) catchUp(ctx context.Context, w *bufio.Writer) error {
	if !s.resume {
		s.sent = s.start
		writeEvent(w, s.start, "ready", []byte(`{"id":"`+s.start.String()+`"}`))
		return nil
	}
	s.sent = s.from
	for s.sent.Less(s.start) {
		lg, err := s.hub.log.ReadLive(ctx, s.org.id, s.sent.String(), batch)
		if err != nil {
			return err
		}
		if reason := gap(lg, s.sent); reason != "" {
			s.hub.resets.WithLabelValues(reason).Inc()
			s.write(w, delivery{reset: reason, at: s.start})
			return nil
		}
		for _, e := range lg.Entries {
			if p, _ := ParsePosition(e.ID); s.start.Less(p) {
				return nil // the follower sends it
			}
			s.write(w, delivery{entries: []readmodel.LiveEntry{e}})
		}
		if len(lg.Entries) < batch {
			return nil
		}
	}
	if s.start.Less(s.from) {
		// An id this log never gave: the client cannot know what it has.
		s.hub.resets.WithLabelValues("unknown_id").Inc()
		s.write(w, delivery{reset: "unknown_id", at: s.start})
	}
	return nil
}

// write writes d's entries the client wants and has not had.
func (s *Stream) write(w *bufio.Writer, d delivery) {
	if d.reset != "" {
		s.sent = d.at
		writeEvent(w, d.at, "reset", []byte(`{"reason":"`+d.reset+`"}`))
		return
	}
	skipped := false
	for _, e := range d.entries {
		p, ok := ParsePosition(e.ID)
		if !ok || !s.sent.Less(p) {
			continue
		}
		s.sent = p
		if skipped = !s.req.Filter.wants(e.Change); !skipped {
			writeEvent(w, p, e.Type, e.Data)
			s.hub.sent.Inc()
		}
	}
	if skipped {
		// The id alone moves the client's Last-Event-ID past what it
		// filtered out: a resume does not read it again.
		w.WriteString("id: " + s.sent.String() + "\n\n")
	}
}

// end tells the client why its stream ends.
func (s *Stream) end(w *bufio.Writer, reason string) {
	w.WriteString("event: end\ndata: {\"reason\":\"" + reason + "\"}\n\n")
}

// check says why the stream's token may no longer read its organization
// ("" when it still may).
func (s *Stream) check(ctx context.Context) string {
	if s.req.Token == "" {
		return ""
	}
	p, err := s.hub.authn.Authenticate(ctx, s.req.Token, func() error { return nil })
	switch {
	case errors.Is(err, auth.ErrUnauthenticated):
		return "unauthenticated"
	case err != nil:
		return "unavailable" // what the token may do cannot be known
	case p.OrgID != s.req.Principal.OrgID || !p.Can(domain.ScopeRead):
		return "forbidden"
	}
	return ""
}

func writeEvent(w *bufio.Writer, id Position, event string, data []byte) {
	w.WriteString("id: ")
	w.WriteString(id.String())
	w.WriteString("\nevent: ")
	w.WriteString(event)
	w.WriteString("\ndata: ")
	w.Write(data)
	w.WriteString("\n\n")
}

// Position is an entry's id in a log: Redis stream ids, "ms-seq".
type Position struct{ ms, seq uint64 }

// ParsePosition reads an id "ms-seq".
func ParsePosition(s string) (Position, bool) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return Position{}, false
	}
	ms, err1 := strconv.ParseUint(a, 10, 64)
	seq, err2 := strconv.ParseUint(b, 10, 64)
	return Position{ms, seq}, err1 == nil && err2 == nil
}

func (p Position) String() string {
	return strconv.FormatUint(p.ms, 10) + "-" + strconv.FormatUint(p.seq, 10)
}

// Less reports whether p comes before q.
func (p Position) Less(q Position) bool { return p.ms < q.ms || (p.ms == q.ms && p.seq < q.seq) }

// IsZero reports whether p is "0-0", before every entry.
func (p Position) IsZero() bool { return p == Position{} }

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
