package roomserver

// OutputEvent is one newly persisted timeline event, published after its transaction
// committed and after every event with a lower stream position committed too.
type OutputEvent struct {
	Event *Event
	// StreamPos is the event's position in the global room event stream.
	StreamPos int64
	// StateChanged reports whether the room's current state changed with this event
	// (a state event that took effect, or a state resolution after a fork).
	StateChanged bool
	// AddsState and RemovesState are the event IDs that entered and left the current
	// state with this event (both empty when StateChanged is false).
	AddsState    []string
	RemovesState []string
	// OutOfBand marks a membership of a local user received outside the room's DAG (an
	// invite from another server, its rejection, a knock): an outlier that changed the
	// user's membership but is not in the timeline (Event.StreamPos is 0; StreamPos is
	// its NID). It must not be sent to other servers as a room event.
	OutOfBand bool
}

// Output receives every new timeline event, in stream order. It is called from the
// roomserver's commit goroutine: implementations must return quickly (queue the
// work, wake long-polls) and must not call back into write methods of the roomserver.
type Output interface {
	OnNewEvent(ev OutputEvent)
}

// Outputs fans events out to several outputs, in order.
type Outputs []Output

// OnNewEvent implements Output.
func (o Outputs) OnNewEvent(ev OutputEvent) {
	for _, out := range o {
		out.OnNewEvent(ev)
	}
}

// OutputFunc adapts a function to Output.
type OutputFunc func(OutputEvent)

// OnNewEvent implements Output.
func (f OutputFunc) OnNewEvent(ev OutputEvent) { f(ev) }
