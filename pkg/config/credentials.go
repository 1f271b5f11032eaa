package config

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// Credentials are injected upstream; the client never sees them. Written
// either as a mapping (username and one of password_file, password_env) or
// as the scalar "passthrough". Default: none.
//
// The password itself is never in the file, and never in an error message,
// String or fmt output of Credentials.
type Credentials struct {
	Username string `yaml:"username"`
	// Password is read from PasswordFile (trailing newlines removed) or
	// PasswordEnv by Validate.
	Password string `yaml:"-" json:"-"`
	// PasswordFile is an absolute path to a file holding the password.
	PasswordFile string `yaml:"password_file"`
	// PasswordEnv names an environment variable holding the password.
	// Mutually exclusive with PasswordFile.
	PasswordEnv string `yaml:"password_env"`
	// Passthrough, written "credentials: passthrough", relays the client's
	// own authentication to the upstream: nothing is injected.
	Passthrough bool `yaml:"-"`
	// ClientToken, when set, makes the client present an OIDC JWT as its
	// password; the verified claims join the workload's identity
	// (input.identity.claims). Default: none (no client credential asked).
	ClientToken *ClientToken `yaml:"client_token"`
}

// ClientToken names the issuer and audience of workload tokens.
type ClientToken struct {
	// Issuer is the OIDC issuer URL (its discovery document is fetched).
	Issuer string `yaml:"issuer"`
	// Audience is the aud the tokens must carry.
	Audience string `yaml:"audience"`
}

const passthrough = "passthrough"

// UnmarshalYAML accepts the scalar "passthrough" or a mapping.
func (c *Credentials) UnmarshalYAML(n *yaml.Node) error {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch {
	case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null":
		*c = Credentials{}
	case n.Kind == yaml.ScalarNode && n.Value == passthrough:
		*c = Credentials{Passthrough: true}
	case n.Kind == yaml.MappingNode:
		type plain Credentials
		var p plain
		if err := n.Decode(&p); err != nil {
			return err
		}
		*c = Credentials(p)
	default:
		// The value is not quoted: it may be a password pasted in the wrong place.
		return fmt.Errorf(`want a mapping (username, password_file or password_env) or "passthrough", got %s`, describe(n))
	}
	return nil
}

// MarshalYAML writes "passthrough" or the mapping, never the password.
func (c Credentials) MarshalYAML() (any, error) {
	if c.Passthrough {
		return passthrough, nil
	}
	type plain Credentials
	return plain(c), nil
}

// String describes c without the password.
func (c Credentials) String() string {
	if c.Passthrough {
		return passthrough
	}
	var parts []string
	if c.Username != "" {
		parts = append(parts, "username: "+c.Username)
	}
	switch {
	case c.PasswordFile != "":
		parts = append(parts, "password_file: "+c.PasswordFile)
	case c.PasswordEnv != "":
		parts = append(parts, "password_env: "+c.PasswordEnv)
	}
	if c.Password != "" {
		parts = append(parts, "password: <redacted>")
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// Format prints String for every verb, so that no fmt verb (%v, %+v, %#v,
// %s, %x, %d) prints the password, even inside a printed Target or Config.
func (c Credentials) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		fmt.Fprintf(f, "config.Credentials{Username:%q, Password:%q, PasswordFile:%q, PasswordEnv:%q, Passthrough:%t}",
			c.Username, redacted(c.Password), c.PasswordFile, c.PasswordEnv, c.Passthrough)
		return
	}
	io.WriteString(f, c.String())
}

func redacted(s string) string {
	if s == "" {
		return ""
	}
	return "<redacted>"
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// validate checks the password source and reads the password. Values of
// these keys are quoted in errors only when well formed: a malformed one may
// be the password itself, pasted in the wrong key.
func (c *Credentials) validate(v *checker, key string) {
	if c.Passthrough {
		if c.Username != "" || c.Password != "" || c.PasswordFile != "" || c.PasswordEnv != "" {
			v.errorf(key, "passthrough injects nothing: it takes no username or password")
		}
		return
	}
	if t := c.ClientToken; t != nil {
		if u, err := url.Parse(t.Issuer); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			v.errorf(key+".client_token.issuer", "%q is not an http(s) issuer URL", t.Issuer)
		}
		if t.Audience == "" {
			v.errorf(key+".client_token.audience", "is empty: tokens must be meant for this target")
		}
	}
	switch {
	case c.PasswordFile != "" && c.PasswordEnv != "":
		v.errorf(key, "password_file and password_env are mutually exclusive: set one")
	case c.PasswordFile != "":
		if !filepath.IsAbs(c.PasswordFile) {
			v.errorf(key+".password_file", "is not an absolute path")
			return
		}
		pw, err := readPasswordFile(c.PasswordFile)
		if err != nil {
			v.errorf(key+".password_file", "%v", err)
			return
		}
		c.Password = pw
	case c.PasswordEnv != "":
		if !envNameRE.MatchString(c.PasswordEnv) {
			v.errorf(key+".password_env", "is not an environment variable name")
			return
		}
		pw, ok := os.LookupEnv(c.PasswordEnv)
		switch {
		case !ok:
			v.errorf(key+".password_env", "environment variable %s is not set", c.PasswordEnv)
		case pw == "":
			v.errorf(key+".password_env", "environment variable %s is empty", c.PasswordEnv)
		default:
			c.Password = pw
		}
	}
}

// readPasswordFile reads a password file, without its trailing newlines.
// Its errors carry the path and the OS error, never the content.
func readPasswordFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return "", fmt.Errorf("read %s: %w", path, pe.Err)
		}
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if pw == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return pw, nil
}
