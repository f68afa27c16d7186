package hsm

import "golang.org/x/sys/unix"

// schedIdle is Linux's SCHED_IDLE scheduling policy.
const schedIdle = 5

// setIdlePolicy moves the calling thread to SCHED_IDLE. A thread may
// always lower its own priority; only going back needs privilege, which is
// why idle signing threads never go back (see idleSigner).
func setIdlePolicy() error {
	return unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: schedIdle}, 0)
}

// threadIsIdle reports whether the calling thread is in SCHED_IDLE.
func threadIsIdle() (bool, error) {
	a, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		return false, err
	}
	return a.Policy == schedIdle, nil
}

// onMainThread reports whether the calling thread is the process's main
// thread (whose thread id is the process id).
func onMainThread() bool { return unix.Gettid() == unix.Getpid() }
