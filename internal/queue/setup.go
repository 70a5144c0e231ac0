package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// StreamOptions tune the streams Setup creates. Zero values mean defaults.
type StreamOptions struct {
	// Replicas of both streams (1 for a single server, 3 for a cluster). Default 1.
	Replicas int
	// DLQMaxAge is how long dead-letter records are kept. Default 14 days.
	DLQMaxAge time.Duration
	// DLQMaxBytes caps the dead-letter stream; when full it refuses new records
	// (Discard: New) and the failing tasks wait in the task stream. Default 1 GiB.
	DLQMaxBytes int64
	// MaxMsgSize caps one task message. Default 1 MiB (the NATS default max_payload).
	MaxMsgSize int32
	// Duplicates is the Nats-Msg-Id window. Default 2 minutes.
	Duplicates time.Duration
	// Logger is told about existing streams whose settings differ from
	// these and how that was resolved. Default slog.Default().
	Logger *slog.Logger
}

// ConsumerOptions tune the durable pull consumer.
type ConsumerOptions struct {
	// AckWait is how long a delivered task may go without an ack or an
	// InProgress before JetStream redelivers it. Default DefaultAckWait.
	AckWait time.Duration
	// MaxAckPending caps unacknowledged tasks across all consumer processes. Default 1000.
	MaxAckPending int
	// MaxDeliver caps deliveries of one task (-1 unlimited). Default -1.
	MaxDeliver int
	// Logger is told about an existing consumer whose settings differ from
	// these and how that was resolved. Default slog.Default().
	Logger *slog.Logger
}

// Default stream and consumer limits.
const (
	DefaultDLQMaxAge     = 14 * 24 * time.Hour
	DefaultDLQMaxBytes   = 1 << 30
	DefaultMaxMsgSize    = 1 << 20
	DefaultAckWait       = 10 * time.Second // how soon a lost delivery runs again; workers signal progress every third of it
	DefaultMaxAckPending = 1000
)

