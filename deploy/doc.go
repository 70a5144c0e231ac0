// Package deploy holds nodeq's ready-made views for operators. They are
// files, not Go: prometheus/nodeq-alerts.yml, the alerting rules, with
// prometheus/nodeq-alerts_test.yml, their unit tests in promtool's format;
// and grafana/nodeq-dashboard.json, a Grafana dashboard. docs/operations.md
// ("Alerts and dashboard") says how to load them and what each alert asks
// of an operator.
//
// The package's tests keep the files honest: they parse the rules as
// Prometheus does, run the unit tests with Prometheus's own PromQL engine
// (every alert must fire in a scenario and stay silent in another), and
// check that every series the rules and the dashboard query is one nodeq
// exports (internal/metrics).
package deploy
