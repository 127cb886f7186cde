package testsupport

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// underMain records that Main wraps the tests, so the private server will be
// released when they end.
var underMain atomic.Bool

// Main runs the tests of a package and then lets go of the test server:
// it closes the admin pool and, when this binary used the private server,
// stops that server unless another test binary still uses it. Every package
// with database tests must call it from its TestMain:
//
//	func TestMain(m *testing.M) { testsupport.Main(m) }
//
// Without it the private server would be left running after the run, so the
// private server refuses packages that do not call it.
func Main(m *testing.M) {
	underMain.Store(true)
	code := m.Run()
	if err := release(); err != nil {
		fmt.Fprintf(os.Stderr, "testsupport: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// release closes what server opened. The tests have ended, so nothing else
// uses the pool any more.
func release() error {
	if adminPool != nil {
		adminPool.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return releaseShared(ctx)
}
