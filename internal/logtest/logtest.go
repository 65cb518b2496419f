// Package logtest checks JSON log lines in tests. zap does not merge fields:
// a field added by a child logger (With) or a log call that its parent
// already carries is written twice, and a JSON decoder keeps only the last,
// so the duplicate goes unseen by most log pipelines. These checks see it.
package logtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// DuplicateKeys returns the keys that occur more than once in one object of
// the JSON value doc, at any depth, each once per object it repeats in.
func DuplicateKeys(doc []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var dups []string
	if err := walk(dec, &dups); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("trailing data after the JSON value: %w", err)
	}
	return dups, nil
}

// walk reads one value from dec, noting the repeated keys of its objects.
func walk(dec *json.Decoder, dups *[]string) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("decoding JSON: %w", err)
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			keyTok, err := dec.Token()
			if err != nil {
				return fmt.Errorf("decoding JSON: %w", err)
			}
			key := keyTok.(string) // the decoder allows only strings here
			if seen[key] {
				*dups = append(*dups, key)
			}
			seen[key] = true
			if err := walk(dec, dups); err != nil {
				return err
			}
		}
		_, err = dec.Token() // '}'
	case json.Delim('['):
		for dec.More() {
			if err := walk(dec, dups); err != nil {
				return err
			}
		}
		_, err = dec.Token() // ']'
	}
	if err != nil {
		return fmt.Errorf("decoding JSON: %w", err)
	}
	return nil
}

// CheckLines fails t for every line of logs (JSON lines, as zap's JSON
// encoder writes them) that is not JSON or repeats a key in an object. It
// returns the number of lines checked, so that a test can tell it saw some.
func CheckLines(t testing.TB, logs []byte) int {
	t.Helper()
	n := 0
	for _, line := range bytes.Split(logs, []byte("\n")) { // not range-over-func: t.Helper covers no closure
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		n++
		dups, err := DuplicateKeys(line)
		if err != nil {
			t.Errorf("log line is not JSON (%v): %s", err, line)
		} else if len(dups) > 0 {
			t.Errorf("log line repeats %q: %s", dups, line)
		}
	}
	return n
}

// CheckEntries is CheckLines for the entries a zap observer caught, each
// written as zap's production JSON encoder writes it: the observer keeps a
// logger's fields and the call's side by side, repeats included.
func CheckEntries(t testing.TB, entries []observer.LoggedEntry) int {
	t.Helper()
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	var lines []byte
	for _, e := range entries {
		buf, err := enc.EncodeEntry(e.Entry, e.Context)
		if err != nil {
			t.Fatalf("encoding log entry %q: %v", e.Message, err)
		}
		lines = append(lines, buf.Bytes()...)
		buf.Free()
	}
	return CheckLines(t, lines)
}
