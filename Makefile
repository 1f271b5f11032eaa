# tollgate: `make demo` runs it, `make test` tests it. Both need root.
GO      ?= $(shell command -v go || echo /usr/local/go/bin/go)
export PATH := $(PATH):/usr/local/go/bin
MULTIARCH := $(shell $(GO) env GOARCH | sed 's/amd64/x86_64/;s/arm64/aarch64/')-linux-gnu
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/tollgate-dev/tollgate/pkg/agent.Version=$(VERSION)

.PHONY: all build generate check-generate setup demo test vet fmt-check bench clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/ ./cmd/...

# Regenerates the committed eBPF objects and bindings (needs clang: installed
# when missing) and records the hash of the sources they came from.
generate:
	scripts/setup.sh generate
	cd bpf && BPF2GO_CFLAGS="-O2 -g -Wall -Werror -I/usr/include/$(MULTIARCH)" $(GO) generate ./
	cd bpf && sha256sum tollgate.c gen.go > sources.sha256

# Fails when bpf/tollgate.c changed after the objects were generated.
check-generate:
	cd bpf && sha256sum --quiet -c sources.sha256 || { echo "bpf objects are stale: run make generate"; exit 1; }

setup:
	scripts/setup.sh test

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); [ -z "$$out" ] || { echo "gofmt needed:"; echo "$$out"; exit 1; }

vet:
	$(GO) vet ./...

# The whole suite, privileged tests included (root: eBPF, cgroups, netns).
test: setup check-generate fmt-check vet
	$(GO) test -count=1 -timeout 40m ./...
	# The PostgreSQL engine again with its event loops off: every session
	# on the two goroutines that sessions leaving the loops run on.
	TOLLGATE_EVENT_LOOPS=0 $(GO) test -count=1 -timeout 10m ./l7/postgres

demo: setup build
	scripts/demo.sh

bench: setup build
	$(GO) run ./test/bench
	$(GO) test ./audit -run '^$$' -bench 'AppendBatch|AppendStrict' -benchtime 2s

clean:
	rm -rf bin
