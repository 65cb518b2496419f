package netinit

import (
	"bufio"
	"bytes"
	"strings"
)

// savedState is what iptables-save shows of the nat table that concerns
// meshproxy: which of its chains exist and which rules refer to them.
type savedState struct {
	chains []string   // our chains that exist, in the order listed
	refs   []savedRef // rules outside our chains that jump or go to them
}

// savedRef is one rule, outside our chains, whose target is one of them.
type savedRef struct {
	chain  string // the chain holding the rule
	target string // our chain it jumps to
	text   string // the rule after "-A ", as saved: chain name and match
}

// references returns the rules that refer to our chains.
func (s savedState) references() []savedRef { return s.refs }

// empty reports whether nothing of meshproxy's is installed.
func (s savedState) empty() bool { return len(s.chains) == 0 && len(s.refs) == 0 }

// parseSaved reads the nat table from iptables-save output (which may hold
// other tables too). Lines it does not understand are ignored: the output
// comes from the local iptables, and anything unrecognized is not ours.
func parseSaved(out []byte) savedState {
	var st savedState
	inNat := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "*"):
			inNat = line == "*nat"
		case line == "COMMIT":
			inNat = false
		case !inNat:
		case strings.HasPrefix(line, ":"):
			name, _, _ := strings.Cut(line[1:], " ")
			if ours(name) {
				st.chains = append(st.chains, name)
			}
		case strings.HasPrefix(line, "-A "):
			text := strings.TrimSpace(line[len("-A "):])
			fields := splitRule(text)
			if len(fields) == 0 || ours(fields[0]) {
				continue
			}
			if target := ruleTarget(fields[1:]); ours(target) {
				st.refs = append(st.refs, savedRef{chain: fields[0], target: target, text: text})
			}
		}
	}
	return st
}

// ruleTarget returns the chain a rule's -j or -g names, or "".
func ruleTarget(fields []string) string {
	for i := 0; i+1 < len(fields); i++ {
		switch fields[i] {
		case "-j", "--jump", "-g", "--goto":
			return fields[i+1]
		}
	}
	return ""
}

// splitRule splits a saved rule into words the way iptables-restore does:
// at spaces, except inside double quotes, where a backslash escapes the next
// character. Quoted words such as comments are returned with the quotes
// removed, so a comment that mentions "-j" is one word and not a target.
func splitRule(s string) []string {
	var (
		words  []string
		cur    strings.Builder
		inWord bool
		quoted bool
	)
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case quoted && ch == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case ch == '"':
			quoted = !quoted
			inWord = true
		case !quoted && (ch == ' ' || ch == '\t'):
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(ch)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}
