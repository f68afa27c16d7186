package appliance

import (
	"context"
	"time"
)

var errOverloaded = &Error{Kind: Overloaded, Code: "overloaded", RetryAfter: time.Second,
	Message: "the appliance is signing at its limit; retry shortly"}

// placeKey is the context key of a request's place in the signing queue.
type placeKey struct{}

// place is a request's place in the signing queue.
type place struct {
	a    *Appliance
	done bool
}

func (p *place) release() {
	if !p.done {
		p.done = true
		<-p.a.admit
	}
}

// Admit takes a place in the bounded signing queue for a request that
// will sign, or refuses at once (Overloaded) when the queue is full: a
// factory line gets a quick answer either way. The place travels in the
// returned context, and is given back the moment the token has answered
// (signatureMade), so that recording and answering do not hold the token
// back from the next request; release gives it back if the request ends
// before that, and is a no-op after.
func (a *Appliance) Admit(ctx context.Context) (context.Context, func(), error) {
	select {
	case a.admit <- struct{}{}:
	default:
		a.metrics.overloaded.Inc()
		return ctx, func() {}, errOverloaded
	}
	p := &place{a: a}
	return context.WithValue(ctx, placeKey{}, p), p.release, nil
}

// SigningQueue says how many places in the signing queue are taken, and
// how many there are.
func (a *Appliance) SigningQueue() (taken, places int) { return len(a.admit), cap(a.admit) }

// releasePlace gives back the place the request of ctx holds, if any.
func releasePlace(ctx context.Context) {
	if p, ok := ctx.Value(placeKey{}).(*place); ok {
		p.release()
	}
}
