package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/sprockets-api/sprockets/internal/auth"
	"github.com/sprockets-api/sprockets/internal/config"
	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/postgres"
	"github.com/sprockets-api/sprockets/internal/rediscache"
)

const adminUsage = `admin commands:
  writer org create NAME [--rate-limit N]      add an organization (N requests/second per token)
  writer org list                              list the organizations
  writer org set-limit NAME N|default          change an organization's rate limit
  writer org delete NAME --yes                 revoke its tokens and remove all its data
  writer token create --org NAME --scopes read,write[,admin] [--name LABEL] [--expires 720h]
                                               create a token; it is printed once, on the first line
  writer token list --org NAME                 list an organization's tokens
  writer token revoke ID                       revoke a token, on every instance at once
  writer audit --org NAME [--limit N] [--after ID]
                                               print an organization's audit trail as JSON lines`

// admin runs the organization, token and audit commands against the leader
// and, for revocations and limit changes, Redis.
type admin struct {
	store *postgres.Store
	reads postgres.Reads
	cfg   config.Writer
	out   io.Writer
}

func runAdmin(ctx context.Context, cfg config.Writer, cmd string, args []string, stdout io.Writer) error {
	store, closeStore, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeStore()
	a := admin{store: store, reads: postgres.NewReads(store.DB()), cfg: cfg, out: stdout}
	sub := ""
	if len(args) > 0 {
		sub, args = args[0], args[1:]
	}
	switch cmd + " " + sub {
	case "org create":
		return a.orgCreate(ctx, args)
	case "org list":
		return a.orgList(ctx)
	case "org set-limit":
		return a.orgSetLimit(ctx, args)
	case "org delete":
		return a.orgDelete(ctx, args)
	case "token create":
		return a.tokenCreate(ctx, args)
	case "token list":
		return a.tokenList(ctx, args)
	case "token revoke":
		return a.tokenRevoke(ctx, args)
	}
	if cmd == "audit" {
		return a.audit(ctx, append([]string{sub}, args...))
	}
	return fmt.Errorf("unknown command %q\n%s", strings.TrimSpace(cmd+" "+sub), adminUsage)
}

// flags parses args into a new flag set; positional holds the arguments
// before the first flag.
func flags(name string, args []string, define func(*flag.FlagSet)) ([]string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	define(fs)
	var positional []string
	for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		positional, args = append(positional, args[0]), args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("%s: %w\n%s", name, err, adminUsage)
	}
	return append(positional, fs.Args()...), nil
}

func (a admin) org(ctx context.Context, name string) (domain.Organization, error) {
	if name == "" {
		return domain.Organization{}, fmt.Errorf("name the organization\n%s", adminUsage)
	}
	return a.reads.Organization(ctx, name)
}

func (a admin) orgCreate(ctx context.Context, args []string) error {
	var limit int
	pos, err := flags("org create", args, func(fs *flag.FlagSet) { fs.IntVar(&limit, "rate-limit", 0, "") })
	if err != nil || len(pos) != 1 {
		return errors.Join(err, fmt.Errorf("usage: writer org create NAME [--rate-limit N]"))
	}
	var rl *int
	if limit > 0 {
		rl = &limit
	}
	o, err := a.store.CreateOrganization(ctx, pos[0], rl)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.out, "organization %q created (id %d)\n", o.Name, o.ID)
	return nil
}

func (a admin) orgList(ctx context.Context) error {
	orgs, err := a.reads.Organizations(ctx)
	if err != nil {
		return err
	}
	for _, o := range orgs {
		limit := "default"
		if o.RateLimit != nil {
			limit = strconv.Itoa(*o.RateLimit) + "/s"
		}
		fmt.Fprintf(a.out, "%d\t%s\trate limit %s\tcreated %s\n", o.ID, o.Name, limit, o.CreatedAt.Format(time.RFC3339))
	}
	return nil
}

