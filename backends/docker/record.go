package docker

import (
	"encoding/json"
	"fmt"
	"maps"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Labels berth puts on the Docker containers it makes. Docker keeps them
// with the container across restarts of berth and of the daemon: they are
// berth's whole record, there is no state directory.
const (
	// LabelPrefix starts every label berth owns; callers' labels may not.
	LabelPrefix = "org.berthrun.berth"
	// LabelMarker is on every container berth made ("1").
	LabelMarker = LabelPrefix
	// LabelID is the berth ID (also the container's Docker name).
	LabelID = LabelPrefix + ".id"
	// LabelScope is the scope of the runtime that made the container.
	LabelScope = LabelPrefix + ".scope"
	// LabelStoreImage is on a container made from an image of berth's
	// store: the image ID berth loaded into the daemon for it, removed
	// from the daemon with the last container that uses it.
	LabelStoreImage = LabelPrefix + ".store-image"
	// labelRecord holds the spec and the caller's labels, as JSON.
	labelRecord = LabelPrefix + ".record"
)

// record is what berth keeps of a container beyond Docker's own state.
type record struct {
	Spec   *specs.Spec       `json:"spec"`
	Labels map[string]string `json:"labels,omitempty"`
	// OpenStdin: the init's stdin was kept open for attachments
	// (driver.CreateRequest.OpenStdin). Docker's own OpenStdin is also set
	// for a stdin given at create, which no attachment may feed.
	OpenStdin bool `json:"openStdin,omitempty"`
}

// labels returns the Docker labels of a new container: the caller's own
// (so that `docker ps --filter label=...` finds them), berth's marker, ID
// and scope, and the record.
func newLabels(id, scope string, rec *record) (map[string]string, error) {
	for k := range rec.Labels {
		if k == LabelPrefix || strings.HasPrefix(k, LabelPrefix+".") {
			return nil, invalid("label %q: the %s prefix is berth's own", k, LabelPrefix)
		}
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return nil, invalid("spec: %v", err)
	}
	out := maps.Clone(rec.Labels)
	if out == nil {
		out = map[string]string{}
	}
	out[LabelMarker] = "1"
	out[LabelID] = id
	out[LabelScope] = scope
	out[labelRecord] = string(b)
	return out, nil
}

// ours reports whether Docker labels mark the container id of scope.
func ours(labels map[string]string, id, scope string) bool {
	return labels[LabelMarker] == "1" && labels[LabelID] == id && labels[LabelScope] == scope
}

func readRecord(labels map[string]string) (*record, error) {
	var rec record
	if err := json.Unmarshal([]byte(labels[labelRecord]), &rec); err != nil {
		return nil, fmt.Errorf("berth record label: %w", err)
	}
	return &rec, nil
}
