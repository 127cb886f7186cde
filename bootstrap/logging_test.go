package bootstrap

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/config"
)

func TestNewLoggerJSON(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log, _ := NewLogger(config.Log{Level: config.LogLevelInfo, Format: config.LogFormatJSON}, config.EnvDevelopment, &buf)
	log.Info("started", "namespace", "payments")

	var line map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &line), buf.String())
	require.Equal(t, "INFO", line["level"])
	require.Equal(t, "started", line["msg"])
	require.Equal(t, "payments", line["namespace"])
}

func TestNewLoggerText(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log, _ := NewLogger(config.Log{Level: config.LogLevelInfo, Format: config.LogFormatText}, config.EnvProduction, &buf)
	log.Info("started", "namespace", "payments")
	require.False(t, json.Valid(buf.Bytes()), buf.String())
	require.Contains(t, buf.String(), "started")
	require.Contains(t, buf.String(), "namespace=payments")
	require.NotContains(t, buf.String(), "\x1b[", "no colour when not on a terminal")
}

func TestNewLoggerAutoIsJSONWhenNotATerminal(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log, _ := NewLogger(config.Log{Level: config.LogLevelInfo, Format: config.LogFormatAuto}, config.EnvDevelopment, &buf)
	log.Info("started")
	require.True(t, json.Valid(buf.Bytes()), buf.String())
}

func TestNewLoggerLevelVar(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log, level := NewLogger(config.Log{Level: config.LogLevelWarn, Format: config.LogFormatJSON}, config.EnvProduction, &buf)
	require.Equal(t, slog.LevelWarn, level.Level())

	log.Info("hidden")
	require.Empty(t, buf.String())

	level.Set(slog.LevelDebug)
	log.Debug("shown")
	require.Contains(t, buf.String(), `"msg":"shown"`)

	buf.Reset()
	level.Set(slog.LevelError)
	log.Warn("hidden again")
	require.Empty(t, buf.String())
}

func TestUseText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		format, env string
		tty, want   bool
	}{
		{config.LogFormatText, config.EnvProduction, false, true},
		{config.LogFormatJSON, config.EnvDevelopment, true, false},
		{config.LogFormatAuto, config.EnvDevelopment, true, true},
		{config.LogFormatAuto, "", true, true},
		{config.LogFormatAuto, config.EnvDevelopment, false, false},
		{config.LogFormatAuto, config.EnvTest, true, false},
		{config.LogFormatAuto, config.EnvProduction, true, false},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, useText(tt.format, tt.env, tt.tty), "%+v", tt)
	}
}

func TestIsTerminal(t *testing.T) {
	t.Parallel()
	require.False(t, isTerminal(&bytes.Buffer{}))

	f, err := os.CreateTemp(t.TempDir(), "log")
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	require.False(t, isTerminal(f), "a regular file is not a terminal")

	// /dev/null is a character device: the check cannot tell it from a
	// terminal, which only means colourless text goes nowhere.
	if null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0); err == nil {
		t.Cleanup(func() { _ = null.Close() })
		require.True(t, isTerminal(null))
	}
}

func TestParseLevel(t *testing.T) {
	t.Parallel()
	require.Equal(t, slog.LevelDebug, parseLevel(config.LogLevelDebug))
	require.Equal(t, slog.LevelInfo, parseLevel(config.LogLevelInfo))
	require.Equal(t, slog.LevelWarn, parseLevel(config.LogLevelWarn))
	require.Equal(t, slog.LevelError, parseLevel(config.LogLevelError))
	require.Equal(t, slog.LevelInfo, parseLevel("nonsense"))
}
