package httpapi

import (
	"regexp"
	"testing"
)

// The path parameters' checks accept exactly what these patterns, their
// specification, accept.
var (
	idPattern      = regexp.MustCompile(`^[1-9][0-9]{0,18}$`)
	integerPattern = regexp.MustCompile(`^[0-9]{1,18}$`)
	decimalPattern = regexp.MustCompile(`^[0-9]{1,15}(\.[0-9]{1,15})?$`)
)

func FuzzPathChecksMatchTheirPatterns(f *testing.F) {
	for _, s := range []string{"", "0", "1", "01", "9223372036854775807", "99999999999999999999",
		"1234567890123456789", "12345678901234567890", "6.35", "6.", ".35", "6.3.5", "-1", "+1", "1e3",
		"0x1f", "NaN", "Infinity", " 1", "1 ", "١", "123456789012345.123456789012345",
		"1234567890123456.1", "1.1234567890123456", "٣.5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := idDigits(s), idPattern.MatchString(s); got != want {
			t.Errorf("id %q: %v, the pattern says %v", s, got, want)
		}
		if got, want := digits(s, 18), integerPattern.MatchString(s); got != want {
			t.Errorf("integer %q: %v, the pattern says %v", s, got, want)
		}
		if got, want := decimalDigits(s), decimalPattern.MatchString(s); got != want {
			t.Errorf("decimal %q: %v, the pattern says %v", s, got, want)
		}
	})
}
