//go:build !linux

package hsm

import "fmt"

func setIdlePolicy() error {
	return fmt.Errorf("%w: idle-priority signing needs Linux's SCHED_IDLE", ErrUnsupported)
}

func threadIsIdle() (bool, error) { return false, nil }

// onMainThread: without idle-priority signing the question does not arise.
func onMainThread() bool { return false }
