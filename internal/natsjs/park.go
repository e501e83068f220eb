package natsjs

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
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
