package config

import (
	"os"
	"testing"
)

// FuzzParse checks that Parse never panics, and that a config it accepts
// holds targets whose Match succeeds.
func FuzzParse(f *testing.F) {
	full, err := os.ReadFile("testdata/full.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(full))
	fx := newFixture(f)
	for _, tc := range errorTests {
		f.Add(fx.render(tc.yaml))
	}
	f.Add(target + "    credentials: passthrough\n")
	f.Add("targets:\n  - &t {name: a, protocol: tcp, address: 127.77.0.5:1}\n  - <<: *t\n    name: b\n    address: \"[::1]:1\"\n")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse([]byte(s), "fuzz.yaml")
		if err != nil {
			if err.Error() == "" {
				t.Error("empty error message")
			}
			return
		}
		for i := range c.Targets {
			if _, _, err := c.Targets[i].Match(); err != nil {
				t.Errorf("valid config, but targets[%d].Match: %v", i, err)
			}
		}
	})
}
