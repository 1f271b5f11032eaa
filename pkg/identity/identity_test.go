package identity

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/cgroup2"
	"github.com/tollgate-dev/tollgate/pkg/config"
	"github.com/tollgate-dev/tollgate/redirect"
)

// testMount returns the cgroup2 mount. Every tollgate machine has one (the
// agent cannot work without it), so its absence fails the test.
func testMount(t testing.TB) string {
	t.Helper()
	m, err := cgroup2.Mount()
	if err != nil {
		t.Fatalf("find the cgroup2 mount: %v", err)
	}
	return m
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: creating cgroups and moving processes needs root")
	}
}

// makeCgroup creates cgroup rel (under a tollgate-idtest-* directory of the
// mount) and removes it when the test ends. It returns the cgroup id.
func makeCgroup(t *testing.T, mount, rel string) uint64 {
	t.Helper()
	if !strings.HasPrefix(rel, "/tollgate-idtest-") {
		t.Fatalf("test cgroup %q is outside /tollgate-idtest-*", rel)
	}
	dir := filepath.Join(mount, rel)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("create cgroup: %v", err)
	}
	t.Cleanup(func() {
		if err := os.Remove(dir); err != nil {
			t.Errorf("remove cgroup: %v", err)
		}
	})
	return inode(t, dir)
}

func inode(t testing.TB, p string) uint64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// testCgroupName is a fresh top-level test cgroup name ending in suffix.
var testCgroupSeq atomic.Int64

func testCgroupName(suffix string) string {
	return fmt.Sprintf("/tollgate-idtest-%d-%d%s", os.Getpid(), testCgroupSeq.Add(1), suffix)
}

// startIn starts the executable bin ("sleep" or a path) in cgroup rel and
// kills and reaps it when the test ends (before the cgroup is removed).
func startIn(t *testing.T, mount, rel, bin string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "1000")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	var once sync.Once
	reap := func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
	}
	t.Cleanup(reap)
	procs := filepath.Join(mount, rel, "cgroup.procs")
	if err := os.WriteFile(procs, []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
		t.Fatalf("move pid %d into %s: %v", cmd.Process.Pid, rel, err)
	}
	return cmd
}

func kill(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
}

func TestResolveRealCgroup(t *testing.T) {
	requireRoot(t)
	mount := testMount(t)
	slice := testCgroupName(".slice")
	unitPath := slice + "/billing-export.service"
	makeCgroup(t, mount, slice)
	id := makeCgroup(t, mount, unitPath)
	cmd := startIn(t, mount, unitPath, "sleep")
	pid := cmd.Process.Pid

	procCgroup, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(procCgroup), "0::"+unitPath+"\n") {
		t.Fatalf("/proc/%d/cgroup = %q; want it in %s", pid, procCgroup, unitPath)
	}
	sleepPath, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	wantExe, err := filepath.EvalSymlinks(sleepPath)
	if err != nil {
		t.Fatal(err)
	}

	r := NewResolver(mount, []config.Identity{
		{Name: "elsewhere", Match: config.IdentityMatch{Cgroup: "/system.slice/billing-export.service"}},
		{Name: "as-1001", Match: config.IdentityMatch{Cgroup: slice + "/**", UID: uidp(1001)}},
		{Name: "billing-export", Owner: "team-billing", Purpose: "Nightly invoice export",
			Match: config.IdentityMatch{Cgroup: slice + "/*", SystemdUnit: "billing-export.service", UID: uidp(0)}},
		{Name: "shadowed", Match: config.IdentityMatch{Cgroup: unitPath}},
	})
	o := redirect.Origin{CgroupID: id, PID: uint32(pid), UID: 0, GID: 0, NetnsCookie: 4096}
	got := r.Resolve(o)
	want := Workload{
		Name: "billing-export", Known: true, Owner: "team-billing", Purpose: "Nightly invoice export",
		Cgroup: unitPath, SystemdUnit: "billing-export.service",
		PID: uint32(pid), UID: 0, GID: 0, User: "root", Exe: wantExe, NetnsCookie: 4096,
	}
	if !equalWorkload(got, want) {
		t.Errorf("Resolve(%+v)\n got %+v\nwant %+v", o, got, want)
	}

	if p, ok := r.CgroupPath(id); !ok || p != unitPath {
		t.Errorf("CgroupPath(%d) = %q, %v; want %q, true", id, p, ok, unitPath)
	}
	if gotID, err := r.CgroupID(unitPath); err != nil || gotID != id {
		t.Errorf("CgroupID(%q) = %d, %v; want %d", unitPath, gotID, err, id)
	}
	rootID, err := r.CgroupID("/")
	if err != nil || rootID != inode(t, mount) {
		t.Errorf("CgroupID(/) = %d, %v; want %d", rootID, err, inode(t, mount))
	}
	if p, ok := r.CgroupPath(rootID); !ok || p != "/" {
		t.Errorf("CgroupPath(%d) = %q, %v; want /", rootID, p, ok)
	}

	// Once the process is gone its executable is unknown; the rest stays.
	kill(t, cmd)
	got = r.Resolve(o)
	want.Exe = ""
	if !equalWorkload(got, want) {
		t.Errorf("Resolve after exit\n got %+v\nwant %+v", got, want)
	}

	// Unmatched: a readable name from the unit.
	r.SetIdentities(nil)
	got = r.Resolve(o)
	if got.Known || got.Name != "billing-export.service" || got.Owner != "" {
		t.Errorf("Resolve without identities: name %q known %v owner %q; want billing-export.service, false, empty",
			got.Name, got.Known, got.Owner)
	}
}

