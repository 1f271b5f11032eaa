package audit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// mountTmpfs mounts a tmpfs of the given size on a new temporary directory
// and unmounts it in cleanup, even when the test fails.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	privileged(t, "mounting a tmpfs")
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size="+size); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

// fill writes a file in dir until the filesystem is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte{'x'}, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill: %v", err)
			}
			return
		}
	}
}

func TestDiskFull(t *testing.T) {
	for _, d := range []Durability{Batch, Strict} {
		t.Run(string(d), func(t *testing.T) {
			mnt := mountTmpfs(t, "256k")
			dir := filepath.Join(mnt, "audit")
			j := mustOpen(t, dir, Options{
				PrivateKey:      newKey(t),
				Durability:      d,
				RetryInterval:   100 * time.Millisecond,
				CheckpointEvery: time.Hour,
			})
			t.Cleanup(func() { j.Close() }) // before the unmount
			ctx := context.Background()
			accepted := map[uint64]int{} // seq → n
			n := 0
			appendOne := func() error {
				seq, err := j.Append(ctx, TypeStatement, stmt{N: n, SQL: strings.Repeat("s", 100)})
				if err == nil {
					accepted[seq] = n
				}
				n++
				return err
			}
			for range 50 {
				if err := appendOne(); err != nil {
					t.Fatal(err)
				}
			}
			if err := j.Sync(); err != nil {
				t.Fatal(err)
			}

			ballast := filepath.Join(mnt, "ballast")
			fill(t, ballast)
			// The segment's last page has room for a few more lines;
			// then a write fails.
			var failure error
			for range 1000 {
				err := appendOne()
				if err == nil {
					err = j.Sync()
				}
				if err != nil {
					failure = err
					break
				}
			}
			if !errors.Is(failure, ErrUnavailable) || !errors.Is(failure, syscall.ENOSPC) {
				t.Fatalf("append on a full disk: got %v, want ErrUnavailable wrapping ENOSPC", failure)
			}
			// Refused at once from now on, until a retry succeeds.
			for range 3 {
				if err := appendOne(); !errors.Is(err, ErrUnavailable) {
					t.Fatalf("append while unavailable: got %v, want ErrUnavailable", err)
				}
			}
			if st := j.Status(); !errors.Is(st.Err, ErrUnavailable) || st.Refused < 3 || st.Since.IsZero() || st.Durable >= st.LastSeq && d == Batch {
				t.Errorf("status while unavailable: %+v", st)
			}
			// What is on disk is intact: no partial line.
			if rep := mustVerify(t, dir, j.PublicKey()); rep.Records == 0 {
				t.Fatal("nothing on disk")
			}

			if err := os.Remove(ballast); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(waitLimit)
			for appendOne() != nil {
				if time.Now().After(deadline) {
					t.Fatal("appends did not resume after space was freed")
				}
				time.Sleep(10 * time.Millisecond) // Append retries at most every RetryInterval
			}
			for range 20 {
				if err := appendOne(); err != nil {
					t.Fatal(err)
				}
			}
			if st := j.Status(); st.Err != nil {
				t.Errorf("status after recovery: %+v", st)
			}
			mustClose(t, j)

			rep := mustVerify(t, dir, j.PublicKey())
			recs := readAll(t, dir, Filter{})
			bySeq := map[uint64]Record{}
			for _, r := range recs {
				bySeq[r.Seq] = r
			}
			for seq, n := range accepted {
				r, ok := bySeq[seq]
				if !ok {
					t.Fatalf("accepted record %d lost", seq)
				}
				if got := decode[stmt](t, r.Data).N; got != n {
					t.Fatalf("record %d: n=%d, want %d", seq, got, n)
				}
			}
			notes := recordsOfType(recs, TypeRecovery)
			if len(notes) != 1 {
				t.Fatalf("recovery records: got %d, want 1", len(notes))
			}
			note := decode[Recovery](t, notes[0].Data)
			if note.Event != "outage" || note.Refused < 3 || !strings.Contains(note.Error, "no space") {
				t.Errorf("outage note: %+v", note)
			}
			t.Logf("%d accepted, outage note %+v, %+v", len(accepted), note, rep)
		})
	}
}

