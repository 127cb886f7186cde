package queue

import (
	"encoding/hex"
	"strconv"

	"github.com/google/uuid"
)

// Step messages and results are read and written once per step, and
// through encoding/json each costs a map, its keys and values, and every
// UUID's text: a tenth of the node's allocations per step. The messages
// Tasker writes, and PostgreSQL's jsonb gives back, have one plain shape:
// a flat object of UUID strings (and an attempt). The functions here
// encode that shape directly, and decode it when a message has it exactly;
// anything else goes to the general decoder, which validates it and
// names what is wrong.

// appendStepJSON appends the JSON of a step message or (withAttempt) a
// step result, as json.Marshal writes them: the fields in this order, and
// no correlation_id when it is the nil UUID (optional, and the nil UUID
// would not decode).
func appendStepJSON(b []byte, task, step, correlation uuid.UUID, withAttempt bool, attempt int) []byte {
	b = append(b, `{"task_uuid":"`...)
	b = appendUUID(b, task)
	b = append(b, `","step_uuid":"`...)
	b = appendUUID(b, step)
	b = append(b, '"')
	if correlation != uuid.Nil {
		b = append(b, `,"correlation_id":"`...)
		b = appendUUID(b, correlation)
		b = append(b, '"')
	}
	if withAttempt {
		b = append(b, `,"attempt":`...)
		b = strconv.AppendInt(b, int64(attempt), 10)
	}
	return append(b, '}')
}

// appendUUID appends u's canonical text form (uuid.UUID.String).
func appendUUID(b []byte, u uuid.UUID) []byte {
	var s [36]byte
	hex.Encode(s[0:8], u[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], u[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], u[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], u[8:10])
	s[23] = '-'
	hex.Encode(s[24:], u[10:])
	return append(b, s[:]...)
}

// decodeStepFlat decodes data when it is a flat JSON object whose only
// keys are task_uuid, step_uuid, correlation_id (each a UUID string of 36
// characters, not the nil UUID) and, when withAttempt, attempt (a decimal
// integer of 1 to 9 digits without sign, at least 1), each at most once,
// task_uuid, step_uuid and (withAttempt) attempt present, strings without
// escapes. ok is false for anything else.
func decodeStepFlat(data []byte, withAttempt bool) (task, step, correlation uuid.UUID, attempt int, ok bool) {
	p := flatParser{data: data}
	if !p.byte('{') {
		return
	}
	var seen [4]bool
	for {
		key, good := p.str()
		if !good || !p.byte(':') {
			return
		}
		field := -1
		switch string(key) {
		case "task_uuid":
			field = 0
		case "step_uuid":
			field = 1
		case "correlation_id":
			field = 2
		case "attempt":
			if withAttempt {
				field = 3
			}
		}
		if field < 0 || seen[field] {
			return
		}
		seen[field] = true
		if field == 3 {
			if attempt, good = p.attempt(); !good {
				return
			}
		} else {
			v, good := p.str()
			if !good || len(v) != 36 {
				return
			}
			id, err := uuid.ParseBytes(v)
			if err != nil || id == uuid.Nil {
				return
			}
			switch field {
			case 0:
				task = id
			case 1:
				step = id
			case 2:
				correlation = id
			}
		}
		if p.byte(',') {
			continue
		}
		if !p.byte('}') || !p.end() {
			return
		}
		break
	}
	if !seen[0] || !seen[1] || withAttempt && !seen[3] {
		return
	}
	return task, step, correlation, attempt, true
}

// flatParser reads the few tokens of a flat object, skipping JSON's
// whitespace before each.
type flatParser struct {
	data []byte
	i    int
}

func (p *flatParser) space() {
	for p.i < len(p.data) {
		switch p.data[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// byte consumes c.
func (p *flatParser) byte(c byte) bool {
	p.space()
	if p.i < len(p.data) && p.data[p.i] == c {
		p.i++
		return true
	}
	return false
}

// end reports whether only whitespace is left.
func (p *flatParser) end() bool {
	p.space()
	return p.i == len(p.data)
}

// str consumes a string of printable ASCII without escapes and returns
// its bytes.
func (p *flatParser) str() ([]byte, bool) {
	if !p.byte('"') {
		return nil, false
	}
	start := p.i
	for p.i < len(p.data) {
		c := p.data[p.i]
		switch {
		case c == '"':
			p.i++
			return p.data[start : p.i-1], true
		case c == '\\' || c < 0x20 || c >= 0x7f:
			return nil, false
		}
		p.i++
	}
	return nil, false
}

// attempt consumes an integer of 1 to 9 digits, at least 1, not starting
// with 0 (JSON has no leading zeros).
func (p *flatParser) attempt() (int, bool) {
	p.space()
	start, n := p.i, 0
	for p.i < len(p.data) && p.data[p.i] >= '0' && p.data[p.i] <= '9' && p.i-start < 10 {
		n = n*10 + int(p.data[p.i]-'0')
		p.i++
	}
	digits := p.i - start
	if digits == 0 || digits > 9 || p.data[start] == '0' {
		return 0, false
	}
	if p.i < len(p.data) {
		switch p.data[p.i] {
		case '.', 'e', 'E':
			return 0, false
		}
	}
	return n, true
}
