package runtime

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// A change seen in a listing is reported as the events that lead to it.
func TestTransitions(t *testing.T) {
	for _, tc := range []struct {
		from, to Status
		want     []EventType
	}{
		{"", StatusCreated, []EventType{EventCreated}},
		{"", StatusRunning, []EventType{EventCreated, EventStarted}},
		{"", StatusPaused, []EventType{EventCreated, EventStarted, EventPaused}},
		{"", StatusStopped, []EventType{EventCreated, EventStopped}},
		{StatusCreated, StatusRunning, []EventType{EventStarted}},
		{StatusCreated, StatusPaused, []EventType{EventStarted, EventPaused}},
		{StatusCreated, StatusStopped, []EventType{EventStopped}},
		{StatusRunning, StatusPaused, []EventType{EventPaused}},
		{StatusPaused, StatusRunning, []EventType{EventResumed}},
		{StatusPaused, StatusStopped, []EventType{EventStopped}},
		{StatusRunning, StatusStopped, []EventType{EventStopped}},
		{StatusRunning, StatusRunning, nil},
		{StatusStopped, StatusStopped, nil},
	} {
		require.Equal(t, tc.want, transitions(tc.from, tc.to), "%q to %q", tc.from, tc.to)
	}
}
