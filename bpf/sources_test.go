package bpf

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strings"
	"testing"
)

// TestObjectsAreFresh fails when a source of the committed eBPF objects
// changed after they were generated: run `make generate`.
func TestObjectsAreFresh(t *testing.T) {
	f, err := os.Open("sources.sha256")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("bad line in sources.sha256: %q", sc.Text())
		}
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		got := sha256.Sum256(data)
		if hex.EncodeToString(got[:]) != sum {
			t.Errorf("%s changed since the eBPF objects were generated: run make generate", name)
		}
		n++
	}
	if n == 0 {
		t.Fatal("sources.sha256 lists nothing")
	}
}

func TestSpecLoads(t *testing.T) {
	spec, err := LoadTollgate()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"tg_connect4", "tg_connect6", "tg_sockops", "tg_getpeername4", "tg_getpeername6", "tg_sendmsg4", "tg_sendmsg6"} {
		if spec.Programs[p] == nil {
			t.Errorf("program %s missing from the object", p)
		}
	}
}
