package redirect

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DummyLink is the link the agent creates for its link-local proxy address
// on kernels with the dummy link type.
const DummyLink = "tollgate0"

// AddLocalAddress puts addr/32 on the host so that clients in other network
// namespaces (pods) reach the proxy through their default route. It uses a
// dummy link where the kernel has one, else lo. It is idempotent; the
// returned function removes what was added.
func AddLocalAddress(addr netip.Addr) (remove func() error, err error) {
	if !addr.Is4() {
		return nil, fmt.Errorf("redirect: local address %s: want IPv4", addr)
	}
	link, created, err := proxyLink()
	if err != nil {
		return nil, err
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)}}
	if err := netlink.AddrAdd(link, a); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("redirect: add %s to %s: %w", addr, link.Attrs().Name, err)
	}
	return func() error {
		if created {
			return netlink.LinkDel(link)
		}
		if err := netlink.AddrDel(link, a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("redirect: remove %s: %w", addr, err)
		}
		return nil
	}, nil
}

func proxyLink() (netlink.Link, bool, error) {
	if l, err := netlink.LinkByName(DummyLink); err == nil {
		return l, false, nil
	}
	d := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: DummyLink}}
	if err := netlink.LinkAdd(d); err == nil {
		if err := netlink.LinkSetUp(d); err != nil {
			netlink.LinkDel(d)
			return nil, false, fmt.Errorf("redirect: set %s up: %w", DummyLink, err)
		}
		return d, true, nil
	}
	// No dummy link type on this kernel: use the loopback device.
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return nil, false, fmt.Errorf("redirect: find lo: %w", err)
	}
	return lo, false, nil
}
