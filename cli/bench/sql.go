package bench

// The bench's own SQL: questions about the database server, not about
// Tasker's tables, which it reads and writes through the store.

const sqlDatabase = `SELECT current_database(), current_setting('server_version')`

const sqlCommits = `SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()`

// sqlNow is the send time of a batch of requests: the start of the
// transaction that sends it, on the database's clock like every other time
// the report compares.
const sqlNow = `SELECT now()`
