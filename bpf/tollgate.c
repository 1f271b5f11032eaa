//go:build ignore

// tollgate's kernel side: mechanism only. Decisions live in Go.
//
// connect4/6 look the dialled address up in the target table and, for a
// governed TCP socket, record who dialled (in process context) keyed by the
// socket cookie and rewrite the destination to the agent's proxy. sockops
// copies that record to the connection's 4-tuple once it is established, so
// the agent can find it from an accepted connection. getpeername4/6 show the
// client the address it dialled. sendmsg4/6 and UDP connect refuse datagrams
// to a target.

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define TCP_CLOSE 7

// READ_U32 reads one 32-bit context field; the verifier refuses the 64-bit
// loads the compiler would merge neighbouring fields into.
#define READ_U32(f) (*(volatile __u32 *)&(f))

char LICENSE[] SEC("license") = "Dual MIT/GPL";

// Addresses are stored in 16 bytes; IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d),
// so one table serves both families. Ports are in host byte order.

// target_key is an LPM trie key: prefixlen counts bits of port then addr.
struct target_key {
	__u32 prefixlen;
	__u16 port;
	__u8 addr[16];
	__u16 _pad; // keeps the key naturally aligned; always zero
};

struct target_val {
	__u32 id;
	__u32 flags;
};

struct origin {
	__u64 cgroup_id;
	__u64 netns_cookie;
	__u32 pid;
	__u32 uid;
	__u32 gid;
	__u32 target_id;
	__u8 dst_addr[16];
	__u16 dst_port;
	__u16 family;
	__u32 _pad;
};

struct tuple {
	__u8 src_addr[16];
	__u8 dst_addr[16];
	__u16 src_port;
	__u16 dst_port;
};

#define CONFIG_BREAK_GLASS 1

struct config {
	__u64 host_netns_cookie;
	__u32 mark;
	__u32 flags;
	__u32 proxy4;        // network byte order, for clients in the host netns
	__u32 proxy4_remote; // network byte order, for clients in other netns
	__u32 proxy6[4];     // network byte order
	__u16 port;          // host byte order; 0 means not configured
	__u16 _pad;
	__u32 _pad2;
};

// stats are per-CPU event counters, summed by the agent.
struct stats {
	__u64 redirected;
	__u64 exempt;
	__u64 denied_udp;
	__u64 established;
	__u64 not_configured;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, struct target_key);
	__type(value, struct target_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tg_targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct origin);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tg_by_cookie SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct tuple);
	__type(value, struct origin);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tg_by_tuple SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u64);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tg_exempt SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tg_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tg_stats SEC(".maps");

#define count(field)                                                   \
	do {                                                           \
		__u32 zero_ = 0;                                       \
		struct stats *st_ = bpf_map_lookup_elem(&tg_stats, &zero_); \
		if (st_)                                               \
			st_->field++;                                  \
	} while (0)

static __always_inline void map_v4(__u8 *dst, __u32 ip4)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &ip4, 4);
}

static __always_inline struct config *get_config(void)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&tg_config, &zero);
	if (!cfg || !cfg->port) {
		count(not_configured);
		return 0;
	}
	return cfg;
}

static __always_inline struct target_val *find_target(__u8 *addr, __u16 port)
{
	struct target_key k = {};
	k.prefixlen = 16 + 128;
	k.port = port;
	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(&tg_targets, &k);
}

// is_exempt reports whether the dialling socket belongs to the agent: marked
// by the agent, or created in one of the agent's cgroups.
static __always_inline int is_exempt(struct bpf_sock_addr *ctx, struct config *cfg)
{
	struct bpf_sock *sk = ctx->sk;
	if (sk && cfg->mark && sk->mark == cfg->mark)
		return 1;
	__u64 cg = bpf_get_current_cgroup_id();
	if (bpf_map_lookup_elem(&tg_exempt, &cg))
		return 1;
	return 0;
}

// judge decides what happens to a dial of addr:port. It returns 1 to let the
// dial proceed untouched, 0 to refuse it, and 2 to redirect it; on 2 the
// origin record has been stored under the socket cookie.
static __always_inline int judge(struct bpf_sock_addr *ctx, struct config *cfg, __u8 *addr,
				 __u16 port, __u16 family)
{
	struct target_val *tv = find_target(addr, port);
	if (!tv)
		return 1;
	if (is_exempt(ctx, cfg)) {
		count(exempt);
		return 1;
	}
	if (ctx->type != 1 /* SOCK_STREAM */) {
		count(denied_udp);
		return 0;
	}
	if (cfg->flags & CONFIG_BREAK_GLASS)
		return 1;

	struct origin o = {};
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();
	o.cgroup_id = bpf_get_current_cgroup_id();
	o.netns_cookie = bpf_get_netns_cookie(ctx);
	o.pid = pid_tgid >> 32;
	o.uid = (__u32)uid_gid;
	o.gid = uid_gid >> 32;
	o.target_id = tv->id;
	__builtin_memcpy(o.dst_addr, addr, 16);
	o.dst_port = port;
	o.family = family;

	__u64 cookie = bpf_get_socket_cookie(ctx);
	if (bpf_map_update_elem(&tg_by_cookie, &cookie, &o, BPF_ANY))
		return 0;
	count(redirected);
	return 2;
}

SEC("cgroup/connect4")
int tg_connect4(struct bpf_sock_addr *ctx)
{
	struct config *cfg = get_config();
	if (!cfg)
		return 1;
	__u8 addr[16];
	map_v4(addr, ctx->user_ip4);
	__u16 port = bpf_ntohs((__u16)ctx->user_port);

	int v = judge(ctx, cfg, addr, port, AF_INET);
	if (v != 2)
		return v;
	if (bpf_get_netns_cookie(ctx) == cfg->host_netns_cookie)
		ctx->user_ip4 = cfg->proxy4;
	else
		ctx->user_ip4 = cfg->proxy4_remote;
	ctx->user_port = bpf_htons(cfg->port);
	return 1;
}