func (a admin) orgSetLimit(ctx context.Context, args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("usage: writer org set-limit NAME N|default")
	}
	o, err := a.org(ctx, args[0])
	if err != nil {
		return err
	}
	var limit *int
	if args[1] != "default" {
		n, err := strconv.Atoi(args[1])
		if err != nil || n < 1 {
			return fmt.Errorf("the limit is a positive number of requests per second, or default")
		}
		limit = &n
	}
	if err := a.store.SetRateLimit(ctx, o.ID, limit); err != nil {
		return err
	}
	// Instances hold grants, with their limits, until the feed tells them
	// to forget them.
	cache, closeRedis, err := a.revoker()
	if err != nil {
		return err
	}
	defer closeRedis()
	if err := a.pushAuthChange(ctx, cache); err != nil {
		return fmt.Errorf("the limit is stored, but instances keep the old one until Redis answers: %w", err)
	}
	fmt.Fprintf(a.out, "organization %q: rate limit %s, in force on every instance\n", o.Name, args[1])
	return nil
}

// pushAuthChange tells every instance on the feed to forget the grants it
// holds, then waits out the feed's staleness bound: an instance uses a
// grant it holds only while its feed is fresh, so when this returns, none
// uses one it held before the change (see auth.Authenticator).
func (a admin) pushAuthChange(ctx context.Context, cache *rediscache.Cache) error {
	if err := cache.AuthChanged(ctx); err != nil {
		return err
	}
	return a.waitOutFeed(ctx)
}

