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
#define SK_PASS 1

// READ_U32 reads one 32-bit context field; the verifier refuses the 64-bit
// loads the compiler would merge neighbouring fields into.
#define READ_U32(f) (*(volatile __u32 *)&(f))

// COPY_IP6 copies a context's IPv6 address (four 32-bit fields) to the
// 16 bytes at dst, one 32-bit load at a time.
#define COPY_IP6(dst, f)                                   \
	do {                                               \
		__u32 w_[4];                               \
		w_[0] = READ_U32((f)[0]);                  \
		w_[1] = READ_U32((f)[1]);                  \
		w_[2] = READ_U32((f)[2]);                  \
		w_[3] = READ_U32((f)[3]);                  \
		__builtin_memcpy((dst), w_, 16);           \
	} while (0)

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
#define CONFIG_SHORTCUT 2 // the agent serves the same-host shortcut (tg_skmsg)

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
	__u64 shortcut;     // sends handed straight to the peer socket
	__u64 shortcut_tcp; // sends of shortcut sockets that took TCP
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

// tg_socks holds both ends of the agent's same-host hop, each under its own
// view of the connection (src is the local end): a redirected client's
// socket, put there by sockops once it is connected, and the agent's
// accepted socket, put there by the agent. A socket leaves when it closes.
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 131072); // two sockets a connection
	__type(key, struct tuple);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tg_socks SEC(".maps");

// hop is what one end of a shortcut hop tells the other, under its own
// tuple in tg_hops: the end writes it each time it sends, the other end's
// program reads it. Sequence numbers are those of the TCP connection
// beneath, which the two ends share.
struct hop {
	__u64 sent;       // bytes this end handed straight to its peer, in all
	__u64 peer_sent;  // the peer's sent when this end last wrote here
	__u32 copied_seq; // how far this end had read its TCP queue then
	__u32 rmem;       // what this end held unread then, both queues
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct tuple);
	__type(value, struct hop);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tg_hops SEC(".maps");

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
	COPY_IP6(ip6, ctx->user_ip6);
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
	COPY_IP6(ip6, ctx->user_ip6);
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

// skops_tuple fills t with the socket's own view of its connection.
static __always_inline void skops_tuple(struct bpf_sock_ops *skops, struct tuple *t)
{
	if (skops->family == AF_INET) {
		map_v4(t->src_addr, skops->local_ip4);
		map_v4(t->dst_addr, skops->remote_ip4);
	} else {
		COPY_IP6(t->src_addr, skops->local_ip6);
		COPY_IP6(t->dst_addr, skops->remote_ip6);
	}
	t->src_port = (__u16)skops->local_port;
	t->dst_port = (__u16)bpf_ntohl(skops->remote_port);
}

SEC("sockops")
int tg_sockops(struct bpf_sock_ops *skops)
{
	__u64 cookie;
	struct tuple t = {};
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: {
		cookie = bpf_get_socket_cookie(skops);
		struct origin *o = bpf_map_lookup_elem(&tg_by_cookie, &cookie);
		if (!o)
			return 1;
		skops_tuple(skops, &t);
		bpf_map_update_elem(&tg_by_tuple, &t, o, BPF_ANY);
		// The shortcut is best effort: a socket missing from tg_socks
		// sends by TCP. A fresh hop record: the tuple may be reused. A
		// live socket under the same tuple (another network namespace)
		// keeps its place.
		__u32 zero = 0;
		struct config *cfg = bpf_map_lookup_elem(&tg_config, &zero);
		struct hop h = {};
		if (cfg && (cfg->flags & CONFIG_SHORTCUT) && !bpf_map_update_elem(&tg_hops, &t, &h, BPF_ANY))
			bpf_sock_hash_update(skops, &tg_socks, &t, BPF_NOEXIST);
		count(established);
		// Ask for state changes so the records go when the socket does.
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
		return 1;
	}
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == TCP_CLOSE) {
			cookie = bpf_get_socket_cookie(skops);
			bpf_map_delete_elem(&tg_by_cookie, &cookie);
			skops_tuple(skops, &t);
			bpf_map_delete_elem(&tg_hops, &t);
		}
		return 1;
	}
	return 1;
}

