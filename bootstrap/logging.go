package bootstrap

import (
	"cmp"
	"io"
	"log/slog"
	"os"

	"github.com/lmittmann/tint"

	"github.com/tasker-run/tasker/config"
)

// NewLogger builds the process logger from cfg. It writes human-readable
// tinted text when cfg.Format is "text", or when it is "auto", w is a terminal
// and env is development (or ""); JSON otherwise. Colour is used only on a
// terminal. The returned LevelVar holds the level and can change it while the
// node runs.
func NewLogger(cfg config.Log, env string, w io.Writer) (*slog.Logger, *slog.LevelVar) {
	level := new(slog.LevelVar)
	level.Set(parseLevel(cfg.Level))
	tty := isTerminal(w)
	if useText(cfg.Format, env, tty) {
		return slog.New(tint.NewTextHandler(w, &tint.Options{Level: level, NoColor: !tty})), level
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})), level
}

func useText(format, env string, tty bool) bool {
	switch format {
	case config.LogFormatText:
		return true
	case config.LogFormatAuto:
		return tty && cmp.Or(env, config.EnvDevelopment) == config.EnvDevelopment
	default:
		return false
	}
}

// parseLevel reads a validated log.level; anything else means info.
func parseLevel(s string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return slog.LevelInfo
	}
	return l
}

// isTerminal reports whether w is a character device such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
