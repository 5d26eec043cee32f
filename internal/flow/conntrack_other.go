//go:build !linux

package flow

import (
	"context"
	"errors"
)

func (r *reader) run(context.Context) error {
	return errors.New("conntrack: only supported on Linux")
}
