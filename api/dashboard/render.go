package dashboard

import (
	"encoding/json"
	"fmt"
	"html/template"
	"strconv"
	"strings"
	"time"

	"github.com/tasker-run/tasker/api"
	"github.com/tasker-run/tasker/workflow"
)

// pageNames are the page templates, each templates/<name>.html with the
// layout and the shared parts.
var pageNames = []string{"overview", "tasks", "task", "bulk", "actors", "templates", "schedules", "rejected", "login", "error"}

func (h *Handler) loadPages() map[string]*template.Template {
	out := make(map[string]*template.Template, len(pageNames))
	for _, name := range pageNames {
		t := template.New(name).Funcs(funcs)
		out[name] = template.Must(t.ParseFS(files, "templates/layout.html", "templates/parts.html", "templates/"+name+".html"))
	}
	return out
}

const timeLayout = "2006-01-02 15:04:05"

var funcs = template.FuncMap{
	"when": func(t any) string {
		switch v := t.(type) {
		case time.Time:
			if v.IsZero() {
				return "–"
			}
			return v.Local().Format(timeLayout)
		case *time.Time:
			if v == nil || v.IsZero() {
				return "–"
			}
			return v.Local().Format(timeLayout)
		}
		return fmt.Sprint(t)
	},
	"clock":      func(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05.000") },
	"stepStates": workflow.AllStepStates,
	"iso":        func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) },
	"ago": func(t any, now time.Time) string {
		var at time.Time
		switch v := t.(type) {
		case time.Time:
			at = v
		case *time.Time:
			if v == nil {
				return ""
			}
			at = *v
		}
		if at.IsZero() {
			return ""
		}
		d := now.Sub(at)
		if d < 0 {
			return "just now"
		}
		return ageText(d) + " ago"
	},
	"since": func(from time.Time, to *time.Time) string {
		if to == nil {
			return "–"
		}
		return roundDuration(to.Sub(from))
	},
	"dur": roundDuration,
	"ms": func(v *int64) string {
		switch {
		case v == nil:
			return "–"
		case *v == 0:
			return "<1ms"
		}
		return roundDuration(time.Duration(*v) * time.Millisecond)
	},
	"msv": func(v int64) string {
		if v == 0 {
			return "–"
		}
		return roundDuration(time.Duration(v) * time.Millisecond)
	},
	"num": thousands,
	"f1":  func(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) },
	"f2":  func(f float64) string { return strconv.FormatFloat(f, 'f', 2, 64) },
	"seconds": func(s float64) string {
		return ageText(time.Duration(s * float64(time.Second)))
	},
	"add":       func(a, b int) int { return a + b },
	"pastTense": api.PastTense,
	"join":      strings.Join,
}

// ageText is a duration as a person reads an age: "42s", "5m", "3h 20m",
// "2d 4h".
func ageText(d time.Duration) string {
	switch {
	case d < time.Second:
		return roundDuration(d)
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh %dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd %dh", int(d.Hours())/24, int(d.Hours())%24)
}

// thousands prints n with commas between groups of three digits.
func thousands(n any) string {
	var s string
	switch v := n.(type) {
	case int:
		s = strconv.Itoa(v)
	case int64:
		s = strconv.FormatInt(v, 10)
	default:
		return fmt.Sprint(n)
	}
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// shownJSONBytes bounds a JSON value shown on a page (a result, a
// context); the API has the whole value.
const shownJSONBytes = 64 << 10

// prettyJSON is raw indented for reading, and a note when it was cut or
// left compact.
func prettyJSON(raw json.RawMessage) (string, string) {
	if len(raw) == 0 {
		return "", ""
	}
	if len(raw) > shownJSONBytes {
		return string(raw[:shownJSONBytes]) + "…", fmt.Sprintf("%s bytes; the first %s are shown (the API has it all)",
			thousands(len(raw)), thousands(shownJSONBytes))
	}
	b, ok := api.Indent(raw, 4*shownJSONBytes)
	if !ok {
		return string(raw), "shown compact: indented it would be too long"
	}
	return string(b), ""
}
