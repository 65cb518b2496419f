package inject

import (
	"bytes"
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/seed722d2a70/meshproxy/internal/manifest"
)

// StreamOptions says what Stream does to the workloads it finds.
type StreamOptions struct {
	// Uninject removes the proxy instead of adding it.
	Uninject bool
	// Policy chooses which pods are injected; the zero value injects all
	// but those annotated disabled.
	Policy Policy
	// Namespace is the namespace of objects that name none ("default"
	// when empty).
	Namespace string
	// Namespaces holds the annotations of namespaces, by name. Namespace
	// objects in the stream itself are added to it.
	Namespaces map[string]map[string]string
}

// Stream injects (or uninjects) every workload of a YAML stream: Pods,
// Deployments, StatefulSets, DaemonSets, ReplicaSets, ReplicationControllers,
// Jobs, CronJobs, also inside v1 Lists. Every other document, and every
// workload left as it was, comes out exactly as it went in, comments
// included; changed workloads are rendered from the k8s.io/api types.
func (in *Injector) Stream(input []byte, opts StreamOptions) ([]byte, []Result, error) {
	docs, err := manifest.Read(bytes.NewReader(input))
	if err != nil {
		return nil, nil, err
	}
	if opts.Namespace == "" {
		opts.Namespace = "default"
	}
	nsAnn := map[string]map[string]string{}
	for name, a := range opts.Namespaces {
		nsAnn[name] = a
	}
	headers := make([]manifest.Header, len(docs))
	for i, d := range docs {
		if headers[i], err = manifest.ReadHeader(d.Body); err != nil {
			return nil, nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		if headers[i].GVK() == "v1/Namespace" {
			nsAnn[headers[i].Metadata.Name] = headers[i].Metadata.Annotations
		}
	}
	s := streamer{in: in, opts: opts, ns: nsAnn}
	for i := range docs {
		h := headers[i]
		switch {
		case h.GVK() == "v1/List":
			body, changed, err := s.list(docs[i].Body)
			if err != nil {
				return nil, nil, fmt.Errorf("document %d (%s): %w", i+1, h, err)
			}
			if changed {
				docs[i].Body = body
			}
		default:
			obj, ok := NewWorkload(h.GVK())
			if !ok {
				continue
			}
			if err := manifest.DecodeStrict(docs[i].Body, obj.Object); err != nil {
				return nil, nil, fmt.Errorf("document %d (%s): %w", i+1, h, err)
			}
			changed, err := s.workload(h, obj)
			if err != nil {
				return nil, nil, fmt.Errorf("document %d (%s): %w", i+1, h, err)
			}
			if changed {
				if docs[i].Body, err = manifest.Encode(obj.Object); err != nil {
					return nil, nil, fmt.Errorf("document %d (%s): %w", i+1, h, err)
				}
			}
		}
	}
	var out bytes.Buffer
	if err := manifest.Write(&out, docs); err != nil {
		return nil, nil, err
	}
	return out.Bytes(), s.results, nil
}

// streamer carries one Stream call's state.
type streamer struct {
	in      *Injector
	opts    StreamOptions
	ns      map[string]map[string]string
	results []Result
}

// workload injects or uninjects one decoded workload and reports whether it
// changed.
func (s *streamer) workload(h manifest.Header, w Workload) (bool, error) {
	var (
		res Result
		err error
	)
	if s.opts.Uninject {
		res = Uninject(w.PodMeta, w.Spec)
	} else {
		ns := w.Meta.Namespace
		if ns == "" {
			ns = s.opts.Namespace
		}
		res, err = s.in.Pod(w.PodMeta, w.Spec, w.Scope(s.ns[ns]), s.opts.Policy)
		if err != nil {
			return false, err
		}
	}
	res.Object = h.String()
	s.results = append(s.results, res)
	return res.Action == ActionInjected || res.Action == ActionUninjected, nil
}

// list handles the items of a v1 List.
func (s *streamer) list(body []byte) ([]byte, bool, error) {
	var list corev1.List
	if err := manifest.DecodeStrict(body, &list); err != nil {
		return nil, false, err
	}
	changed := false
	for i, item := range list.Items {
		h, err := manifest.ReadHeader(item.Raw)
		if err != nil {
			return nil, false, fmt.Errorf("item %d: %w", i+1, err)
		}
		w, ok := NewWorkload(h.GVK())
		if !ok {
			continue
		}
		if err := manifest.DecodeStrict(item.Raw, w.Object); err != nil {
			return nil, false, fmt.Errorf("item %d (%s): %w", i+1, h, err)
		}
		c, err := s.workload(h, w)
		if err != nil {
			return nil, false, fmt.Errorf("item %d (%s): %w", i+1, h, err)
		}
		if c {
			if list.Items[i].Raw, err = manifest.EncodeJSON(w.Object); err != nil {
				return nil, false, err
			}
			list.Items[i].Object = nil
			changed = true
		}
	}
	if !changed {
		return body, false, nil
	}
	out, err := manifest.Encode(&list)
	return out, err == nil, err
}
