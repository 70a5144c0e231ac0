package config

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// EnvPrefix starts the environment variable of every scalar key:
// consumer.workers is NODEQ_CONSUMER_WORKERS, nats.tls.ca_file is
// NODEQ_NATS_TLS_CA_FILE. NATS_URL is read too, below NODEQ_NATS_URL.
const EnvPrefix = "NODEQ_"

// ApplyEnv sets every key whose environment variable is set. Values are
// read as YAML scalars ("30s", "1MiB", "true"). Lists and maps (nodes,
// redelivery.backoff) come only from the file. OpenTelemetry's standard
// OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_SERVICE_NAME are read too, below
// NODEQ_TRACING_OTLP_ENDPOINT and NODEQ_TRACING_SERVICE_NAME.
func (c *Config) ApplyEnv(getenv func(string) string) error {
	if v := getenv("NATS_URL"); v != "" {
		c.NATS.URL = v
	}
	c.applyOTelEnv(getenv)
	var errs []error
	walkScalars(reflect.ValueOf(c).Elem(), nil, func(path []string, v reflect.Value, _ reflect.StructField) {
		name := EnvName(path)
		raw := getenv(name)
		if raw == "" {
			return
		}
		if err := yaml.Unmarshal([]byte(raw), v.Addr().Interface()); err != nil {
			msg := err.Error()
			var te *yaml.TypeError
			if errors.As(err, &te) && len(te.Errors) > 0 {
				msg = strings.TrimPrefix(te.Errors[0], "line 1: ")
			}
			errs = append(errs, fmt.Errorf("environment %s (%s): %s", name, strings.Join(path, "."), msg))
		}
	})
	return errors.Join(errs...)
}

// EnvName is the environment variable of a key path.
func EnvName(path []string) string {
	return EnvPrefix + strings.ToUpper(strings.Join(path, "_"))
}

// walkScalars calls fn for every scalar field of a struct, by yaml key path.
func walkScalars(v reflect.Value, path []string, fn func(path []string, v reflect.Value, f reflect.StructField)) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || tag == "" || tag == "-" {
			continue
		}
		p := append(append([]string(nil), path...), tag)
		fv := v.Field(i)
		switch fv.Kind() {
		case reflect.Struct:
			walkScalars(fv, p, fn)
		case reflect.Map, reflect.Slice, reflect.Pointer:
		default:
			fn(p, fv, f)
		}
	}
}

// Redacted returns the configuration as YAML with every secret replaced by
// "*****": the values of the fields tagged secret:"true" (passwords,
// tokens, http headers, process environments), and the credentials and
// query values of those tagged secret:"url" (nats.url, http nodes' url).
// Each node shows the keys of its executor only. Call it on Resolved to
// show the defaults that keys left out stand for.
func (c *Config) Redacted() string {
	cp := *c
	maskSecrets(reflect.ValueOf(&cp.NATS).Elem())
	cp.Nodes = make(map[string]Node, len(c.Nodes))
	for name, n := range c.Nodes {
		maskSecrets(reflect.ValueOf(&n).Elem())
		cp.Nodes[name] = n
	}
	var doc yaml.Node
	if err := doc.Encode(&cp); err != nil {
		return "# cannot print the configuration: " + err.Error()
	}
	cp.pruneNodes(&doc)
	cp.annotateZeros(&doc)
	b, err := yaml.Marshal(&doc)
	if err != nil {
		return "# cannot print the configuration: " + err.Error()
	}
	return string(b)
}

// maskSecrets masks the secret fields of a struct (a copy: maps and lists
// are replaced, not changed), and those of the structs it holds.
func maskSecrets(v reflect.Value) {
	mask := func(s string) string {
		if s == "" {
			return ""
		}
		return "*****"
	}
	for i := range v.NumField() {
		f, fv := v.Type().Field(i), v.Field(i)
		switch tag := f.Tag.Get("secret"); {
		case fv.Kind() == reflect.Struct:
			maskSecrets(fv)
		case tag == "url" && fv.Kind() == reflect.String:
			fv.SetString(maskURLs(fv.String()))
		case tag == "true" && fv.Kind() == reflect.String:
			fv.SetString(mask(fv.String()))
		case tag == "true" && fv.Type() == reflect.TypeFor[map[string]string]():
			if fv.Len() > 0 {
				masked := make(map[string]string, fv.Len())
				for k, v := range fv.Interface().(map[string]string) {
					masked[k] = mask(v)
				}
				fv.Set(reflect.ValueOf(masked))
			}
		case tag != "":
			panic("config: cannot mask the secret field " + f.Name + " of type " + f.Type.String())
		}
	}
}

// maskURLs applies maskURL to each URL of a comma-separated list.
func maskURLs(urls string) string {
	if urls == "" {
		return ""
	}
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		parts[i] = maskURL(p)
	}
	return strings.Join(parts, ",")
}

// maskURL replaces the secrets a URL may carry with "*****": the password of
// user:password@ (the user stays), a lone user@ (NATS reads it as a token),
// every query value (api keys, signatures) and the fragment. It works on the
// text rather than on url.Parse, so that a URL Go cannot parse, or one
// without a scheme ("svc:pw@host:4222", which nats.go accepts), is masked
// too; an '@' anywhere before the query counts as ending user information.
func maskURL(raw string) string {
	start := 0
	if i := strings.Index(raw, "://"); i >= 0 {
		start = i + len("://")
	}
	rest, fragment, hasFragment := strings.Cut(raw[start:], "#")
	rest, query, hasQuery := strings.Cut(rest, "?")
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		if user, _, hasPass := strings.Cut(rest[:at], ":"); hasPass {
			rest = user + ":*****" + rest[at:]
		} else {
			rest = "*****" + rest[at:]
		}
	}
	out := raw[:start] + rest
	if hasQuery {
		params := strings.FieldsFunc(query, func(r rune) bool { return r == '&' || r == ';' })
		for i, p := range params {
			if k, _, hasValue := strings.Cut(p, "="); hasValue {
				params[i] = k + "=*****"
			} else {
				params[i] = "*****" // a bare value may be a token
			}
		}
		out += "?" + strings.Join(params, "&")
	}
	if hasFragment {
		out += "#"
		if fragment != "" {
			out += "*****"
		}
	}
	return out
}
