package resilience

import (
	"errors"
	"fmt"
	"testing"
)

func TestKinds(t *testing.T) {
	retryable := map[Kind]bool{Execution: true, PythonVm: true, Wasm: true, Transport: true, Io: true,
		Manifest: false, Marshaling: false, Serialization: false, Other: false}
	if len(kindNames) != len(retryable) {
		t.Fatalf("%d kinds", len(kindNames))
	}
	for i := range kindNames {
		k := Kind(i)
		if k.Retryable() != retryable[k] {
			t.Errorf("%v retryable = %v", k, k.Retryable())
		}
		p, err := ParseKind(k.String())
		if err != nil || p != k {
			t.Errorf("parse %v: %v %v", k, p, err)
		}
	}
	if _, err := ParseKind("nope"); err == nil {
		t.Error("parsed nope")
	}
}

func TestKindOf(t *testing.T) {
	cause := errors.New("connection refused")
	err := fmt.Errorf("calling downstream: %w", Wrap(Transport, cause))
	if KindOf(err) != Transport || !errors.Is(err, cause) {
		t.Fatalf("%v", err)
	}
	if KindOf(errors.New("plain")) != Other || KindOf(nil) != Other {
		t.Fatal("unclassified errors must be Other")
	}
	if Wrap(Io, nil) != nil {
		t.Fatal("Wrap(nil) must be nil")
	}
}

func TestExplicitMarks(t *testing.T) {
	transient := Wrap(Transport, errors.New("503"))
	if !Retryable(transient) || Retryable(Permanent(transient)) {
		t.Fatal("Permanent must override a transient kind")
	}
	if KindOf(Permanent(transient)) != Transport {
		t.Fatal("Permanent must keep the kind")
	}
	plain := errors.New("flaky")
	if Retryable(plain) || !Retryable(Transient(plain)) || KindOf(Transient(plain)) != Execution {
		t.Fatal("Transient must make an unclassified error a retryable Execution error")
	}
	wrapped := fmt.Errorf("outer: %w", Transient(Wrap(Manifest, plain)))
	if !Retryable(wrapped) || !errors.Is(wrapped, plain) {
		t.Fatal("marks must survive wrapping and keep the cause")
	}
	if Permanent(nil) != nil || Transient(nil) != nil {
		t.Fatal("nil must stay nil")
	}
}
