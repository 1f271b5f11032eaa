// Package bpf holds tollgate's eBPF programs and their bpf2go bindings.
//
// The C source is tollgate.c; the generated tollgate_bpfel.go and
// tollgate_bpfel.o are committed so a build needs no clang. Regenerate with
// `make generate`.
package bpf

//go:generate go tool bpf2go -tags linux -target bpfel -type origin -type tuple -type target_key -type target_val -type config -type stats -type hop Tollgate tollgate.c
