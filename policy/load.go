package policy

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// DecisionQuery is the rule the engine evaluates.
const DecisionQuery = "data.tollgate.decision"

var decisionRef = ast.MustParseRef(DecisionQuery)

// policyFile is one .rego file read from the policy directory.
type policyFile struct {
	rel  string // slash-separated, relative to the directory
	path string // as opened, for error messages
	src  []byte
}

// readDir reads the .rego files under dir, sorted by relative path. It
// descends into subdirectories but not into hidden ones (a Kubernetes
// ConfigMap mount keeps its old and new copies in "..2024_..." beside the
// visible symlinks), follows symlinks to files (those visible names), and
// keeps *_test.rego files only when tests is true. dir may itself be a
// symlink to a directory; a missing dir holds no files.
func readDir(dir string, tests bool) ([]policyFile, error) {
	root, err := filepath.EvalSymlinks(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read policy dir: %w", err)
	}
	var files []policyFile
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && strings.HasPrefix(name, ".") {
				return fs.SkipDir
			}
			return nil
		}
		if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".rego") {
			return nil
		}
		if !tests && strings.HasSuffix(name, "_test.rego") {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			fi, err := os.Stat(path)
			if err != nil {
				return fmt.Errorf("policy file %s: %w", path, err)
			}
			if !fi.Mode().IsRegular() {
				return nil
			}
		} else if !d.Type().IsRegular() {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("policy file: %w", err)
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		files = append(files, policyFile{rel: filepath.ToSlash(rel), path: path, src: src})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read policy dir %s: %w", dir, err)
	}
	slices.SortFunc(files, func(a, b policyFile) int { return strings.Compare(a.rel, b.rel) })
	return files, nil
}

// versionOf is the sha256, in hex, of files' relative paths and contents.
func versionOf(files []policyFile) string {
	h := sha256.New()
	var n [8]byte
	for _, f := range files {
		binary.BigEndian.PutUint64(n[:], uint64(len(f.rel)))
		h.Write(n[:])
		h.Write([]byte(f.rel))
		binary.BigEndian.PutUint64(n[:], uint64(len(f.src)))
		h.Write(n[:])
		h.Write(f.src)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// parseFiles parses files as Rego v1 modules keyed by path.
func parseFiles(files []policyFile) (map[string]*ast.Module, error) {
	mods := make(map[string]*ast.Module, len(files))
	var errs ast.Errors
	for _, f := range files {
		m, err := ast.ParseModuleWithOpts(f.path, string(f.src), ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			var pe ast.Errors
			if errors.As(err, &pe) {
				errs = append(errs, pe...)
				continue
			}
			return nil, fmt.Errorf("parse %s: %w", f.path, err)
		}
		if m == nil {
			return nil, fmt.Errorf("parse %s: no package declaration", f.path)
		}
		mods[f.path] = m
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return mods, nil
}

// capabilities are OPA's built-ins less those that reach the network: a
// policy runs for every statement under a deadline of milliseconds, and a
// decision must not depend on a remote service.
func capabilities() *ast.Capabilities {
	c := ast.CapabilitiesForThisVersion()
	c.Builtins = slices.DeleteFunc(c.Builtins, func(b *ast.Builtin) bool {
		return slices.Contains(forbiddenBuiltins, b.Name)
	})
	c.AllowNet = []string{}
	return c
}

var forbiddenBuiltins = []string{
	"http.send",
	"net.lookup_ip_addr",
	"opa.runtime",
}

func newCompiler() *ast.Compiler {
	return ast.NewCompiler().
		WithCapabilities(capabilities()).
		WithDefaultRegoVersion(ast.RegoV1)
}
