package inject

import (
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// PatchOp is one JSON Patch (RFC 6902) operation.
type PatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// additionsPatch returns the JSON Patch that turns before into after, for
// an after made by injecting into before: only additions, each at its
// index, so the API server's copy of every other field — including fields
// newer than these Go types — is left as it was.
func additionsPatch(before, after *corev1.Pod) []PatchOp {
	var ops []PatchOp
	if len(before.Annotations) == 0 && len(after.Annotations) > 0 {
		ops = append(ops, PatchOp{Op: "add", Path: "/metadata/annotations", Value: after.Annotations})
	} else {
		for _, k := range slices.Sorted(maps.Keys(after.Annotations)) {
			v := after.Annotations[k]
			if old, ok := before.Annotations[k]; !ok || old != v {
				ops = append(ops, PatchOp{Op: "add", Path: "/metadata/annotations/" + escapePointer(k), Value: v})
			}
		}
	}
	ops = appendListAdds(ops, "/spec/initContainers", before.Spec.InitContainers, after.Spec.InitContainers,
		func(c corev1.Container) string { return c.Name })
	ops = appendListAdds(ops, "/spec/containers", before.Spec.Containers, after.Spec.Containers,
		func(c corev1.Container) string { return c.Name })
	ops = appendListAdds(ops, "/spec/volumes", before.Spec.Volumes, after.Spec.Volumes,
		func(v corev1.Volume) string { return v.Name })
	return ops
}

// appendListAdds adds one "add" per element of after not in before (by
// name), at its final index; a list absent before is added whole.
func appendListAdds[E any](ops []PatchOp, path string, before, after []E, name func(E) string) []PatchOp {
	if len(after) == len(before) {
		return ops
	}
	if len(before) == 0 {
		return append(ops, PatchOp{Op: "add", Path: path, Value: after})
	}
	had := map[string]bool{}
	for _, e := range before {
		had[name(e)] = true
	}
	for i, e := range after {
		if !had[name(e)] {
			ops = append(ops, PatchOp{Op: "add", Path: path + "/" + strconv.Itoa(i), Value: e})
		}
	}
	return ops
}

// escapePointer escapes a JSON Pointer (RFC 6901) reference token.
func escapePointer(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}

// marshalPatch renders ops; an empty patch is nil.
func marshalPatch(ops []PatchOp) ([]byte, error) {
	if len(ops) == 0 {
		return nil, nil
	}
	return json.Marshal(ops)
}