func equalWorkload(a, b Workload) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func TestCgroupIDErrors(t *testing.T) {
	mount := testMount(t)
	r := NewResolver(mount, nil)
	if _, err := r.CgroupID("system.slice"); err == nil {
		t.Error("CgroupID(relative path) succeeded")
	}
	if _, err := r.CgroupID("/tollgate-idtest-does-not-exist"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("CgroupID(missing) = %v; want ErrNotExist", err)
	}
	if _, err := r.CgroupID("/cgroup.procs"); !errors.Is(err, ErrNotCgroup2) {
		t.Errorf("CgroupID(a file) = %v; want ErrNotCgroup2", err)
	}
	nr := NewResolver(t.TempDir(), nil)
	if _, err := nr.CgroupID("/"); !errors.Is(err, ErrNotCgroup2) {
		t.Errorf("CgroupID in a temp dir = %v; want ErrNotCgroup2", err)
	}
	if err := NewResolver(filepath.Join(t.TempDir(), "gone"), nil).Refresh(); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Refresh on a missing mount = %v; want ErrNotExist", err)
	}
}

func TestResolveRefreshesOnNewCgroup(t *testing.T) {
	requireRoot(t)
	mount := testMount(t)
	r := NewResolver(mount, []config.Identity{
		{Name: "late", Match: config.IdentityMatch{Cgroup: "/tollgate-idtest-*"}},
	})
	if err := r.Refresh(); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	walks := r.walkStarts.Load()

	p := testCgroupName("")
	id := makeCgroup(t, mount, p)
	got := r.Resolve(redirect.Origin{CgroupID: id, UID: 0})
	if got.Cgroup != p {
		t.Fatalf("Resolve of a cgroup made after the cache was filled: cgroup %q; want %q", got.Cgroup, p)
	}
	if n := r.walkStarts.Load() - walks; n != 1 {
		t.Errorf("walks for one new cgroup = %d; want 1", n)
	}
	if got.Known || got.Name != p {
		t.Errorf("name %q, known %v; want %q, false (the pattern is a literal path)", got.Name, got.Known, p)
	}
	r.Resolve(redirect.Origin{CgroupID: id})
	if n := r.walkStarts.Load() - walks; n != 1 {
		t.Errorf("walks after a cache hit = %d; want still 1", n)
	}

	// A cgroup learned through CgroupID is cached without a walk.
	q := testCgroupName("")
	qid := makeCgroup(t, mount, q)
	if got, err := r.CgroupID(q); err != nil || got != qid {
		t.Fatalf("CgroupID(%q) = %d, %v; want %d", q, got, err, qid)
	}
	if path, ok := r.CgroupPath(qid); !ok || path != q {
		t.Errorf("CgroupPath(%d) = %q, %v; want %q", qid, path, ok, q)
	}
	if n := r.walkStarts.Load() - walks; n != 1 {
		t.Errorf("walks after CgroupID = %d; want still 1", n)
	}
}

