package worker

import (
	"context"
	"log/slog"
	"slices"
)

// taskLog is a logger carrying a task's fields. Unlike slog.Logger.With it
// formats them only when a line is actually written, which keeps the
// per-task cost near zero when the level filters lines out.
type taskLog struct {
	l     *slog.Logger
	attrs []any
}

// With returns a taskLog with more fields.
func (t taskLog) With(args ...any) taskLog {
	return taskLog{l: t.l, attrs: append(slices.Clip(t.attrs), args...)}
}

// Debug writes a debug line.
func (t taskLog) Debug(msg string, args ...any) { t.log(slog.LevelDebug, msg, args) }

// Info writes an info line.
func (t taskLog) Info(msg string, args ...any) { t.log(slog.LevelInfo, msg, args) }

// Warn writes a warning.
func (t taskLog) Warn(msg string, args ...any) { t.log(slog.LevelWarn, msg, args) }

// Error writes an error line.
func (t taskLog) Error(msg string, args ...any) { t.log(slog.LevelError, msg, args) }

func (t taskLog) log(level slog.Level, msg string, args []any) {
	ctx := context.Background()
	if !t.l.Enabled(ctx, level) {
		return
	}
	t.l.Log(ctx, level, msg, append(slices.Clip(t.attrs), args...)...)
}
