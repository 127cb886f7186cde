package config

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRedacted(t *testing.T) {
	t.Parallel()
	tests := []struct{ url, want string }{
		{"", ""},
		{"postgres://tasker:s3cret@db:5432/tasker?sslmode=disable", "postgres://tasker:xxxxx@db:5432/tasker?sslmode=disable"},
		{"postgresql://tasker@db/tasker", "postgresql://tasker@db/tasker"},
		{"postgres://db/tasker?password=s3cret&user=tasker", "postgres://db/tasker?password=xxxxx&user=tasker"},
		{"host=db user=tasker password=s3cret dbname=tasker", "host=db user=tasker password=xxxxx dbname=tasker"},
		{"host=db password = 's3 cr\\'et' dbname=tasker", "host=db password = xxxxx dbname=tasker"},
		{"host=db PASSWORD=s3cret", "host=db PASSWORD=xxxxx"},
		{"not-a-connection-string-s3cret", "xxxxx"},
		{"x:host=db password=s3cret", "x:host=db password=xxxxx"},
		{"a:b?password=s3cret", "a:b?password=xxxxx"},
		{"postgres://", "postgres://"},
		{"postgres://?password=s3cret#x", "postgres://?password=xxxxx#x"},
		{"host=db password=''s3cret dbname=tasker", "host=db password=xxxxx dbname=tasker"},
		{"host=db password='s3 cr\\'et", "host=db password=xxxxx"},
		{"host=db password='s3 cret", "host=db password=xxxxx"},
		{"postgres://db//tasker?sslmode=disable", "postgres://db//tasker?sslmode=disable"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			t.Parallel()
			c := Default(EnvDevelopment)
			c.Database.URL = tt.url
			require.Equal(t, tt.want, c.Redacted().Database.URL)
			require.Equal(t, tt.url, c.Database.URL, "the original is untouched")
		})
	}

	c := Default(EnvDevelopment)
	require.Empty(t, c.Redacted().HTTP.APIToken, "an empty token stays empty")
	c.HTTP.APIToken = "0123456789abcdef-s3cret"
	require.Equal(t, "xxxxx", c.Redacted().HTTP.APIToken)
}

func TestCloneIsDeep(t *testing.T) {
	t.Parallel()
	c := Default(EnvDevelopment)
	c.Node.WorkerNamespaces = []string{"a"}
	c.Templates.Dirs = []string{"d"}
	c.Namespaces = map[string]Namespace{"a": defaultNamespace()}
	c.CircuitBreakers.Components = map[string]BreakerOverride{"a": {FailureThreshold: ptr(3)}}

	d := c.Clone()
	require.Equal(t, c, d)
	d.Node.WorkerNamespaces[0] = "b"
	d.Templates.Dirs[0] = "e"
	d.Namespaces["a"] = Namespace{Workers: 9}
	*d.CircuitBreakers.Components["a"].FailureThreshold = 4
	require.Equal(t, []string{"a"}, c.Node.WorkerNamespaces)
	require.Equal(t, []string{"d"}, c.Templates.Dirs)
	require.Equal(t, defaultNamespace(), c.Namespaces["a"])
	require.Equal(t, 3, *c.CircuitBreakers.Components["a"].FailureThreshold)
}

func TestWriteTOML(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(`
[database]
url = "postgres://tasker:s3cret@db/tasker"
[http]
api_token = "0123456789abcdef-s3cret"
[namespaces.payments]
workers = 2
[circuit_breakers.components."http:api.example.com"]
delay = "1m"
`), EnvProduction, nil)
	require.NoError(t, err)

	var out bytes.Buffer
	require.NoError(t, c.Redacted().WriteTOML(&out))
	require.NotContains(t, out.String(), "s3cret")
	require.Contains(t, out.String(), `url = "postgres://tasker:xxxxx@db/tasker"`)
	require.Contains(t, out.String(), `api_token = "xxxxx"`)
	require.Contains(t, out.String(), `poll_interval = "100ms"`)
	require.Contains(t, out.String(), `max = "5m"`)

	// The unredacted output reads back to the same configuration in any
	// environment: every key is written.
	out.Reset()
	require.NoError(t, c.WriteTOML(&out))
	for _, env := range []string{EnvProduction, EnvTest} {
		back, err := Parse(out.Bytes(), env, nil)
		require.NoError(t, err, out.String())
		back.Env = c.Env
		require.Equal(t, c, back)
	}
	require.Equal(t, Duration(time.Minute), *c.CircuitBreakers.Components["http:api.example.com"].Delay)
}