func TestResolveUnknownCgroup(t *testing.T) {
	mount := testMount(t)
	r := NewResolver(mount, []config.Identity{
		{Name: "everything", Match: config.IdentityMatch{Cgroup: "/**"}},
	})
	now := time.Unix(1_700_000_000, 0)
	var clock sync.Mutex
	r.now = func() time.Time { clock.Lock(); defer clock.Unlock(); return now }
	advance := func(d time.Duration) { clock.Lock(); now = now.Add(d); clock.Unlock() }

	// kernfs ids only grow; no cgroup on this machine has this one.
	const unknown = 1 << 62
	o := redirect.Origin{CgroupID: unknown, UID: 4242424, GID: 4242424}
	got := r.Resolve(o)
	want := Workload{Name: "uid:4242424", UID: 4242424, GID: 4242424, User: "4242424"}
	if !equalWorkload(got, want) {
		t.Errorf("Resolve(unknown cgroup)\n got %+v\nwant %+v", got, want)
	}
	if n := r.walkStarts.Load(); n != 1 {
		t.Errorf("walks = %d; want 1", n)
	}
	for range 100 {
		r.Resolve(o)
	}
	if p, ok := r.CgroupPath(unknown); ok || p != "" {
		t.Errorf("CgroupPath(unknown) = %q, %v; want empty, false", p, ok)
	}
	if n := r.walkStarts.Load(); n != 1 {
		t.Errorf("walks after repeated misses within the negative TTL = %d; want 1", n)
	}
	advance(negativeTTL + time.Second)
	r.Resolve(o)
	if n := r.walkStarts.Load(); n != 2 {
		t.Errorf("walks after the negative TTL = %d; want 2", n)
	}

	// Misses that wait while a walk is due share one walk. The test holds
	// the walk lock until all 64 misses are seen and waiting for it.
	const burst = 64
	before := r.walkStarts.Load()
	var missed, done sync.WaitGroup
	missed.Add(burst)
	r.testHookMiss = missed.Done
	r.walkMu.Lock()
	for i := range burst {
		done.Go(func() { r.Resolve(redirect.Origin{CgroupID: unknown + 1 + uint64(i)}) })
	}
	missed.Wait()
	r.walkMu.Unlock()
	done.Wait()
	r.testHookMiss = nil
	if n := r.walkStarts.Load() - before; n != 1 {
		t.Errorf("walks for a burst of %d concurrent misses = %d; want 1", burst, n)
	}

	// Id 0 (no record) never walks.
	before = r.walkStarts.Load()
	if got := r.Resolve(redirect.Origin{}); got.Known || got.Cgroup != "" || got.Name != "uid:0" {
		t.Errorf("Resolve(zero origin) = %+v", got)
	}
	if r.walkStarts.Load() != before {
		t.Error("Resolve(cgroup id 0) walked the tree")
	}
}

func TestResolveDeletedExecutable(t *testing.T) {
	requireRoot(t)
	mount := testMount(t)
	src, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "upgraded-sleep")
	if err := copyFile(src, bin); err != nil {
		t.Fatal(err)
	}
	p := testCgroupName("")
	id := makeCgroup(t, mount, p)
	cmd := startIn(t, mount, p, bin)
	if err := os.Remove(bin); err != nil {
		t.Fatal(err)
	}
	got := NewResolver(mount, nil).Resolve(redirect.Origin{CgroupID: id, PID: uint32(cmd.Process.Pid)})
	if got.Exe != bin {
		t.Errorf("exe of a process whose executable was removed = %q; want %q", got.Exe, bin)
	}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// selfCgroup returns the test process's cgroup v2 path.
func selfCgroup(t testing.TB) string {
	t.Helper()
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return p
		}
	}
	t.Fatal("no cgroup v2 line in /proc/self/cgroup")
	return ""
}

