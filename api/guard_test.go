package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/workflow"
)

// TestGuard covers what every request passes before its route: the token
// (Bearer in any case), loopback Host without a token (DNS rebinding), and
// a JSON content type on every POST (cross-site posts).
func TestGuard(t *testing.T) {
	t.Parallel()
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	for _, tc := range []struct {
		name, token, method, host, path, auth, contentType string
		dashboard                                          bool
		want                                               int
	}{
		{"loopback name", "", "GET", "localhost:8080", "/v1/tasks", "", "", false, http.StatusTeapot},
		{"loopback address", "", "GET", "127.0.0.1:8080", "/v1/tasks", "", "", false, http.StatusTeapot},
		{"loopback v6", "", "GET", "[::1]:8080", "/v1/tasks", "", "", false, http.StatusTeapot},
		{"rebound name without a token", "", "GET", "evil.example:8080", "/v1/tasks", "", "", false, http.StatusForbidden},
		{"health for any host", "", "GET", "10.0.0.5:8080", "/health/ready", "", "", false, http.StatusTeapot},
		{"any host with the token", "s3cret", "GET", "tasker.internal:8080", "/v1/tasks", "Bearer s3cret", "", false, http.StatusTeapot},
		{"lower-case scheme", "s3cret", "GET", "localhost", "/v1/tasks", "bearer s3cret", "", false, http.StatusTeapot},
		{"wrong token", "s3cret", "GET", "localhost", "/v1/tasks", "Bearer nope", "", false, http.StatusUnauthorized},
		{"no token", "s3cret", "GET", "localhost", "/v1/tasks", "", "", false, http.StatusUnauthorized},
		{"other scheme", "s3cret", "GET", "localhost", "/v1/tasks", "Basic s3cret", "", false, http.StatusUnauthorized},
		{"post as JSON", "", "POST", "localhost", "/v1/tasks/x/retry", "", "application/json; charset=utf-8", false, http.StatusTeapot},
		{"post as a form", "", "POST", "localhost", "/v1/tasks/x/retry", "", "application/x-www-form-urlencoded", false, http.StatusUnsupportedMediaType},
		{"post as text", "", "POST", "localhost", "/v1/tasks/x/retry", "", "text/plain", false, http.StatusUnsupportedMediaType},
		{"post without a type", "", "POST", "localhost", "/v1/tasks/x/retry", "", "", false, http.StatusUnsupportedMediaType},
		{"no dashboard: its paths are guarded as the API", "s3cret", "GET", "localhost", "/tasks", "", "", false, http.StatusUnauthorized},
		{"a page without the bearer token", "s3cret", "GET", "localhost", "/tasks", "", "", true, http.StatusTeapot},
		{"a form post to a page", "", "POST", "localhost", "/tasks/x/retry", "", "application/x-www-form-urlencoded", true, http.StatusTeapot},
		{"a page on a rebound name", "", "GET", "evil.example:8080", "/", "", "", true, http.StatusForbidden},
		{"the API beside the dashboard", "s3cret", "GET", "localhost", "/v1/tasks", "", "", true, http.StatusUnauthorized},
		{"an API form post beside the dashboard", "", "POST", "localhost", "/v1/tasks/x/retry", "", "text/plain", true, http.StatusUnsupportedMediaType},
		{"metrics beside the dashboard", "s3cret", "GET", "localhost", "/metrics", "", "", true, http.StatusUnauthorized},
		{"debug beside the dashboard", "s3cret", "GET", "localhost", "/debug/actors", "", "", true, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, "http://"+tc.host+tc.path, nil)
			req.Host = tc.host
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			rec := httptest.NewRecorder()
			guard(tc.token, tc.dashboard, ok).ServeHTTP(rec, req)
			require.Equal(t, tc.want, rec.Code, rec.Body.String())
		})
	}
}