func (o StreamOptions) withDefaults() StreamOptions {
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.DLQMaxAge <= 0 {
		o.DLQMaxAge = DefaultDLQMaxAge
	}
	if o.DLQMaxBytes <= 0 {
		o.DLQMaxBytes = DefaultDLQMaxBytes
	}
	if o.MaxMsgSize <= 0 {
		o.MaxMsgSize = DefaultMaxMsgSize
	}
	if o.Duplicates <= 0 {
		o.Duplicates = 2 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// TaskStreamConfig is the task stream's configuration.
func TaskStreamConfig(n Names, o StreamOptions) jetstream.StreamConfig {
	o = o.withDefaults()
	return jetstream.StreamConfig{
		Name:        n.TaskStream,
		Description: "nodeq tasks, one subject per node type",
		Subjects:    []string{n.TaskPrefix + ".>"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		MaxMsgSize:  o.MaxMsgSize,
		Duplicates:  o.Duplicates,
		Discard:     jetstream.DiscardOld,
	}
}

// DLQStreamConfig is the dead-letter stream's configuration.
func DLQStreamConfig(n Names, o StreamOptions) jetstream.StreamConfig {
	o = o.withDefaults()
	return jetstream.StreamConfig{
		Name:        n.DLQStream,
		Description: "nodeq dead-letter records, one subject per node type",
		Subjects:    []string{n.DLQPrefix + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		MaxAge:      o.DLQMaxAge,
		MaxBytes:    o.DLQMaxBytes,
		Discard:     jetstream.DiscardNew,
		Duplicates:  o.Duplicates,
	}
}

// ConsumerConfig is the shared durable pull consumer's configuration.
func ConsumerConfig(n Names, o ConsumerOptions) jetstream.ConsumerConfig {
	if o.AckWait <= 0 {
		o.AckWait = DefaultAckWait
	}
	if o.MaxAckPending <= 0 {
		o.MaxAckPending = DefaultMaxAckPending
	}
	if o.MaxDeliver == 0 {
		o.MaxDeliver = -1
	}
	return jetstream.ConsumerConfig{
		Durable:       n.Consumer,
		Description:   "nodeq workers",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.AckWait,
		MaxAckPending: o.MaxAckPending,
		MaxDeliver:    o.MaxDeliver,
		FilterSubject: n.TaskPrefix + ".>",
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// EnsureStreams makes sure the task and dead-letter streams exist with the
// settings nodeq relies on, and the delivery ledger bucket (LedgerBucket). It is idempotent and safe to call from many
// processes at once.
//
// A missing stream is created with TaskStreamConfig or DLQStreamConfig. An
// existing one is looked up first and left alone when it is compatible: its
// subjects cover <prefix>.>, its retention is WorkQueue (tasks) or Limits
// (dead letters), and nodeq's own settings are at least what o asks for
// (replicas, duplicate window, dead-letter age and size, Discard: New on the
// dead-letter stream) and, for the task message size, equal. Only when
// something differs is it updated, starting from the stream's current
// configuration, so that an operator's settings (deny_delete, deny_purge,
// description, metadata, longer retention, more replicas, ...) are kept. If
// the update is refused for lack of permission, a stream with compatible
// subjects and retention is used as it is, with a warning naming what
// differs. A wrong retention, or subjects that do not cover the prefix and
// cannot be fixed, is an error.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, n Names, o StreamOptions) error {
	o = o.withDefaults()
	for _, spec := range []streamSpec{
		{kind: "task", want: TaskStreamConfig(n, o), prefix: n.TaskPrefix},
		{kind: "dead-letter", want: DLQStreamConfig(n, o), prefix: n.DLQPrefix, dlq: true},
	} {
		what := spec.kind + " stream " + spec.want.Name
		if err := retryCreate(ctx, o.Logger, what, func(ctx context.Context) error { return ensureStream(ctx, js, spec, o.Logger) }); err != nil {
			return err
		}
	}
	return retryCreate(ctx, o.Logger, "delivery ledger bucket "+LedgerBucket, func(ctx context.Context) error { return ensureLedger(ctx, js, o.Replicas) })
}

type streamSpec struct {
	kind   string
	want   jetstream.StreamConfig
	prefix string
	dlq    bool
}

// errSetupRace marks a stream or consumer that disappeared between lookup
// and update: retryCreate tries again.
var errSetupRace = errors.New("changed concurrently")

func ensureStream(ctx context.Context, js jetstream.JetStream, s streamSpec, log *slog.Logger) error {
	name := s.want.Name
	var info *jetstream.StreamInfo
	err := apiCall(ctx, js, "STREAM.INFO."+name, func(ctx context.Context) error {
		st, err := js.Stream(ctx, name)
		if err == nil {
			info = st.CachedInfo()
		}
		return err
	})
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		err = apiCall(ctx, js, "STREAM.CREATE."+name, func(ctx context.Context) error {
			_, err := js.CreateStream(ctx, s.want)
			return err
		})
		if errors.Is(err, nats.ErrPermissionViolation) {
			return fmt.Errorf("%s stream %s does not exist and this NATS user may not create it (%w): create it as an operator, or grant the set-up permissions (docs/security.md, Least privilege)", s.kind, name, err)
		}
		if err != nil {
			return fmt.Errorf("create stream %s (subjects %v): %w", name, s.want.Subjects, err)
		}
		return nil
	case errors.Is(err, nats.ErrPermissionViolation):
		return fmt.Errorf("look up %s stream %s: %w (see docs/security.md, Least privilege)", s.kind, name, err)
	case err != nil:
		return fmt.Errorf("look up %s stream %s: %w", s.kind, name, err)
	}

	p := planStream(info.Config, s)
	if p.fatal != "" {
		return fmt.Errorf("%s stream %s is not usable by nodeq: %s; fix or recreate it (nodeq never changes this by itself)", s.kind, name, p.fatal)
	}
	if len(p.diffs) == 0 {
		return nil
	}
	differs := strings.Join(p.diffs, "; ")
	err = apiCall(ctx, js, "STREAM.UPDATE."+name, func(ctx context.Context) error {
		_, err := js.UpdateStream(ctx, p.merged)
		return err
	})
	switch {
	case err == nil:
		log.Info("updated stream settings that differed from nodeq's, keeping the others", "stream", name, "changed", differs)
		return nil
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return errSetupRace
	case errors.Is(err, nats.ErrPermissionViolation) && !p.essential:
		log.Warn("stream settings differ from nodeq's configuration and this NATS user may not update them; using the stream as it is",
			"stream", name, "differs", differs, "err", err)
		return nil
	case errors.Is(err, nats.ErrPermissionViolation):
		return fmt.Errorf("%s stream %s: %s, and this NATS user may not update it (%w): fix the stream as an operator", s.kind, name, differs, err)
	default:
		return fmt.Errorf("update stream %s (%s): %w", name, differs, err)
	}
}

// streamPlan is what ensureStream would change in an existing stream.
type streamPlan struct {
	merged    jetstream.StreamConfig // the existing configuration with nodeq's fields changed
	diffs     []string               // what differs, for logs and errors
	essential bool                   // nodeq cannot work without the change
	fatal     string                 // nodeq cannot work with this stream, and will not change it
}

// planStream compares an existing stream with nodeq's wishes. Only nodeq's
// own fields are changed in merged; for replicas, the duplicate window and
// the dead-letter limits a higher existing value is kept (an operator's
// choice, never weakened by a consumer starting with defaults).
func planStream(have jetstream.StreamConfig, s streamSpec) streamPlan {
	want := s.want
	p := streamPlan{merged: have}
	p.merged.Subjects = slices.Clone(have.Subjects)
	if have.Retention != want.Retention {
		p.fatal = fmt.Sprintf("its retention is %s, nodeq needs %s", have.Retention, want.Retention)
		return p
	}
	if !subjectsCover(have.Subjects, s.prefix) {
		kept := slices.DeleteFunc(slices.Clone(have.Subjects), func(sub string) bool { return subjectCovers(s.prefix+".>", sub) })
		p.merged.Subjects = append(kept, s.prefix+".>")
		p.diffs = append(p.diffs, fmt.Sprintf("subjects %v do not cover %s.>", have.Subjects, s.prefix))
		p.essential = true
	}
	if have.Replicas < want.Replicas {
		p.merged.Replicas = want.Replicas
		p.diffs = append(p.diffs, fmt.Sprintf("replicas %d, nodeq wants %d", have.Replicas, want.Replicas))
	}
	dup := want.Duplicates
	if have.MaxAge > 0 && dup > have.MaxAge {
		dup = have.MaxAge // the server requires duplicates <= max_age
	}
	if have.Duplicates < dup {
		p.merged.Duplicates = dup
		p.diffs = append(p.diffs, fmt.Sprintf("duplicate window %v, nodeq wants %v", have.Duplicates, dup))
	}
	if !s.dlq {
		if have.MaxMsgSize != want.MaxMsgSize {
			p.merged.MaxMsgSize = want.MaxMsgSize
			p.diffs = append(p.diffs, fmt.Sprintf("max_msg_size %d, nodeq wants %d (streams.max_msg_size)", have.MaxMsgSize, want.MaxMsgSize))
		}
		return p
	}
	if have.Discard != jetstream.DiscardNew {
		p.merged.Discard = jetstream.DiscardNew
		p.diffs = append(p.diffs, "discard old: a full dead-letter stream drops old records instead of refusing new ones")
	}
	if have.MaxAge > 0 && have.MaxAge < want.MaxAge {
		p.merged.MaxAge = want.MaxAge
		p.diffs = append(p.diffs, fmt.Sprintf("max_age %v, nodeq wants at least %v (streams.dlq_max_age)", have.MaxAge, want.MaxAge))
	}
	if have.MaxBytes > 0 && have.MaxBytes < want.MaxBytes {
		p.merged.MaxBytes = want.MaxBytes
		p.diffs = append(p.diffs, fmt.Sprintf("max_bytes %d, nodeq wants at least %d (streams.dlq_max_bytes)", have.MaxBytes, want.MaxBytes))
	}
	return p
}

// subjectsCover reports whether subjects together capture every subject
// under prefix: one of them must match all of <prefix>.>.
func subjectsCover(subjects []string, prefix string) bool {
	return slices.ContainsFunc(subjects, func(s string) bool { return subjectCovers(s, prefix+".>") })
}

// subjectCovers reports whether every subject filter matches is matched by
// cover (both may hold wildcards).
func subjectCovers(cover, filter string) bool {
	c, f := strings.Split(cover, "."), strings.Split(filter, ".")
	for i, tok := range c {
		if tok == ">" {
			return i < len(f)
		}
		if i >= len(f) || f[i] == ">" {
			return false
		}
		if tok != "*" && (f[i] == "*" || tok != f[i]) {
			return false
		}
	}
	return len(c) == len(f)
}

// EnsureConsumer makes sure the durable pull consumer exists and returns it.
// A missing consumer is created with ConsumerConfig. An existing one is used
// as it is when it is a pull consumer with explicit acks whose filter covers
// <prefix>.> and whose ack wait, max ack pending and max deliver are what o
// asks for; otherwise it is updated from its current configuration, keeping
// an operator's other settings and a fleet-wide pause. If the update is
// refused for lack of permission, the consumer is used as it is with a
// warning, unless its filter misses tasks.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, n Names, o ConsumerOptions) (jetstream.Consumer, error) {
	want := ConsumerConfig(n, o)
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	var c jetstream.Consumer
	err := retryCreate(ctx, log, "consumer "+want.Durable+" on stream "+n.TaskStream, func(ctx context.Context) error {
		var err error
		c, err = ensureConsumer(ctx, js, n, want, log)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

func ensureConsumer(ctx context.Context, js jetstream.JetStream, n Names, want jetstream.ConsumerConfig, log *slog.Logger) (jetstream.Consumer, error) {
	stream, name := n.TaskStream, want.Durable
	var c jetstream.Consumer
	err := apiCall(ctx, js, "CONSUMER.INFO."+stream+"."+name, func(ctx context.Context) error {
		var err error
		c, err = js.Consumer(ctx, stream, name)
		return err
	})
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		err = apiCall(ctx, js, "CONSUMER.CREATE."+stream+"."+name, func(ctx context.Context) error {
			var err error
			c, err = js.CreateOrUpdateConsumer(ctx, stream, want)
			return err
		})
		if errors.Is(err, nats.ErrPermissionViolation) {
			return nil, fmt.Errorf("consumer %s on stream %s does not exist and this NATS user may not create it (%w): create it as an operator, or grant the set-up permissions (docs/security.md, Least privilege)", name, stream, err)
		}
		if err != nil {
			return nil, fmt.Errorf("create consumer %s on stream %s: %w", name, stream, err)
		}
		return c, nil
	case errors.Is(err, jetstream.ErrNotPullConsumer):
		return nil, fmt.Errorf("consumer %s on stream %s is not usable by nodeq: it is a push consumer, nodeq pulls; delete it (nodeq recreates it)", name, stream)
	case errors.Is(err, nats.ErrPermissionViolation):
		return nil, fmt.Errorf("look up consumer %s on stream %s: %w (see docs/security.md, Least privilege)", name, stream, err)
	case err != nil:
		return nil, fmt.Errorf("look up consumer %s on stream %s: %w", name, stream, err)
	}

	p := planConsumer(c.CachedInfo().Config, want, n.TaskPrefix)
	if p.fatal != "" {
		return nil, fmt.Errorf("consumer %s on stream %s is not usable by nodeq: %s; delete it (nodeq recreates it) or fix it", name, stream, p.fatal)
	}
	if len(p.diffs) == 0 {
		return c, nil
	}
	differs := strings.Join(p.diffs, "; ")
	var updated jetstream.Consumer
	err = apiCall(ctx, js, "CONSUMER.CREATE."+stream+"."+name, func(ctx context.Context) error {
		var err error
		updated, err = js.CreateOrUpdateConsumer(ctx, stream, p.merged)
		return err
	})
	switch {
	case err == nil:
		log.Info("updated consumer settings that differed from nodeq's, keeping the others", "stream", stream, "consumer", name, "changed", differs)
		return updated, nil
	case errors.Is(err, nats.ErrPermissionViolation) && !p.essential:
		log.Warn("consumer settings differ from nodeq's configuration and this NATS user may not update them; using the consumer as it is",
			"stream", stream, "consumer", name, "differs", differs, "err", err)
		return c, nil
	case errors.Is(err, nats.ErrPermissionViolation):
		return nil, fmt.Errorf("consumer %s on stream %s: %s, and this NATS user may not update it (%w): fix it as an operator", name, stream, differs, err)
	default:
		return nil, fmt.Errorf("update consumer %s on stream %s (%s): %w", name, stream, differs, err)
	}
}

type consumerPlan struct {
	merged    jetstream.ConsumerConfig
	diffs     []string
	essential bool
	fatal     string
}

// planConsumer compares an existing consumer with nodeq's wishes; merged
// is the existing configuration (with its pause, description, metadata...)
// with only nodeq's fields changed.
func planConsumer(have, want jetstream.ConsumerConfig, prefix string) consumerPlan {
	p := consumerPlan{merged: have}
	if have.AckPolicy != jetstream.AckExplicitPolicy {
		p.fatal = fmt.Sprintf("its ack policy is %s, nodeq needs explicit acks", have.AckPolicy)
		return p
	}
	filters := have.FilterSubjects
	if have.FilterSubject != "" {
		filters = []string{have.FilterSubject}
	}
	if len(filters) > 0 && !subjectsCover(filters, prefix) {
		p.merged.FilterSubject, p.merged.FilterSubjects = want.FilterSubject, nil
		p.diffs = append(p.diffs, fmt.Sprintf("filter %v misses tasks under %s.>", filters, prefix))
		p.essential = true
	}
	if have.AckWait != want.AckWait {
		p.merged.AckWait = want.AckWait
		why := "consumer.ack_wait"
		if have.AckWait < want.AckWait {
			why += "; the server's shorter one may redeliver tasks while they run"
		}
		p.diffs = append(p.diffs, fmt.Sprintf("ack_wait %v, nodeq wants %v (%s)", have.AckWait, want.AckWait, why))
	}
	if have.MaxAckPending != want.MaxAckPending {
		p.merged.MaxAckPending = want.MaxAckPending
		p.diffs = append(p.diffs, fmt.Sprintf("max_ack_pending %d, nodeq wants %d (consumer.max_ack_pending)", have.MaxAckPending, want.MaxAckPending))
	}
	if have.MaxDeliver != want.MaxDeliver && !(have.MaxDeliver <= 0 && want.MaxDeliver <= 0) {
		p.merged.MaxDeliver = want.MaxDeliver
		p.diffs = append(p.diffs, fmt.Sprintf("max_deliver %d, nodeq wants %d (a task delivered that often is neither run nor dead-lettered)", have.MaxDeliver, want.MaxDeliver))
	}
	return p
}

// apiCall runs call, one JetStream API request whose subject ends in api
// (e.g. "STREAM.UPDATE.NODEQ_TASKS"), and ends it at once if the server
// refuses it for lack of permission.
//
// A request the server refuses that way gets no reply at all: nats.go
// would wait for ctx's deadline (jetstream's default of 5s when ctx has
// none) and return context.DeadlineExceeded. The server does tell the
// connection, as -ERR 'Permissions Violation for Publish to "<subject>"',
// which nats.go keeps as the connection's last error (and passes to its
// error handler). apiCall watches for that error and returns it; it wraps
// nats.ErrPermissionViolation.
func apiCall(ctx context.Context, js jetstream.JetStream, api string, call func(context.Context) error) error {
	nc := js.Conn()
	if nc == nil {
		return call(ctx)
	}
	before := nc.LastError()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if err := nc.LastError(); !sameError(err, before) && deniedAPI(err, api) {
					cancel(err)
					return
				}
			}
		}
	}()
	err := call(ctx)
	close(done)
	wg.Wait()
	if cause := context.Cause(ctx); errors.Is(cause, nats.ErrPermissionViolation) {
		return cause
	}
	if err != nil {
		if last := nc.LastError(); !sameError(last, before) && deniedAPI(last, api) {
			return last
		}
	}
	return err
}

func sameError(a, b error) (same bool) {
	defer func() {
		if recover() != nil { // an error type that is not comparable
			same = false
		}
	}()
	return a == b
}

var deniedSubject = regexp.MustCompile(`Publish to "([^"]+)"`)

// deniedAPI reports whether err is the server refusing a publish to the
// JetStream API subject ending in api (with any API prefix, and any
// further tokens, as a consumer create request carries its filter); an
// empty api matches any JetStream or Key-Value subject.
func deniedAPI(err error, api string) bool {
	if err == nil || !errors.Is(err, nats.ErrPermissionViolation) {
		return false
	}
	m := deniedSubject.FindStringSubmatch(err.Error())
	if m == nil {
		return false
	}
	if api == "" { // any JetStream or Key-Value API subject
		return strings.HasPrefix(m[1], "$JS.") || strings.HasPrefix(m[1], "$KV.")
	}
	i := strings.Index(m[1], "."+api)
	if i < 0 {
		return false
	}
	rest := m[1][i+1+len(api):]
	return rest == "" || rest[0] == '.'
}

// Set-up retries. In a cluster, a JetStream API request is answered by the
// meta leader or by the leader of the stream or consumer it names; one
// that arrives while there is none (the cluster is electing its meta
// leader, or a stream or consumer just created by another process is
// electing its own) gets no reply at all, and nats.go waits for the
// context's deadline. So each attempt gets its own deadline, growing from
// firstAttemptTimeout to maxAttemptTimeout, and an attempt that got no
// reply is retried like one the server answered with 503: only the
// caller's ctx bounds the whole wait.
const (
	firstAttemptTimeout = time.Second
	maxAttemptTimeout   = 5 * time.Second
	firstSetupBackoff   = 50 * time.Millisecond
	maxSetupBackoff     = time.Second
	setupLogEvery       = 5 * time.Second
)

// noReplyError is an attempt that got no reply within its deadline.
type noReplyError struct {
	after time.Duration
	err   error
}

func (e *noReplyError) Error() string {
	return fmt.Sprintf("no reply within %v: %v", e.after, e.err)
}

func (e *noReplyError) Unwrap() error { return e.err }

func attemptTimeout(attempt int) time.Duration {
	d := firstAttemptTimeout << min(attempt, 3)
	return min(d, maxAttemptTimeout)
}

// setupBackoff is the pause after the attempt-th failed attempt: doubling
// from firstSetupBackoff up to maxSetupBackoff, each drawn from its upper
// half so that processes started together spread out.
func setupBackoff(attempt int) time.Duration {
	d := min(firstSetupBackoff<<min(attempt, 10), maxSetupBackoff)
	return d/2 + rand.N(d/2+1)
}

// retryCreate runs f, one attempt at setting up what (e.g. "task stream
// NODEQ_TASKS"), until it succeeds, fails with an error that waiting cannot
// fix, or ctx ends. Concurrent creators (a stream or consumer that another
// process created or changed between this one's lookup and create) and a
// cluster without a leader are waited out: f looks the object up again and
// verifies it. While the cluster has no leader it says so in log, at most
// every setupLogEvery.
func retryCreate(ctx context.Context, log *slog.Logger, what string, f func(ctx context.Context) error) error {
	if log == nil {
		log = slog.Default()
	}
	start := time.Now()
	var logged time.Time
	var err error
	for attempt := 0; ; attempt++ {
		began := time.Now()
		actx, cancel := context.WithTimeout(ctx, attemptTimeout(attempt))
		err = f(actx)
		noReply := err != nil && errors.Is(actx.Err(), context.DeadlineExceeded) &&
			(errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout))
		cancel()
		if err == nil {
			if !logged.IsZero() {
				log.Info("JetStream set-up went through after waiting", "for", what, "waited", time.Since(start).Round(time.Millisecond), "attempts", attempt+1)
			}
			return nil
		}
		if noReply {
			err = &noReplyError{after: time.Since(began).Round(time.Millisecond), err: err}
		}
		if !transientSetupError(err) {
			return err
		}
		if briefTransient(err) && time.Since(start) > briefRetry {
			return fmt.Errorf("%w (still so after %v: not a leader election; is JetStream enabled on the server and for this account?)",
				err, time.Since(start).Round(time.Millisecond))
		}
		giveUp := func() error {
			return fmt.Errorf("%w (gave up after %d attempts in %v: %w)", err, attempt+1, time.Since(start).Round(time.Millisecond), ctx.Err())
		}
		if ctx.Err() != nil {
			return giveUp()
		}
		if msg := waitingFor(err); msg == "" {
			log.Debug("set-up raced with another process; looking again", "for", what, "err", err)
		} else if time.Since(logged) >= setupLogEvery {
			log.Warn(msg, "for", what, "waited", time.Since(start).Round(time.Millisecond), "attempts", attempt+1, "err", err)
			logged = time.Now()
		}
		select {
		case <-ctx.Done():
			return giveUp()
		case <-time.After(setupBackoff(attempt)):
		}
	}
}

// RetrySetup is retryCreate for set-up steps outside this package: f, one
// attempt with its own deadline, is retried while JetStream has no leader
// to answer it, until it succeeds, fails for good, or ctx ends.
func RetrySetup(ctx context.Context, log *slog.Logger, what string, f func(ctx context.Context) error) error {
	return retryCreate(ctx, log, what, f)
}

// CallAPI is apiCall for JetStream API calls made outside this package:
// a call the server refuses for lack of permission fails at once with an
// error wrapping nats.ErrPermissionViolation instead of timing out.
func CallAPI(ctx context.Context, js jetstream.JetStream, api string, call func(context.Context) error) error {
	return apiCall(ctx, js, api, call)
}

// waitingFor says what a transient set-up error waits for, or "" for a
// race with another process setting up the same objects.
func waitingFor(err error) string {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, errSetupRace):
		return ""
	case errors.Is(err, nats.ErrNoResponders):
		return "waiting for JetStream: no server answers its API yet"
	case errors.As(err, &apiErr) && apiErr.Code != 503:
		return "" // name in use, consumer exists: another process was creating it
	}
	return "waiting for the JetStream cluster to elect a leader"
}

// briefRetry is how long errors that a leader election can cause, but
// that also have lasting causes, are retried: no responders (also: JetStream
// not enabled), and 503 errors other than "temporarily unavailable" (also:
// insufficient resources).
const briefRetry = 15 * time.Second

// jsClusterNotAvailable is the API error code of "JetStream system
// temporarily unavailable", the 503 of a cluster without a leader.
const jsClusterNotAvailable jetstream.ErrorCode = 10008

func briefTransient(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code == 503 && apiErr.ErrorCode != jsClusterNotAvailable
	}
	return errors.Is(err, nats.ErrNoResponders)
}

func transientSetupError(err error) bool {
	if errors.Is(err, errSetupRace) {
		return true
	}
	var noReply *noReplyError
	if errors.As(err, &noReply) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeStreamNameInUse, jetstream.JSErrCodeConsumerExists:
			return true
		case jetstream.JSErrCodeJetStreamNotEnabled, jetstream.JSErrCodeJetStreamNotEnabledForAccount:
			return false // waiting does not enable it
		}
		return apiErr.Code == 503
	}
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse)
}
