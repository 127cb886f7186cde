//go:build !linux

package bench

import (
	"context"
	"errors"
)

// procSnapshot is not read on this platform.
type procSnapshot struct{}

func (db *database) processes(context.Context) (procSnapshot, error) {
	return procSnapshot{}, errors.New("the server's processes are read from /proc, which this platform has not")
}

func (procSnapshot) since(procSnapshot) cpuUse { return cpuUse{} }
