package store

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/workflow"
)

// FuzzRequestIDOf reads the request id out of arbitrary payloads, as a
// rejection does. requestIDOf must never panic, and on valid JSON with one
// top-level request_id it must answer what a whole-document reader finds
// there, however deep the rest nests; a request that decodes and encodes
// again keeps its id.
func FuzzRequestIDOf(f *testing.F) {
	const id = "0190f1c2-7a4b-7c3d-8e9f-0123456789ab"
	deep := strings.Repeat(`{"a":`, 2*workflow.MaxJSONDepth) + "1" + strings.Repeat("}", 2*workflow.MaxJSONDepth)
	for _, s := range []string{
		`{"request_id":"` + id + `","namespace":"ns","name":"n"}`,
		`{"namespace":"ns","context":{"request_id":"x","b":[1,{"c":2}]},"request_id":"` + id + `"}`,
		`{"context":` + deep + `,"request_id":"` + id + `"}`,
		`{"request_id":"` + id + `","context":` + deep + `}`,
		`{"request_id":"` + id + `","request_id":"other"}`,
		`{"request_id":7}`, `{"request_id":{"a":1}}`, `{"request_id":"{` + id + `}"}`,
		`{"request\u005fid":"` + id + `"}`, `["request_id"]`, `{"request_id":`, ``, `{`, `}`, "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got := requestIDOf(data)
		if want, ok := topLevelRequestID(data); ok && got != want {
			t.Fatalf("requestIDOf(%q) = %s, want %s", data, got, want)
		}
		req, err := queue.DecodeTaskRequest(data)
		if err != nil {
			return
		}
		enc, err := req.Encode()
		if err != nil {
			t.Fatalf("encoding decoded request: %v", err)
		}
		if got := requestIDOf(enc); got != req.RequestID {
			t.Fatalf("requestIDOf(%s) = %s, want %s", enc, got, req.RequestID)
		}
	})
}

// topLevelRequestID reads data as a whole JSON object, value by value, and
// returns the request id of its one top-level request_id key (uuid.Nil when
// that is not a UUID string). It reports false when data is not a valid
// object, is too deep for the reader, or has no or several request_id keys.
func topLevelRequestID(data []byte) (uuid.UUID, bool) {
	if !json.Valid(data) || workflow.JSONDepth(data) > 1000 {
		return uuid.Nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return uuid.Nil, false
	}
	var (
		id    uuid.UUID
		count int
	)
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return uuid.Nil, false
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return uuid.Nil, false
		}
		if t != "request_id" {
			continue
		}
		count++
		var s string
		if json.Unmarshal(v, &s) == nil {
			if parsed, err := uuid.Parse(s); err == nil {
				id = parsed
			}
		}
	}
	return id, count == 1
}

// TestRequestIDOfTakesTheLastKey: with request_id given twice, the last one
// counts, as it does for the decoder that accepts a request.
func TestRequestIDOfTakesTheLastKey(t *testing.T) {
	first, last := uuid.New(), uuid.New()
	for body, want := range map[string]uuid.UUID{
		`{"request_id":"` + first.String() + `","x":[1,{"request_id":"` + uuid.NewString() + `"}],"request_id":"` + last.String() + `"}`: last,
		`{"request_id":"` + first.String() + `","request_id":{"a":1}}`:                                                                   uuid.Nil,
		`{"request_id":"` + first.String() + `","context":{"deep":[[[`:                                                                   first,
		`{"request_id":{"a":"b"},"request_id":"` + last.String() + `"}`:                                                                  last,
	} {
		require.Equal(t, want, requestIDOf([]byte(body)), body)
	}
}
