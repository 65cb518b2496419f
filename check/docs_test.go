package check

import (
	"os"
	"strings"
	"testing"
)

// TestEveryCheckHasItsDocsAnchor keeps the hints' links working.
func TestEveryCheckHasItsDocsAnchor(t *testing.T) {
	doc, err := os.ReadFile("../docs/kubernetes.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range checks() {
		if !strings.Contains(string(doc), `<a id="check-`+c.name+`"></a>`) {
			t.Errorf("docs/kubernetes.md has no anchor check-%s", c.name)
		}
	}
}
