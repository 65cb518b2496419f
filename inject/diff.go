package inject

import (
	"bytes"
	"fmt"
	"strings"
)

// diffContext is how many unchanged lines surround each change.
const diffContext = 3

// maxDiffCells bounds the work of the line diff (lines of a × lines of b);
// past it, Diff shows the whole of both sides.
const maxDiffCells = 16 << 20

// Diff returns a unified diff of a and b, line by line, for --dry-run; ""
// when they are equal.
func Diff(nameA, nameB string, a, b []byte) string {
	if bytes.Equal(a, b) {
		return ""
	}
	la, lb := splitLines(a), splitLines(b)
	var out strings.Builder
	fmt.Fprintf(&out, "--- %s\n+++ %s\n", nameA, nameB)
	if len(la)*len(lb) > maxDiffCells {
		fmt.Fprintf(&out, "@@ -1,%d +1,%d @@\n", len(la), len(lb))
		for _, l := range la {
			out.WriteString("-" + l)
		}
		for _, l := range lb {
			out.WriteString("+" + l)
		}
		return out.String()
	}
	ops := lineOps(la, lb)
	// Group the operations into hunks of changes with their context.
	for i := 0; i < len(ops); {
		if ops[i].kind == ' ' {
			i++
			continue
		}
		start := max(i-diffContext, 0)
		end := i
		for end < len(ops) {
			if ops[end].kind != ' ' {
				end++
				continue
			}
			// Look ahead: a run of unchanged lines longer than twice the
			// context ends the hunk.
			run := end
			for run < len(ops) && ops[run].kind == ' ' {
				run++
			}
			if run == len(ops) || run-end > 2*diffContext {
				end = min(end+diffContext, len(ops))
				break
			}
			end = run
		}
		writeHunk(&out, ops[start:end])
		i = end
	}
	return out.String()
}

type lineOp struct {
	kind  byte // ' ', '-' or '+'
	line  string
	aLine int // 1-based line in a (of the op or, for '+', the line before)
	bLine int
}

func writeHunk(out *strings.Builder, ops []lineOp) {
	var na, nb int
	for _, op := range ops {
		if op.kind != '+' {
			na++
		}
		if op.kind != '-' {
			nb++
		}
	}
	first := ops[0]
	fmt.Fprintf(out, "@@ -%d,%d +%d,%d @@\n", first.aLine, na, first.bLine, nb)
	for _, op := range ops {
		out.WriteByte(op.kind)
		out.WriteString(op.line)
		if !strings.HasSuffix(op.line, "\n") {
			out.WriteString("\n\\ No newline at end of file\n")
		}
	}
}

// lineOps is a longest-common-subsequence line diff: small manifests make
// its quadratic table cheap, and it needs no dependency.
func lineOps(a, b []string) []lineOp {
	n, m := len(a), len(b)
	lcs := make([][]int32, n+1)
	for i := range lcs {
		lcs[i] = make([]int32, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var ops []lineOp
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && a[i] == b[j]:
			ops = append(ops, lineOp{' ', a[i], i + 1, j + 1})
			i++
			j++
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			ops = append(ops, lineOp{'+', b[j], i + 1, j + 1})
			j++
		default:
			ops = append(ops, lineOp{'-', a[i], i + 1, j + 1})
			i++
		}
	}
	return ops
}

func splitLines(b []byte) []string {
	s := string(b)
	var out []string
	for s != "" {
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			out = append(out, s)
			break
		}
		out = append(out, s[:i+1])
		s = s[i+1:]
	}
	return out
}
