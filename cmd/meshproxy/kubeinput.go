//go:build !sidecar

package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// input is one manifest file read by inject or netpol.
type input struct {
	name string
	data []byte
}

// readInputs reads the named files, "-" (or no names) meaning stdin.
func readInputs(names []string, stdin io.Reader) ([]input, error) {
	if len(names) == 0 {
		names = []string{"-"}
	}
	var out []input
	for _, n := range names {
		var (
			b   []byte
			err error
		)
		if n == "-" {
			b, err = io.ReadAll(stdin)
			n = "<stdin>"
		} else {
			b, err = os.ReadFile(n)
		}
		if err != nil {
			return nil, fmt.Errorf("reading manifests: %w", err)
		}
		out = append(out, input{name: n, data: b})
	}
	return out, nil
}

// joinStreams concatenates YAML streams into one, with a document
// separator between them.
func joinStreams(ins []input) []byte {
	var b bytes.Buffer
	for i, in := range ins {
		if i > 0 {
			if b.Len() > 0 && !bytes.HasSuffix(b.Bytes(), []byte("\n")) {
				b.WriteByte('\n')
			}
			b.WriteString("---\n")
		}
		b.Write(in.data)
	}
	return b.Bytes()
}
