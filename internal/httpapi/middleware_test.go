package httpapi

import "testing"

// Budgets and limits by address count an IPv6 client by its /64: every
// address of one block is one client; IPv4 goes by the whole address.
func TestAddressKey(t *testing.T) {
	for ip, want := range map[string]string{
		"192.0.2.7":               "ip:192.0.2.7",
		"::ffff:192.0.2.7":        "ip:192.0.2.7",
		"2001:db8:1:2::1":         "ip:2001:db8:1:2::/64",
		"2001:db8:1:2:ffff:1:2:3": "ip:2001:db8:1:2::/64",
		"2001:db8:1:3::1":         "ip:2001:db8:1:3::/64",
		"fe80::1%eth0":            "ip:fe80::/64",
		"::1":                     "ip:::/64",
		"not an address":          "ip:not an address",
	} {
		if got := addressKey(ip); got != want {
			t.Errorf("addressKey(%q) = %q, want %q", ip, got, want)
		}
	}
}
