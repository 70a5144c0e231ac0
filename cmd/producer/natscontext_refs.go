package main

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/nats-io/nkeys"
)

// natscli reads a path setting (creds, nkey, cert, key, ca) with $VAR and a
// leading ~ expanded and an optional file:// before it, and a password or
// token either as itself or as a reference: env://NAME (the variable's
// value) or file://PATH (the file's content). The producer does the same
// for the values of a context and of the NATS_* variables; other
// references (op://, nsc://, data:) are refused, not sent as a password.

// maxSecretFile caps a password or token file.
const maxSecretFile = 64 << 10

// refSchemes are the reference schemes natscli resolves.
var refSchemes = []string{"file", "env", "op", "nsc", "data"}

// refScheme returns the reference scheme v starts with, or "".
func refScheme(v string) string {
	i := strings.IndexByte(v, ':')
	if i < 2 {
		return ""
	}
	if s := strings.ToLower(v[:i]); slices.Contains(refSchemes, s) {
		return s
	}
	return ""
}

// trimScheme removes "scheme://" (or "scheme:") from the start of v, in any case.
func trimScheme(v, scheme string) string {
	v = v[len(scheme)+1:]
	return strings.TrimPrefix(v, "//")
}

// refPath returns the file a path setting names.
func refPath(field, v string, getenv func(string) string) (string, error) {
	switch s := refScheme(v); s {
	case "":
	case "file":
		v = trimScheme(v, s)
	default:
		return "", fmt.Errorf("%s is a reference (%s:) that the producer cannot resolve; name a file", field, s)
	}
	return expandPath(v, getenv), nil
}

// expandPath expands $VAR and ${VAR}, then a leading ~ to $HOME.
func expandPath(v string, getenv func(string) string) string {
	v = os.Expand(v, getenv)
	if v == "~" || strings.HasPrefix(v, "~/") {
		if h := getenv("HOME"); h != "" {
			v = h + v[1:]
		}
	}
	return v
}

// refSecret returns the password or token a setting gives.
func refSecret(field, v string, getenv func(string) string) (string, error) {
	switch s := refScheme(v); s {
	case "":
		return v, nil
	case "env":
		name := trimScheme(v, s)
		val := getenv(name)
		if val == "" {
			return "", fmt.Errorf("%s refers to the variable %q, which is not set", field, clip(name, 64))
		}
		return val, nil
	case "file":
		path := expandPath(trimScheme(v, s), getenv)
		b, err := readLimited(path, maxSecretFile)
		if err != nil {
			return "", fmt.Errorf("%s: %w", field, err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	default:
		return "", fmt.Errorf("%s is a reference (%s:) that the producer cannot resolve; give the value, env://NAME or file://PATH", field, s)
	}
}

// checkFileSetting refuses a credentials or nkey setting that holds the
// secret itself rather than the name of a file: a file name is shown in
// errors, a seed must never be.
func checkFileSetting(field, v string) error {
	switch {
	case v == "":
		return nil
	case strings.ContainsAny(v, "\r\n") || strings.Contains(v, "-----BEGIN"):
		return fmt.Errorf("%s holds credentials, not the name of a file: write them to a file (mode 0600) and name that", field)
	case isSeed(v):
		return fmt.Errorf("%s holds an nkey seed, not the name of a file: write the seed to a file (mode 0600) and name that", field)
	}
	return nil
}

// isSeed reports whether v is an nkey seed ("SU...", "SA...").
func isSeed(v string) bool {
	v = strings.TrimSpace(v)
	if len(v) < 2 || v[0] != 'S' {
		return false
	}
	_, err := nkeys.FromSeed([]byte(v))
	return err == nil
}