// TestBodyTooLarge: a body over the limit is a 413 that says so, not a
// parse error.
func TestBodyTooLarge(t *testing.T) {
	t.Parallel()
	s := &server{}
	body := `{"reason": "` + strings.Repeat("x", maxBodyBytes) + `"}`
	req := httptest.NewRequest("POST", "http://localhost/v1/tasks/x/cancel", strings.NewReader(body))
	rec := httptest.NewRecorder()
	var v struct {
		Reason string `json:"reason"`
	}
	err := decodeBody(rec, req, &v)
	require.Error(t, err)
	s.fail(rec, req, err)
	require.Equal(t, http.StatusRequestEntityTooLarge, rec.Code)
	require.Contains(t, rec.Body.String(), CodeTooLarge)
}

// TestCompactJSON: answers are compact unless ?pretty=1 asks; indenting
// grows with nesting, which a hostile context controls.
func TestCompactJSON(t *testing.T) {
	t.Parallel()
	v := map[string]any{"a": map[string]any{"b": []int{1, 2}}}
	rec := httptest.NewRecorder()
	writeJSON(rec, httptest.NewRequest("GET", "http://localhost/v1/tasks", nil), http.StatusOK, v)
	require.Equal(t, `{"a":{"b":[1,2]}}`+"\n", rec.Body.String())
	rec = httptest.NewRecorder()
	writeJSON(rec, httptest.NewRequest("GET", "http://localhost/v1/tasks?pretty=1", nil), http.StatusOK, v)
	require.Contains(t, rec.Body.String(), "\n  \"a\": {")
	require.NoError(t, knownParams(map[string][]string{"pretty": {"1"}}), "pretty is known to every route")
}

// TestPrettyBounded: an answer whose indented form would be over
// maxPrettyBytes is sent compact, with a header saying why, so ?pretty=1
// cannot turn a 256 KiB context 64 levels deep into 11 MB.
func TestPrettyBounded(t *testing.T) {
	t.Parallel()
	var deep any = make([]int, 100_000)
	for range workflow.MaxJSONDepth - 2 {
		deep = []any{deep}
	}
	compact, err := json.Marshal(deep)
	require.NoError(t, err)
	var want bytes.Buffer
	require.NoError(t, json.Indent(&want, compact, "", prettyIndent))
	require.Greater(t, want.Len(), maxPrettyBytes)
	require.GreaterOrEqual(t, indentedSize(compact), want.Len(), "the estimate is an upper bound")

	rec := httptest.NewRecorder()
	writeJSON(rec, httptest.NewRequest("GET", "http://localhost/v1/tasks/x?pretty=1", nil), http.StatusOK, deep)
	require.Equal(t, string(compact)+"\n", rec.Body.String())
	require.Contains(t, rec.Header().Get("Tasker-Pretty"), "not indented")

	small := map[string]any{"a": []any{map[string]any{"b": "x,y:{z}"}, 2}, "c": "\"]"}
	b, err := json.Marshal(small)
	require.NoError(t, err)
	want.Reset()
	require.NoError(t, json.Indent(&want, b, "", prettyIndent))
	require.GreaterOrEqual(t, indentedSize(b), want.Len())
	rec = httptest.NewRecorder()
	writeJSON(rec, httptest.NewRequest("GET", "http://localhost/v1/tasks/x?pretty=1", nil), http.StatusOK, small)
	require.Equal(t, want.String()+"\n", rec.Body.String())
	require.Empty(t, rec.Header().Get("Tasker-Pretty"))
}

// TestBodyTooDeep: an operator's body nests at most the domain's limit.
func TestBodyTooDeep(t *testing.T) {
	t.Parallel()
	deep := strings.Repeat("[", 5000) + strings.Repeat("]", 5000)
	req := httptest.NewRequest("POST", "http://localhost/v1/tasks/x/resolve", strings.NewReader(`{"step": "a", "result": `+deep+`}`))
	var v struct {
		Step   string          `json:"step"`
		Result json.RawMessage `json:"result"`
	}
	err := decodeBody(httptest.NewRecorder(), req, &v)
	var invalid *InvalidError
	require.ErrorAs(t, err, &invalid)
	require.Contains(t, err.Error(), "nested 5001 levels deep")
}