// waitOutFeed waits out the feed's staleness bound, and a tenth of it for
// the instances' clocks and timers: by then every instance has heard what
// was published before, or stopped trusting what it holds.
func (a admin) waitOutFeed(ctx context.Context) error {
	select {
	case <-time.After(a.cfg.FeedStaleness + a.cfg.FeedStaleness/10):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// revoker connects to Redis for revocations and limit changes.
func (a admin) revoker() (*rediscache.Cache, func(), error) {
	rdb, err := rediscache.Connect(a.cfg.RedisURL, 2, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	return rediscache.New(rdb), func() { rdb.Close() }, nil
}

func (a admin) orgDelete(ctx context.Context, args []string) error {
	var yes bool
	pos, err := flags("org delete", args, func(fs *flag.FlagSet) { fs.BoolVar(&yes, "yes", false, "") })
	if err != nil || len(pos) != 1 {
		return errors.Join(err, fmt.Errorf("usage: writer org delete NAME --yes"))
	}
	if !yes {
		return fmt.Errorf("deleting %q removes all its data and cannot be undone: add --yes", pos[0])
	}
	o, err := a.org(ctx, pos[0])
	if err != nil {
		return err
	}
	deleted, hashes, err := a.store.DeleteOrganization(ctx, domain.System(o.ID, "cli"), o.ID)
	if err != nil {
		return err
	}
	if err := a.spreadRevocation(ctx, hashes); err != nil {
		return err
	}
	fmt.Fprintf(a.out, "organization %q deleted: its tokens are revoked, its data removed\n", deleted.Name)
	return nil
}

func (a admin) tokenCreate(ctx context.Context, args []string) error {
	var orgName, scopes, name string
	var expires time.Duration
	_, err := flags("token create", args, func(fs *flag.FlagSet) {
		fs.StringVar(&orgName, "org", "", "")
		fs.StringVar(&scopes, "scopes", "", "")
		fs.StringVar(&name, "name", "", "")
		fs.DurationVar(&expires, "expires", 0, "")
	})
	if err != nil {
		return err
	}
	o, err := a.org(ctx, orgName)
	if err != nil {
		return err
	}
	list, err := domain.ParseScopes(scopes)
	if err != nil {
		return err
	}
	var exp *time.Time
	if expires > 0 {
		t := time.Now().Add(expires).UTC()
		exp = &t
	}
	secret, hash, display := auth.NewSecret()
	t, err := a.store.CreateToken(ctx, o.ID, name, hash, display, list, exp)
	if err != nil {
		return err
	}
	fmt.Fprintln(a.out, secret)
	fmt.Fprintf(a.out, "# token %d (%s…) of %q, scopes %s, %s; this is the only time it is shown\n",
		t.ID, t.Prefix, o.Name, strings.Join(t.Scopes, ","), expiry(t.ExpiresAt))
	return nil
}

func expiry(t *time.Time) string {
	if t == nil {
		return "never expires"
	}
	return "expires " + t.Format(time.RFC3339)
}

func (a admin) tokenList(ctx context.Context, args []string) error {
	var orgName string
	if _, err := flags("token list", args, func(fs *flag.FlagSet) { fs.StringVar(&orgName, "org", "", "") }); err != nil {
		return err
	}
	o, err := a.org(ctx, orgName)
	if err != nil {
		return err
	}
	tokens, err := a.reads.Tokens(ctx, o.ID)
	if err != nil {
		return err
	}
	for _, t := range tokens {
		state := "active"
		switch {
		case t.RevokedAt != nil:
			state = "revoked " + t.RevokedAt.Format(time.RFC3339)
		case !t.Usable(time.Now()):
			state = "expired"
		}
		fmt.Fprintf(a.out, "%d\t%s…\t%s\t%s\t%s\t%s\n", t.ID, t.Prefix, t.Name, strings.Join(t.Scopes, ","), expiry(t.ExpiresAt), state)
	}
	return nil
}

func (a admin) tokenRevoke(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: writer token revoke ID")
	}
	id, err := strconv.ParseInt(args[0], 10, 64)
	if err != nil {
		return fmt.Errorf("the token id is a number (see writer token list)")
	}
	t, hash, err := a.store.RevokeToken(ctx, id)
	if err != nil {
		return err
	}
	if err := a.spreadRevocation(ctx, [][]byte{hash}); err != nil {
		return err
	}
	fmt.Fprintf(a.out, "token %d (%s…) revoked\n", t.ID, t.Prefix)
	return nil
}

// spreadRevocation makes every instance refuse the tokens with these
// hashes, whose revocation (and grant repairs) Postgres has committed, and
// returns once they do. Through Redis: the grants are marked revoked there,
// the feed tells instances to forget those they hold, and the feed's bound
// is waited out. When Redis cannot be reached, the repairs stay: every
// instance reads them within half the feed's bound and looks these tokens
// up in Postgres, so waiting out the bound is enough; a writer puts the
// revocation into Redis when it answers again (see auth.Repairer).
func (a admin) spreadRevocation(ctx context.Context, hashes [][]byte) error {
	cache, closeRedis, err := a.revoker()
	if err != nil {
		return err
	}
	defer closeRedis()
	repair := auth.Repairer{Revoke: cache.Revoke, Forget: a.store.ForgetGrantRepairs}
	if err := repair.Repair(ctx, hashes); err != nil {
		fmt.Fprintf(a.out, "the revocation is committed, but could not be carried through to Redis (%v): "+
			"every instance looks these tokens up in Postgres until a writer does it\n", err)
	}
	return a.waitOutFeed(ctx)
}

func (a admin) audit(ctx context.Context, args []string) error {
	var orgName string
	var limit int
	var after int64
	_, err := flags("audit", args, func(fs *flag.FlagSet) {
		fs.StringVar(&orgName, "org", "", "")
		fs.IntVar(&limit, "limit", 100, "")
		fs.Int64Var(&after, "after", 0, "")
	})
	if err != nil {
		return err
	}
	o, err := a.org(ctx, orgName)
	if err != nil {
		return err
	}
	entries, err := a.reads.AuditLog(ctx, o.ID, domain.PageRequest{After: after, Limit: limit})
	if err != nil {
		return err
	}
	enc := json.NewEncoder(a.out)
	for _, e := range entries {
		if err := enc.Encode(e); err != nil {
			return err
		}
	}
	return nil
}