// The fields of the kernel's tcp_sock, and of the struct sock it begins
// with, that tg_skmsg reads: relocated against the running kernel's BTF.
struct tcp_sock {
	__u32 rcv_nxt;
	__u32 copied_seq;
	__u32 snd_una;
	__u32 write_seq;
	__u32 data_segs_out;
} __attribute__((preserve_access_index));

struct sock {
	struct {
		struct {
			int counter;
		} rmem_alloc; // sk_rmem_alloc
	} sk_backlog;
} __attribute__((preserve_access_index));

// SHORTCUT_UNREAD_MAX bounds what one end may hand its peer beyond what the
// peer last said it held unread: a handed-over byte is never refused for
// room, so past this the bytes take TCP, whose window holds the sender.
#define SHORTCUT_UNREAD_MAX (4 << 20)

// tg_skmsg runs on every send of a socket in tg_socks and hands the bytes
// straight to the peer's receive queue (BPF_F_INGRESS), skipping the TCP/IP
// stack, when that cannot reorder the stream. A reader drains what was
// handed to it before its TCP queue, so the handed-over bytes must be the
// oldest unread: every byte this end sent by TCP has been acknowledged by
// the peer and read by it (the peer's copied_seq, which it writes to
// tg_hops when it sends, has reached our write_seq). Bytes that take TCP
// after handed-over ones queue behind them, in order, so falling back is
// always safe. Anything unknown, or a peer not in tg_socks, means TCP.
SEC("sk_msg")
int tg_skmsg(struct sk_msg_md *msg)
{
	struct tuple me = {}, peer = {};
	if (msg->family == AF_INET) {
		map_v4(me.src_addr, msg->local_ip4);
		map_v4(me.dst_addr, msg->remote_ip4);
	} else {
		COPY_IP6(me.src_addr, msg->local_ip6);
		COPY_IP6(me.dst_addr, msg->remote_ip6);
	}
	me.src_port = (__u16)msg->local_port;
	me.dst_port = (__u16)bpf_ntohl(msg->remote_port);
	__builtin_memcpy(peer.src_addr, me.dst_addr, 16);
	__builtin_memcpy(peer.dst_addr, me.src_addr, 16);
	peer.src_port = me.dst_port;
	peer.dst_port = me.src_port;

	struct bpf_sock *sk = msg->sk;
	if (!sk)
		return SK_PASS;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return SK_PASS;
	struct hop *mine = bpf_map_lookup_elem(&tg_hops, &me);
	if (!mine) {
		struct hop h = {};
		bpf_map_update_elem(&tg_hops, &me, &h, BPF_NOEXIST);
		mine = bpf_map_lookup_elem(&tg_hops, &me);
		if (!mine)
			return SK_PASS;
	}
	struct hop *theirs = bpf_map_lookup_elem(&tg_hops, &peer);

	// Tell the peer how far we read and what we hold. Our own socket is
	// locked while this runs, so nothing else writes mine.
	mine->copied_seq = tp->copied_seq;
	mine->rmem = ((struct sock *)tp)->sk_backlog.rmem_alloc.counter;
	mine->peer_sent = theirs ? theirs->sent : 0;

	// In order: nothing of ours in TCP's hands, and the peer has read all
	// we ever sent by TCP. A peer that never wrote its record has not
	// said so. The check also pairs the two ends: a record under the
	// peer's tuple from any other connection has its read position in
	// another sequence space.
	__u32 write_seq = tp->write_seq;
	if (tp->snd_una != write_seq || !theirs || theirs->copied_seq != write_seq) {
		count(shortcut_tcp);
		return SK_PASS;
	}

	// Room: what the peer held when it last wrote, and what we handed it
	// since, in which its reading since then is not counted.
	if (mine->sent < theirs->peer_sent) { // a record lost to the LRU
		count(shortcut_tcp);
		return SK_PASS;
	}
	__u64 unread = (__u64)msg->size + theirs->rmem + (mine->sent - theirs->peer_sent);
	if (unread > SHORTCUT_UNREAD_MAX) {
		count(shortcut_tcp);
		return SK_PASS;
	}

	// A peer not in tg_socks (closed, or never put there) leaves the
	// redirect unset, and SK_PASS then sends by TCP.
	if (bpf_msg_redirect_hash(msg, &tg_socks, &peer, BPF_F_INGRESS) == SK_PASS) {
		mine->sent += msg->size;
		count(shortcut);
	} else {
		count(shortcut_tcp);
	}
	return SK_PASS;
}