// TestSurvivesSIGKILL runs a child that appends records from several
// goroutines, prints each seq once Append returns, and kills itself with
// SIGKILL: every printed record must be on disk. Strict: at once. Batch,
// with a sync interval of an hour: after waiting well past FlushInterval
// (and appending more that may be lost): a crash of the process loses
// nothing the journal wrote, synced or not.
func TestSurvivesSIGKILL(t *testing.T) {
	for _, d := range []Durability{Strict, Batch} {
		t.Run(string(d), func(t *testing.T) { testSurvivesSIGKILL(t, d) })
	}
}

func testSurvivesSIGKILL(t *testing.T, d Durability) {
	dir, keyDir := t.TempDir(), t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "AUDIT_HELPER=kill", "AUDIT_DURABILITY="+string(d), "AUDIT_DIR="+dir, "AUDIT_KEYS="+keyDir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("child: got %v, want it killed; stderr:\n%s", err, stderr.Bytes())
	}
	if ws, ok := exit.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child: %v, want killed by SIGKILL; stderr:\n%s", err, stderr.Bytes())
	}
	printed := map[uint64]string{}
	var last uint64
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 3 && f[0] == "seq":
			seq, _ := strconv.ParseUint(f[1], 10, 64)
			printed[seq] = f[2]
		case len(f) == 2 && f[0] == "last":
			last, _ = strconv.ParseUint(f[1], 10, 64)
		}
	}
	if len(printed) != helperRecords || last == 0 {
		t.Fatalf("child printed %d records, last %d; want %d; output:\n%s", len(printed), last, helperRecords, out)
	}

	recs := readAll(t, dir, Filter{})
	bySeq := map[uint64]Record{}
	for _, r := range recs {
		bySeq[r.Seq] = r
	}
	for seq, id := range printed {
		r, ok := bySeq[seq]
		if !ok {
			t.Fatalf("record %d (%s) acknowledged by a %s Append is not on disk", seq, id, d)
		}
		if got := decode[map[string]string](t, r.Data)["id"]; got != id {
			t.Fatalf("record %d: id %s, want %s", seq, got, id)
		}
	}
	// The killed journal reopens and verifies.
	pub, err := ReadPublicKey(filepath.Join(keyDir, PublicKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	j := mustOpen(t, dir, Options{KeyDir: keyDir})
	mustClose(t, j)
	if rep := mustVerify(t, dir, pub); rep.LastSeq < last {
		t.Errorf("verified through %d, want >= %d", rep.LastSeq, last)
	}
}

const helperRecords = 400

// TestHelperProcess is the child of TestSurvivesSIGKILL.
func TestHelperProcess(t *testing.T) {
	if os.Getenv("AUDIT_HELPER") != "kill" {
		return
	}
	d := Durability(os.Getenv("AUDIT_DURABILITY"))
	j, err := Open(os.Getenv("AUDIT_DIR"), Options{
		KeyDir: os.Getenv("AUDIT_KEYS"), Durability: d,
		FlushInterval: 5 * time.Millisecond, SyncInterval: time.Hour,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	const workers = 8
	var mu sync.Mutex
	var last uint64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range helperRecords / workers {
				id := fmt.Sprintf("w%d-%d", w, i)
				seq, err := j.Append(context.Background(), TypeStatement, map[string]string{"id": id})
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintf(os.Stdout, "seq %d %s\n", seq, id)
				last = max(last, seq)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if d == Batch {
		time.Sleep(60 * 5 * time.Millisecond) // well past FlushInterval
		for i := range 50 {                   // buffered, may be lost
			j.Append(context.Background(), TypeStatement, map[string]string{"id": fmt.Sprintf("late-%d", i)})
		}
	}
	fmt.Fprintf(os.Stdout, "last %d\n", last)
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}
