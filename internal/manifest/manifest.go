// Package manifest reads and writes streams of Kubernetes YAML documents for
// the tools that rewrite them (inject, netpol): documents are split without
// being re-rendered, so those a tool leaves alone come out byte for byte as
// they went in, comments included; those it changes are decoded strictly
// into the k8s.io/api types and rendered back from them.
package manifest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"sigs.k8s.io/yaml"
)

// ErrDecode is returned (wrapped) for a document that is not valid YAML or
// does not match its kind's type, unknown fields included.
var ErrDecode = errors.New("cannot decode manifest")

// Doc is one document of a YAML stream.
type Doc struct {
	// Sep is the separator line that preceded the document ("---\n"),
	// empty for a first document without one.
	Sep string
	// Body is the document's text, replaced by tools that change it.
	Body []byte
	// Index is the document's position in the stream, from 0, for errors.
	Index int
}

// Header is the part of an object every tool looks at first.
type Header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name        string            `json:"name"`
		Namespace   string            `json:"namespace"`
		Annotations map[string]string `json:"annotations"`
		Labels      map[string]string `json:"labels"`
	} `json:"metadata"`
}

// GVK returns "apiVersion/Kind", e.g. "apps/v1/Deployment".
func (h Header) GVK() string { return h.APIVersion + "/" + h.Kind }

// String names the object for messages, e.g. "Deployment prod/web".
func (h Header) String() string {
	name := h.Metadata.Name
	if h.Metadata.Namespace != "" {
		name = h.Metadata.Namespace + "/" + name
	}
	return h.Kind + " " + name
}

// Read splits a YAML stream into documents. Joining the documents' Sep and
// Body gives back the input exactly.
func Read(r io.Reader) ([]Doc, error) {
	br := bufio.NewReader(r)
	var (
		docs []Doc
		cur  = Doc{}
		body bytes.Buffer
	)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			if isSeparator(line) {
				if body.Len() > 0 || cur.Sep != "" || len(docs) > 0 {
					cur.Body = bytes.Clone(body.Bytes())
					cur.Index = len(docs)
					docs = append(docs, cur)
				}
				cur = Doc{Sep: line}
				body.Reset()
			} else {
				body.WriteString(line)
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading manifests: %w", err)
		}
	}
	if body.Len() > 0 || cur.Sep != "" {
		cur.Body = bytes.Clone(body.Bytes())
		cur.Index = len(docs)
		docs = append(docs, cur)
	}
	return docs, nil
}

// isSeparator reports whether line is a YAML document separator ("---",
// possibly followed by a comment).
func isSeparator(line string) bool {
	rest, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), "---")
	if !ok {
		return false
	}
	rest = strings.TrimSpace(rest)
	return rest == "" || strings.HasPrefix(rest, "#")
}

// Write writes docs back as one stream.
func Write(w io.Writer, docs []Doc) error {
	for _, d := range docs {
		if _, err := io.WriteString(w, d.Sep); err != nil {
			return err
		}
		if _, err := w.Write(d.Body); err != nil {
			return err
		}
	}
	return nil
}

// ReadHeader returns the document's header; an empty or comment-only
// document has an empty Kind.
func ReadHeader(body []byte) (Header, error) {
	var h Header
	if err := yaml.Unmarshal(body, &h); err != nil {
		return Header{}, fmt.Errorf("%w: %w", ErrDecode, err)
	}
	return h, nil
}

// DecodeStrict decodes a YAML or JSON object into obj, rejecting unknown and
// duplicate fields, so that rendering obj back never silently drops part of
// what the user wrote.
func DecodeStrict(body []byte, obj any) error {
	if err := yaml.UnmarshalStrict(body, obj); err != nil {
		return fmt.Errorf("%w: %w", ErrDecode, err)
	}
	return nil
}

// Encode renders obj, a k8s.io/api object, as YAML, leaving out the empty
// fields the Go types cannot omit (creationTimestamp: null, status: {},
// resources: {}, strategy: {}) so output reads like what people write.
func Encode(obj any) ([]byte, error) {
	js, err := EncodeJSON(obj)
	if err != nil {
		return nil, err
	}
	return yaml.JSONToYAML(js)
}

// EncodeJSON is Encode's JSON form, used inside List items.
func EncodeJSON(obj any) ([]byte, error) {
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return nil, err
	}
	prune(tree)
	return json.Marshal(tree)
}

// emptyWhenOmittable reports whether an empty object under key means "not
// set".
func emptyWhenOmittable(key string) bool {
	switch key {
	case "status", "resources", "strategy", "updateStrategy":
		return true
	}
	return false
}

func prune(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			prune(child)
			if k == "creationTimestamp" && child == nil {
				delete(v, k)
			}
			if m, ok := child.(map[string]any); ok && len(m) == 0 && emptyWhenOmittable(k) {
				delete(v, k)
			}
		}
	case []any:
		for _, child := range v {
			prune(child)
		}
	}
}