func TestResolveConcurrentSetIdentities(t *testing.T) {
	mount := testMount(t)
	self := selfCgroup(t)
	uid := uint32(os.Getuid())
	byCgroup := []config.Identity{{Name: "by-cgroup", Match: config.IdentityMatch{Cgroup: self}}}
	byUID := []config.Identity{{Name: "by-uid", Match: config.IdentityMatch{UID: &uid}}}
	r := NewResolver(mount, byCgroup)
	id, err := r.CgroupID(self)
	if err != nil {
		t.Fatal(err)
	}
	o := redirect.Origin{CgroupID: id, PID: uint32(os.Getpid()), UID: uid}

	stop := make(chan struct{})
	var setter sync.WaitGroup
	setter.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				r.SetIdentities(byCgroup)
			} else {
				r.SetIdentities(byUID)
			}
		}
	})
	var resolvers sync.WaitGroup
	var bad atomic.Int64
	for range 8 {
		resolvers.Go(func() {
			for range 2000 {
				w := r.Resolve(o)
				if !w.Known || (w.Name != "by-cgroup" && w.Name != "by-uid") || w.Cgroup != self {
					if bad.Add(1) == 1 {
						t.Logf("bad: %+v", w)
					}
				}
			}
		})
	}
	resolvers.Wait()
	close(stop)
	setter.Wait()
	if n := bad.Load(); n != 0 {
		t.Errorf("%d of 16000 concurrent resolves saw neither identity set", n)
	}
}

func TestWorkloadJSON(t *testing.T) {
	full := Workload{
		Name: "orders-api", Known: true, Owner: "team-orders", Purpose: "Serves orders",
		Cgroup:      "/kubepods.slice/kubepods-pod1234abcd_5678_4abc_9def_0123456789ab.slice/cri-containerd-" + cid1 + ".scope",
		SystemdUnit: "cri-containerd-" + cid1 + ".scope",
		Pod:         &Pod{UID: "1234abcd-5678-4abc-9def-0123456789ab"}, ContainerID: cid1,
		PID: 4242, UID: 1001, GID: 1001, User: "billing", Exe: "/usr/bin/psql", NetnsCookie: 9,
		Claims: map[string]any{"sub": "svc"},
	}
	got, err := json.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"name":"orders-api","known":true,"owner":"team-orders","purpose":"Serves orders",` +
		`"cgroup":"` + full.Cgroup + `","systemd_unit":"` + full.SystemdUnit + `",` +
		`"pod":{"uid":"1234abcd-5678-4abc-9def-0123456789ab"},"container_id":"` + cid1 + `",` +
		`"pid":4242,"uid":1001,"gid":1001,"user":"billing","exe":"/usr/bin/psql","netns_cookie":9,` +
		`"claims":{"sub":"svc"}}`
	if string(got) != want {
		t.Errorf("json of a full workload\n got %s\nwant %s", got, want)
	}

	got, err = json.Marshal(Workload{Name: "uid:7", UID: 7, User: "7"})
	if err != nil {
		t.Fatal(err)
	}
	want = `{"name":"uid:7","known":false,"owner":"","purpose":"","cgroup":"","systemd_unit":"",` +
		`"pid":0,"uid":7,"gid":0,"user":"7","exe":"","netns_cookie":0}`
	if string(got) != want {
		t.Errorf("json of a bare workload\n got %s\nwant %s", got, want)
	}
}

func BenchmarkResolve(b *testing.B) {
	mount := testMount(b)
	r := NewResolver(mount, []config.Identity{
		{Name: "a", Match: config.IdentityMatch{Cgroup: "/system.slice/a.service"}},
		{Name: "b", Match: config.IdentityMatch{SystemdUnit: "b.service"}},
		{Name: "self", Match: config.IdentityMatch{Cgroup: "/**", UID: uidp(uint32(os.Getuid()))}},
	})
	id, err := r.CgroupID(selfCgroup(b))
	if err != nil {
		b.Fatal(err)
	}
	o := redirect.Origin{CgroupID: id, PID: uint32(os.Getpid()), UID: uint32(os.Getuid())}
	if w := r.Resolve(o); !w.Known {
		b.Fatalf("warm-up Resolve = %+v; want known", w)
	}
	b.ReportAllocs()
	for b.Loop() {
		r.Resolve(o)
	}
}
