package store

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"
)

// encodeArg encodes v in binary as PostgreSQL type oid, as pgx sends it.
func encodeArg(t testing.TB, m *pgtype.Map, oid uint32, v any) []byte {
	t.Helper()
	plan := m.PlanEncode(oid, pgtype.BinaryFormatCode, v)
	require.NotNil(t, plan, "no plan for %T", v)
	buf, err := plan.Encode(v, nil)
	require.NoError(t, err)
	return buf
}

// The arrays arrayArg gives encode the very bytes pgx writes for the
// plain slices (NULL for nil, an empty array for an empty slice), with no
// allocation per element.
func TestArrayArgsEncodeAsTheSlices(t *testing.T) {
	m := pgtype.NewMap()
	ids := make([][16]byte, 64)
	texts := make([]string, 64)
	nums := make([]int64, 64)
	for i := range ids {
		ids[i][0], ids[i][15] = byte(i), byte(255-i)
		texts[i] = "state-" + string(rune('a'+i%26))
		nums[i] = int64(i) << 40
	}
	var (
		nullNums  = []*int64{&nums[3], nil, &nums[60]}
		n32       = []int32{0, -7, 1 << 30}
		nullInt32 = []*int32{&n32[0], nil, &n32[1], &n32[2]}
		nullTexts = []*string{nil, &texts[0], &texts[9]}
		at        = []time.Time{time.Date(2026, 12, 3, 12, 0, 0, 123456000, time.UTC), time.Unix(0, 0)}
		nullTimes = []*time.Time{&at[0], nil, &at[1]}
	)
	cases := []struct {
		name  string
		oid   uint32
		plain any
	}{
		{"uuid", pgtype.UUIDArrayOID, ids},
		{"uuid empty", pgtype.UUIDArrayOID, [][16]byte{}},
		{"uuid nil", pgtype.UUIDArrayOID, [][16]byte(nil)},
		{"text", pgtype.TextArrayOID, texts},
		{"text empty", pgtype.TextArrayOID, []string{}},
		{"text nil", pgtype.TextArrayOID, []string(nil)},
		{"bigint", pgtype.Int8ArrayOID, nums},
		{"bigint nil", pgtype.Int8ArrayOID, []int64(nil)},
		{"bigint with NULLs", pgtype.Int8ArrayOID, nullNums},
		{"bigint pointers nil", pgtype.Int8ArrayOID, []*int64(nil)},
		{"int with NULLs", pgtype.Int4ArrayOID, nullInt32},
		{"text with NULLs", pgtype.TextArrayOID, nullTexts},
		{"timestamptz with NULLs", pgtype.TimestamptzArrayOID, nullTimes},
		{"timestamptz pointers empty", pgtype.TimestamptzArrayOID, []*time.Time{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			arg := arrayArg(c.plain)
			require.Equal(t, encodeArg(t, m, c.oid, c.plain), encodeArg(t, m, c.oid, arg))
		})
	}
	for _, c := range []struct {
		oid   uint32
		plain any
	}{{pgtype.UUIDArrayOID, ids}, {pgtype.TextArrayOID, texts}, {pgtype.Int8ArrayOID, nums},
		{pgtype.Int8ArrayOID, nullNums}, {pgtype.Int4ArrayOID, nullInt32}, {pgtype.TextArrayOID, nullTexts},
		{pgtype.TimestamptzArrayOID, nullTimes}} {
		arg := arrayArg(c.plain)
		plan := m.PlanEncode(c.oid, pgtype.BinaryFormatCode, arg)
		buf := make([]byte, 0, 4096)
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := plan.Encode(arg, buf[:0]); err != nil {
				t.Fatal(err)
			}
		})
		// The dimensions slice; none per element.
		require.LessOrEqual(t, allocs, 2.0, "allocations encoding the elements of %T", arg)
	}
}
