package natsjs

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ParkPrefix is the first token of parked messages' subjects.
const ParkPrefix = "parked"

// Park copies msg to parked.<subject> with the reason in a header and
// terminates it, so that a message that can never be processed stops
// blocking and stays available for inspection. The parked stream must exist
// (see EnsureStream).
func (c *Conn) Park(ctx context.Context, msg Msg, reason string) error {
	parked := &nats.Msg{Subject: ParkPrefix + "." + msg.Subject(), Data: msg.Data(), Header: nats.Header{}}
	parked.Header.Set("Parked-Reason", reason)
	if _, err := c.JS.PublishMsg(ctx, parked); err != nil {
		return fmt.Errorf("park %s: %w", msg.Subject(), err)
	}
	if err := msg.Term(); err != nil {
		return fmt.Errorf("terminate parked %s: %w", msg.Subject(), err)
	}
	return nil
}

// ParkedStream names the stream that keeps the parked messages of stream.
func ParkedStream(stream string) string { return stream + "_PARKED" }

// PurgeSubjects removes from stream, and from its parked stream, every
// message whose subject matches one of filters (wildcards allowed).
func (c *Conn) PurgeSubjects(ctx context.Context, stream string, filters []string) error {
	for _, s := range []struct{ name, prefix string }{{stream, ""}, {ParkedStream(stream), ParkPrefix + "."}} {
		st, err := c.JS.Stream(ctx, s.name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue // nothing to purge: no message was ever kept there
		}
		if err != nil {
			return fmt.Errorf("stream %s: %w", s.name, err)
		}
		for _, f := range filters {
			if err := st.Purge(ctx, jetstream.WithPurgeSubject(s.prefix+f)); err != nil {
				return fmt.Errorf("purge %s from %s: %w", s.prefix+f, s.name, err)
			}
		}
	}
	return nil
}
