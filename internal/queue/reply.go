package queue

import (
	"fmt"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/nodeq/nodeq/internal/task"
)

// DefaultReplySubjects is the default allow-list of reply subjects: the
// inboxes that NATS clients create for request/reply.
var DefaultReplySubjects = []string{"_INBOX.>"}

// MaxReplySubjectLen caps a reply subject in bytes (task.MaxReplyToLen).
// The server closes a connection whose publish line exceeds 4 KiB; an inbox
// is under 100 bytes.
const MaxReplySubjectLen = task.MaxReplyToLen

// ConsumerInboxPrefix is the inbox prefix of consumer processes: their pull
// requests, JetStream API calls and confirmed acks are answered under it,
// not under _INBOX where producers wait for results. A least-privilege
// setup lets only consumers subscribe to it, so producers cannot read the
// tasks delivered to consumers; and no task may name it as reply_to.
const ConsumerInboxPrefix = "_NODEQ_INBOX"

// ConsumerInbox is the connection option that gives a consumer process
// its own inbox prefix.
func ConsumerInbox() nats.Option { return nats.CustomInboxPrefix(ConsumerInboxPrefix) }

// ReplySubjects decides which subjects a task may name as its reply_to.
// The consumer publishes results with its own credentials, so a reply
// subject taken on trust would let any producer publish there as the
// consumer: on $JS.API.STREAM.PURGE.<stream>, on dlq.<type>, on tasks.
// A subject passes only if it is literal, short, printable ASCII, outside
// nodeq's own and the server's subjects, and matches the allow-list.
type ReplySubjects struct {
	allow []string
	deny  []string // subject filters a reply may never match, whatever the allow-list
}

// NewReplySubjects returns the reply policy for names with the given
// allow-list (subject filters, wildcards allowed); nil or empty means
// DefaultReplySubjects.
func NewReplySubjects(n Names, allow []string) (*ReplySubjects, error) {
	if len(allow) == 0 {
		allow = DefaultReplySubjects
	}
	for _, a := range allow {
		if err := CheckReplyFilter(a); err != nil {
			return nil, err
		}
	}
	return &ReplySubjects{
		allow: append([]string(nil), allow...),
		deny:  []string{n.TaskPrefix + ".>", n.DLQPrefix + ".>", ConsumerInboxPrefix + ".>"},
	}, nil
}

// CheckReplyFilter reports why f cannot be an entry of the reply allow-list.
func CheckReplyFilter(f string) error {
	switch {
	case !server.IsValidSubject(f) || strings.ContainsFunc(f, func(r rune) bool { return r <= ' ' || r >= 0x7f }):
		return fmt.Errorf("reply subject filter %q is not a valid subject filter (printable ASCII tokens, * and > wildcards)", f)
	case strings.HasPrefix(f, "$"):
		return fmt.Errorf("reply subject filter %q: subjects starting with $ are the server's API and are never allowed", f)
	}
	return nil
}

// Check reports why a task may not name subject as its reply_to; nil means
// it may. The error names the rule, not just the subject.
func (r *ReplySubjects) Check(subject string) error {
	if len(subject) > MaxReplySubjectLen {
		return fmt.Errorf("reply_to is %d bytes, the limit is %d", len(subject), MaxReplySubjectLen)
	}
	for i := 0; i < len(subject); i++ {
		if c := subject[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("reply_to %q has a byte 0x%02x at %d: only printable ASCII without spaces is allowed", subject, c, i)
		}
	}
	if !server.IsValidLiteralSubject(subject) {
		return fmt.Errorf("reply_to %q is not a literal subject (empty token or wildcard)", subject)
	}
	if strings.HasPrefix(subject, "$") {
		return fmt.Errorf("reply_to %q is a server subject ($JS, $KV, $SYS...): not allowed", subject)
	}
	for _, d := range r.deny {
		if server.SubjectMatchesFilter(subject, d) {
			return fmt.Errorf("reply_to %q is one of nodeq's own task, dead-letter or consumer inbox subjects (%s): not allowed", subject, d)
		}
	}
	for _, a := range r.allow {
		if server.SubjectMatchesFilter(subject, a) {
			return nil
		}
	}
	return fmt.Errorf("reply_to %q is outside the allowed reply subjects %s (consumer.reply_subjects)", subject, strings.Join(r.allow, ", "))
}
