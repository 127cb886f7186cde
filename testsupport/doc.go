// Package testsupport gives tests a real PostgreSQL and the means to wait for
// what they expect.
//
// The server is chosen once per test binary: TASKER_TEST_DATABASE_URL when it
// is set, else a server answering on 127.0.0.1:5432 as user postgres, else a
// private server started from the machine's PostgreSQL binaries and shared by
// every test binary of one `go test ./...` run. Each test then gets a database
// of its own, created fresh and dropped in t.Cleanup, so tests run with
// t.Parallel() and leave nothing behind.
package testsupport
