package deepcopy

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

type inner struct {
	S []string
	M map[string][]int
}

type outer struct {
	P     *inner
	I     any
	A     [2]*int
	T     time.Time
	TP    *time.Time
	Nil   map[string]string
	Empty []string
	hid   *int
}

// A copy equals its original and shares nothing with it that can be
// changed through the copy; times keep their instant and location.
func TestOf(t *testing.T) {
	one, two, hid := 1, 2, 3
	when := time.Date(2024, 5, 6, 7, 8, 9, 10, time.FixedZone("x", 3600))
	o := outer{
		P:     &inner{S: []string{"a", "b"}, M: map[string][]int{"k": {1, 2}}},
		I:     map[string]any{"l": []any{"v", 1.0}},
		A:     [2]*int{&one, &two},
		T:     when,
		TP:    &when,
		Empty: []string{},
		hid:   &hid,
	}
	c := Of(o)
	assert.Equal(t, o, c)
	assert.True(t, c.T.Equal(when) && c.TP.Equal(when))
	assert.Equal(t, "x", c.T.Location().String())
	assert.Nil(t, c.Nil)
	assert.NotNil(t, c.Empty)

	c.P.S[0] = "z"
	c.P.M["k"][0] = 9
	c.I.(map[string]any)["l"].([]any)[0] = "z"
	*c.A[0] = 7
	*c.TP = time.Time{}
	assert.Equal(t, []string{"a", "b"}, o.P.S)
	assert.Equal(t, []int{1, 2}, o.P.M["k"])
	assert.Equal(t, "v", o.I.(map[string]any)["l"].([]any)[0])
	assert.Equal(t, 1, one)
	assert.True(t, o.TP.Equal(when))
	assert.Nil(t, Of[*inner](nil))
}
