package queue

import (
	"strings"
	"testing"
)

func TestReplySubjects(t *testing.T) {
	def, err := NewReplySubjects(DefaultNames(), nil)
	if err != nil {
		t.Fatal(err)
	}
	wide, err := NewReplySubjects(DefaultNames(), []string{">"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, subject string
		policy        *ReplySubjects
		wantErr       string // "" means allowed
	}{
		{"inbox", "_INBOX.abc.def", def, ""},
		{"js purge of the task stream", "$JS.API.STREAM.PURGE.NODEQ_TASKS", def, "server subject"},
		{"js purge even when everything is allowed", "$JS.API.STREAM.PURGE.NODEQ_DLQ", wide, "server subject"},
		{"consumer unpause", "$JS.API.CONSUMER.PAUSE.NODEQ_TASKS.nodeq-workers", wide, "server subject"},
		{"kv", "$KV.nodeq_breakers.nodeq-workers", wide, "server subject"},
		{"forged dead letter", "dlq.echo", wide, "dead-letter"},
		{"new task", "tasks.echo", wide, "task, dead-letter"},
		{"a consumer's pull inbox", "_NODEQ_INBOX.abc.1", wide, "consumer inbox"},
		{"outside the allow-list", "orders.created", def, "outside the allowed"},
		{"wildcard", "_INBOX.*", def, "not a literal"},
		{"full wildcard", "_INBOX.>", def, "not a literal"},
		{"empty token", "_INBOX..x", def, "not a literal"},
		{"trailing dot", "_INBOX.x.", def, "not a literal"},
		{"space", "_INBOX.a b", def, "printable ASCII"},
		{"CRLF", "_INBOX.a\r\nPUB x 1", def, "printable ASCII"},
		{"NUL", "_INBOX.a\x00", def, "printable ASCII"},
		{"non-ASCII", "_INBOX.é", def, "printable ASCII"},
		{"over 4 KiB", "_INBOX." + strings.Repeat("a", 5000), def, "limit is 256"},
		{"at the limit", "_INBOX." + strings.Repeat("a", MaxReplySubjectLen-7), def, ""},
		{"just over the limit", "_INBOX." + strings.Repeat("a", MaxReplySubjectLen-6), def, "limit is 256"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.policy.Check(c.subject)
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Fatalf("want an error with %q, got %v", c.wantErr, err)
			}
		})
	}
}

func TestReplySubjectsOwnPrefixes(t *testing.T) {
	p, err := NewReplySubjects(Names{TaskStream: "T", TaskPrefix: "prod.tasks", DLQStream: "D", DLQPrefix: "prod.dlq", Consumer: "c"}, []string{"prod.>"})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Check("prod.replies.x"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"prod.tasks.echo", "prod.dlq.echo"} {
		if p.Check(s) == nil {
			t.Errorf("%s allowed", s)
		}
	}
}

func TestReplyFilterValidation(t *testing.T) {
	for _, f := range []string{"$JS.>", "a..b", "a b", "", "$SYS.>"} {
		if _, err := NewReplySubjects(DefaultNames(), []string{f}); err == nil {
			t.Errorf("%q accepted", f)
		}
	}
	for _, f := range []string{"_INBOX.>", "replies.*", ">"} {
		if _, err := NewReplySubjects(DefaultNames(), []string{f}); err != nil {
			t.Errorf("%q: %v", f, err)
		}
	}
}
