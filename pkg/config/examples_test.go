package config

import "testing"

// The shipped example config must stay valid.
func TestShippedExampleParses(t *testing.T) {
	c, err := Load("../../deploy/examples/tollgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(c.Targets), 2; got != want {
		t.Errorf("targets = %d; want %d", got, want)
	}
}