// load_user_ip6 copies the socket address's IPv6 words one 32-bit load at
// a time.
static __always_inline void load_user_ip6(struct bpf_sock_addr *ctx, __u32 *ip6)
{
	ip6[0] = READ_U32(ctx->user_ip6[0]);
	ip6[1] = READ_U32(ctx->user_ip6[1]);
	ip6[2] = READ_U32(ctx->user_ip6[2]);
	ip6[3] = READ_U32(ctx->user_ip6[3]);
}

// datagram_verdict refuses a datagram (or a UDP connect) to a target from a
// governed socket: 0 refuses, 1 lets it pass.
static __always_inline int datagram_verdict(struct bpf_sock_addr *ctx, struct config *cfg, __u8 *addr, __u16 port)
{
	if (!find_target(addr, port) || is_exempt(ctx, cfg))
		return 1;
	count(denied_udp);
	return 0;
}

static __always_inline int is_v4_mapped(__u32 *ip6)
{
	return ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0xffff);
}

SEC("cgroup/connect6")
int tg_connect6(struct bpf_sock_addr *ctx)
{
	struct config *cfg = get_config();
	if (!cfg)
		return 1;
	__u32 ip6[4];
	load_user_ip6(ctx, ip6);
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	int mapped = is_v4_mapped(ip6);

	int v = judge(ctx, cfg, (__u8 *)ip6, port, mapped ? AF_INET : AF_INET6);
	if (v != 2)
		return v;
	if (mapped) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0xffff);
		if (bpf_get_netns_cookie(ctx) == cfg->host_netns_cookie)
			ctx->user_ip6[3] = cfg->proxy4;
		else
			ctx->user_ip6[3] = cfg->proxy4_remote;
	} else {
		ctx->user_ip6[0] = cfg->proxy6[0];
		ctx->user_ip6[1] = cfg->proxy6[1];
		ctx->user_ip6[2] = cfg->proxy6[2];
		ctx->user_ip6[3] = cfg->proxy6[3];
	}
	ctx->user_port = bpf_htons(cfg->port);
	return 1;
}

SEC("cgroup/sendmsg4")
int tg_sendmsg4(struct bpf_sock_addr *ctx)
{
	struct config *cfg = get_config();
	if (!cfg)
		return 1;
	__u8 addr[16];
	map_v4(addr, ctx->user_ip4);
	return datagram_verdict(ctx, cfg, addr, bpf_ntohs((__u16)ctx->user_port));
}

SEC("cgroup/sendmsg6")
int tg_sendmsg6(struct bpf_sock_addr *ctx)
{
	struct config *cfg = get_config();
	if (!cfg)
		return 1;
	__u32 ip6[4];
	load_user_ip6(ctx, ip6);
	return datagram_verdict(ctx, cfg, (__u8 *)ip6, bpf_ntohs((__u16)ctx->user_port));
}

SEC("cgroup/getpeername4")
int tg_getpeername4(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct origin *o = bpf_map_lookup_elem(&tg_by_cookie, &cookie);
	if (!o)
		return 1;
	__u32 ip4;
	__builtin_memcpy(&ip4, o->dst_addr + 12, 4);
	ctx->user_ip4 = ip4;
	ctx->user_port = bpf_htons(o->dst_port);
	return 1;
}

SEC("cgroup/getpeername6")
int tg_getpeername6(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct origin *o = bpf_map_lookup_elem(&tg_by_cookie, &cookie);
	if (!o)
		return 1;
	__u32 ip6[4];
	__builtin_memcpy(ip6, o->dst_addr, 16);
	ctx->user_ip6[0] = ip6[0];
	ctx->user_ip6[1] = ip6[1];
	ctx->user_ip6[2] = ip6[2];
	ctx->user_ip6[3] = ip6[3];
	ctx->user_port = bpf_htons(o->dst_port);
	return 1;
}

SEC("sockops")
int tg_sockops(struct bpf_sock_ops *skops)
{
	__u64 cookie;
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: {
		cookie = bpf_get_socket_cookie(skops);
		struct origin *o = bpf_map_lookup_elem(&tg_by_cookie, &cookie);
		if (!o)
			return 1;
		struct tuple t = {};
		if (skops->family == AF_INET) {
			map_v4(t.src_addr, skops->local_ip4);
			map_v4(t.dst_addr, skops->remote_ip4);
		} else {
			__u32 s[4], d[4];
			s[0] = READ_U32(skops->local_ip6[0]);
			s[1] = READ_U32(skops->local_ip6[1]);
			s[2] = READ_U32(skops->local_ip6[2]);
			s[3] = READ_U32(skops->local_ip6[3]);
			d[0] = READ_U32(skops->remote_ip6[0]);
			d[1] = READ_U32(skops->remote_ip6[1]);
			d[2] = READ_U32(skops->remote_ip6[2]);
			d[3] = READ_U32(skops->remote_ip6[3]);
			__builtin_memcpy(t.src_addr, s, 16);
			__builtin_memcpy(t.dst_addr, d, 16);
		}
		t.src_port = (__u16)skops->local_port;
		t.dst_port = (__u16)bpf_ntohl(skops->remote_port);
		bpf_map_update_elem(&tg_by_tuple, &t, o, BPF_ANY);
		count(established);
		// Ask for state changes so the cookie record goes when the socket does.
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
		return 1;
	}
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == TCP_CLOSE) {
			cookie = bpf_get_socket_cookie(skops);
			bpf_map_delete_elem(&tg_by_cookie, &cookie);
		}
		return 1;
	}
	return 1;
}
