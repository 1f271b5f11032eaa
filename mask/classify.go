package mask

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"slices"
)

// Classifier names, as a policy's mask rule "classifier" field uses them.
const (
	Email         = "email"
	CreditCard    = "credit_card"
	IBAN          = "iban"
	USSSN         = "us_ssn"
	Phone         = "phone"
	IPv4          = "ipv4"
	JWT           = "jwt"
	CloudAPIKey   = "cloud_api_key"
	PEMPrivateKey = "pem_private_key"
)

// classifierLabels maps each classifier name to the evidence label of its
// matches, built once so that Apply adds no string per value.
var classifierLabels = map[string]string{
	Email:         classifierLabelPrefix + Email,
	CreditCard:    classifierLabelPrefix + CreditCard,
	IBAN:          classifierLabelPrefix + IBAN,
	USSSN:         classifierLabelPrefix + USSSN,
	Phone:         classifierLabelPrefix + Phone,
	IPv4:          classifierLabelPrefix + IPv4,
	JWT:           classifierLabelPrefix + JWT,
	CloudAPIKey:   classifierLabelPrefix + CloudAPIKey,
	PEMPrivateKey: classifierLabelPrefix + PEMPrivateKey,
}

var classifierNames = func() []string {
	names := make([]string, 0, len(classifierLabels))
	for n := range classifierLabels {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}()

// Classifiers returns the names of all classifiers, sorted.
func Classifiers() []string { return slices.Clone(classifierNames) }

// KnownClassifier reports whether name is a classifier's name.
func KnownClassifier(name string) bool {
	_, ok := classifierLabels[name]
	return ok
}

// Classify reports whether the whole of v, trimmed of surrounding white
// space, looks like a value of the classifier name. An unknown name matches
// nothing. Classify does not allocate unless v is shaped like a JWT.
func Classify(name string, v []byte) bool {
	v = bytes.TrimSpace(v)
	switch name {
	case Email:
		return isEmail(v)
	case CreditCard:
		return isCreditCard(v)
	case IBAN:
		return isIBAN(v)
	case USSSN:
		return isUSSSN(v)
	case Phone:
		return isPhone(v)
	case IPv4:
		return isIPv4(v)
	case JWT:
		return isJWT(v)
	case CloudAPIKey:
		return isCloudAPIKey(v)
	case PEMPrivateKey:
		return isPEMPrivateKey(v)
	}
	return false
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
func isUpper(c byte) bool { return 'A' <= c && c <= 'Z' }
func isLower(c byte) bool { return 'a' <= c && c <= 'z' }
func isAlnum(c byte) bool { return isDigit(c) || isUpper(c) || isLower(c) }

// isEmail accepts local@domain: a dot-atom local part of at most 64 bytes
// (no quoted forms), a domain of at least two labels of letters, digits and
// inner hyphens whose last label is alphabetic (2+ letters) or punycode.
// Bytes >= 0x80 count as letters (internationalized addresses).
func isEmail(v []byte) bool {
	if len(v) < 6 || len(v) > 254 {
		return false
	}
	at := bytes.IndexByte(v, '@')
	if at < 1 || at > 64 {
		return false
	}
	local, domain := v[:at], v[at+1:]
	if local[0] == '.' || local[len(local)-1] == '.' {
		return false
	}
	prev := byte(0)
	for _, c := range local {
		switch {
		case c == '.':
			if prev == '.' {
				return false
			}
		case isAlnum(c) || c >= 0x80:
		case bytes.IndexByte([]byte("!#$%&'*+/=?^_`{|}~-"), c) >= 0:
		default:
			return false
		}
		prev = c
	}
	return isDomain(domain)
}

func isDomain(d []byte) bool {
	if len(d) < 4 || len(d) > 253 {
		return false
	}
	labels := 0
	for len(d) > 0 {
		i := bytes.IndexByte(d, '.')
		label := d
		if i >= 0 {
			label, d = d[:i], d[i+1:]
			if len(d) == 0 {
				return false // trailing dot
			}
		} else {
			d = nil
		}
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !isAlnum(c) && c != '-' && c < 0x80 {
				return false
			}
		}
		labels++
		if d == nil { // top-level label
			if labels < 2 {
				return false
			}
			if bytes.HasPrefix(label, []byte("xn--")) {
				return len(label) > 4
			}
			if len(label) < 2 {
				return false
			}
			for _, c := range label {
				if !isUpper(c) && !isLower(c) && c < 0x80 {
					return false
				}
			}
		}
	}
	return true
}

// isCreditCard accepts 13 to 19 digits, bare or grouped by single spaces or
// single dashes (one kind per value; the first group has 4 digits, the
// others 3 to 6), that pass the Luhn check and start with the issuer prefix
// of a major scheme at a length that scheme issues.
func isCreditCard(v []byte) bool {
	if len(v) < 13 || len(v) > 19+6 {
		return false
	}
	var d [19]byte
	n, group, groups := 0, 0, 0
	sep := byte(0)
	for _, c := range v {
		if isDigit(c) {
			if n == len(d) {
				return false
			}
			d[n] = c - '0'
			n++
			group++
			continue
		}
		if c != ' ' && c != '-' || sep != 0 && c != sep || group == 0 {
			return false
		}
		if groups == 0 && group != 4 || groups > 0 && (group < 3 || group > 6) {
			return false
		}
		sep = c
		groups++
		group = 0
	}
	if group == 0 || sep != 0 && group > 6 || n < 13 {
		return false
	}
	return luhn(d[:n]) && cardPrefix(d[:n])
}

func luhn(d []byte) bool {
	sum := 0
	for i := len(d) - 1; i >= 0; i-- {
		x := int(d[i])
		if (len(d)-1-i)%2 == 1 {
			x *= 2
			if x > 9 {
				x -= 9
			}
		}
		sum += x
	}
	return sum%10 == 0
}

// cardPrefix reports whether d starts with a known issuer identification
// number at a length that issuer uses.
func cardPrefix(d []byte) bool {
	p := func(k int) int {
		x := 0
		for _, c := range d[:k] {
			x = x*10 + int(c)
		}
		return x
	}
	n := len(d)
	p2, p3, p4 := p(2), p(3), p(4)
	switch {
	case d[0] == 4: // Visa
		return n == 13 || n == 16 || n == 19
	case 51 <= p2 && p2 <= 55, 2221 <= p4 && p4 <= 2720: // Mastercard
		return n == 16
	case p2 == 34 || p2 == 37: // American Express
		return n == 15
	case p4 == 6011, p2 == 65, 644 <= p3 && p3 <= 649: // Discover
		return n >= 16
	case 3528 <= p4 && p4 <= 3589: // JCB
		return n >= 16
	case p2 == 36 || p2 == 38, 300 <= p3 && p3 <= 305: // Diners Club
		return n >= 14
	case p2 == 62: // UnionPay
		return n >= 16
	}
	return false
}

// ibanLengths holds the IBAN length of each country in the IBAN registry,
// indexed by the country code's letters.
var ibanLengths = func() (t [26 * 26]uint8) {
	for cc, n := range map[string]uint8{
		"AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
		"BH": 22, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22,
		"DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27,
		"GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28,
		"IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
		"LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24,
		"ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24,
		"PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31,
		"SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
		"TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
	} {
		t[int(cc[0]-'A')*26+int(cc[1]-'A')] = n
	}
	return t
}()

// isIBAN accepts a country code with its registry length, two check digits
// and the BBAN, in either case, bare or in groups of four separated by
// single spaces (the last group 1 to 4), whose ISO 7064 mod-97 is 1.
func isIBAN(v []byte) bool {
	if len(v) < 15 || len(v) > 34+8 {
		return false
	}
	var b [34]byte
	n, group := 0, 0
	spaced := false
	for _, c := range v {
		if c == ' ' {
			if group != 4 {
				return false
			}
			spaced, group = true, 0
			continue
		}
		if isLower(c) {
			c -= 'a' - 'A'
		}
		if n == len(b) || !isUpper(c) && !isDigit(c) {
			return false
		}
		b[n] = c
		n++
		group++
	}
	if group == 0 || spaced && group > 4 {
		return false
	}
	if !isUpper(b[0]) || !isUpper(b[1]) || !isDigit(b[2]) || !isDigit(b[3]) {
		return false
	}
	if int(ibanLengths[int(b[0]-'A')*26+int(b[1]-'A')]) != n {
		return false
	}
	rem := 0
	for i := range n {
		c := b[(i+4)%n]
		if isDigit(c) {
			rem = (rem*10 + int(c-'0')) % 97
		} else {
			rem = (rem*100 + int(c-'A') + 10) % 97
		}
	}
	return rem == 1
}

// isUSSSN accepts AAA-GG-SSSS, or the same with single spaces, where the
// area is not 000, 666 or 900-999, the group not 00 and the serial not 0000.
// Nine bare digits are not taken for an SSN: too many identifiers look so.
func isUSSSN(v []byte) bool {
	if len(v) != 11 || v[3] != v[6] || v[3] != '-' && v[3] != ' ' {
		return false
	}
	for i, c := range v {
		if i != 3 && i != 6 && !isDigit(c) {
			return false
		}
	}
	area := int(v[0]-'0')*100 + int(v[1]-'0')*10 + int(v[2]-'0')
	return area != 0 && area != 666 && area < 900 &&
		!(v[4] == '0' && v[5] == '0') &&
		!(v[7] == '0' && v[8] == '0' && v[9] == '0' && v[10] == '0')
}

// isPhone accepts two shapes.
//
// International: '+', a country code not starting with 0, then digits
// grouped by single spaces, dashes or dots, optionally one parenthesized
// group ("+44 (0)20 7946 0958"); 8 to 15 digits in all. E.164 is the bare
// form ("+14155552671").
//
// National: 10 or 11 digits in at least two groups of 2 to 5 digits, with an
// optional leading "1" group, optionally the first group parenthesized
// ("(555) 123-4567", "555.123.4567", "020 7946 0958", "1-800-555-0199").
// Groups of thousands ("12 345 678 901"), dotted quads and plain integers
// are not phone numbers.
func isPhone(v []byte) bool {
	if len(v) < 9 || len(v) > 24 {
		return false
	}
	plus := v[0] == '+'
	if plus {
		v = v[1:]
		if len(v) == 0 || !isDigit(v[0]) || v[0] == '0' {
			return false
		}
	}
	var groups [16]uint8
	ng, digits := 0, 0
	paren, dots, others := false, false, false
	for i := 0; i < len(v); {
		c := v[i]
		switch {
		case isDigit(c) || c == '(':
			if ng == len(groups) {
				return false
			}
			inParen := c == '('
			if inParen {
				if paren {
					return false
				}
				paren = true
				i++
			}
			j := i
			for j < len(v) && isDigit(v[j]) {
				j++
			}
			if j == i {
				return false
			}
			groups[ng] = uint8(min(j-i, 255))
			digits += j - i
			ng++
			i = j
			if inParen {
				if i == len(v) || v[i] != ')' {
					return false
				}
				i++
				if i < len(v) && (v[i] == ' ' || v[i] == '-') {
					i++
					others = true
				}
				if i == len(v) || !isDigit(v[i]) {
					return false
				}
			} else if i < len(v) {
				s := v[i]
				switch s {
				case '.':
					dots = true
				case ' ', '-':
					others = true
				case '(':
					continue
				default:
					return false
				}
				i++
				if i == len(v) || v[i] != '(' && !isDigit(v[i]) {
					return false
				}
			}
		default:
			return false
		}
	}
	if dots && (others || paren) {
		return false
	}
	if plus {
		return digits >= 8 && digits <= 15
	}
	if ng < 2 || digits < 10 || digits > 11 {
		return false
	}
	g := groups[:ng]
	if g[0] == 1 { // NANP with its country code: 1-555-123-4567
		return v[0] == '1' && ng == 4 && g[1] == 3 && g[2] == 3 && g[3] == 4
	}
	thousands := g[0] <= 3 && !paren
	for _, n := range g {
		if n < 2 || n > 5 {
			return false
		}
	}
	for _, n := range g[1:] {
		thousands = thousands && n == 3
	}
	return !thousands && !isIPv4(v)
}

// isIPv4 accepts a dotted quad of decimal octets 0-255 without leading zeros.
func isIPv4(v []byte) bool {
	if len(v) < 7 || len(v) > 15 {
		return false
	}
	octets := 0
	for len(v) > 0 {
		n, x := 0, 0
		for n < len(v) && isDigit(v[n]) {
			x = x*10 + int(v[n]-'0')
			n++
		}
		if n == 0 || n > 3 || x > 255 || n > 1 && v[0] == '0' {
			return false
		}
		octets++
		v = v[n:]
		if len(v) > 0 {
			if v[0] != '.' || octets == 4 {
				return false
			}
			v = v[1:]
			if len(v) == 0 {
				return false
			}
		}
	}
	return octets == 4
}

// isJWT accepts a compact JWS: three base64url segments (unpadded; the
// signature may be empty for "alg":"none") whose header decodes to a JSON
// object with a non-empty "alg" and whose payload decodes to a JSON object.
func isJWT(v []byte) bool {
	if len(v) < 16 {
		return false
	}
	h, rest, ok := bytes.Cut(v, []byte{'.'})
	if !ok {
		return false
	}
	p, s, ok := bytes.Cut(rest, []byte{'.'})
	if !ok || len(h) < 8 || len(p) < 2 || !isBase64URL(h) || !isBase64URL(p) || !isBase64URL(s) {
		return false
	}
	// Header and payload must open JSON objects: check their first bytes
	// before decoding the header in full, which allocates.
	if !opensObject(h) || !opensObject(p) {
		return false
	}
	buf := make([]byte, base64.RawURLEncoding.DecodedLen(len(h)))
	n, err := base64.RawURLEncoding.Decode(buf, h)
	if err != nil {
		return false
	}
	hdr := bytes.TrimSpace(buf[:n])
	var fields struct {
		Alg *string `json:"alg"`
	}
	return json.Unmarshal(hdr, &fields) == nil && fields.Alg != nil && *fields.Alg != ""
}

// opensObject reports whether the base64url segment v decodes to text that
// starts with '{', after at most two spaces.
func opensObject(v []byte) bool {
	var head [3]byte
	n, err := base64.RawURLEncoding.Decode(head[:], v[:min(len(v), 4)])
	if err != nil {
		return false
	}
	t := bytes.TrimLeft(head[:n], " \t\r\n")
	return len(t) > 0 && t[0] == '{'
}

func isBase64URL(v []byte) bool {
	if len(v)%4 == 1 {
		return false
	}
	for _, c := range v {
		if !isAlnum(c) && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// isCloudAPIKey accepts the credential formats of AWS (access key ids),
// Google Cloud (API keys), GitHub (tokens), Slack (tokens), Stripe (live
// secret and restricted keys) and OpenAI-style "sk-" keys.
func isCloudAPIKey(v []byte) bool {
	if len(v) < 20 || len(v) > 512 {
		return false
	}
	has := func(p string) bool { return bytes.HasPrefix(v, []byte(p)) }
	tail := func(p string) []byte { return v[len(p):] }
	all := func(b []byte, extra string) bool {
		for _, c := range b {
			if !isAlnum(c) && bytes.IndexByte([]byte(extra), c) < 0 {
				return false
			}
		}
		return true
	}
	switch v[0] {
	case 'A':
		if len(v) == 20 && (has("AKIA") || has("ASIA")) {
			for _, c := range v[4:] {
				if !isUpper(c) && !isDigit(c) {
					return false
				}
			}
			return true
		}
		return len(v) == 39 && has("AIza") && all(v[4:], "-_")
	case 'g':
		if len(v) == 40 && (has("ghp_") || has("gho_") || has("ghu_") || has("ghs_") || has("ghr_")) {
			return all(v[4:], "")
		}
		return has("github_pat_") && len(tail("github_pat_")) >= 22 && all(tail("github_pat_"), "_")
	case 'x':
		return len(v) >= 15 && has("xox") && bytes.IndexByte([]byte("baprs"), v[3]) >= 0 && v[4] == '-' &&
			all(v[5:], "-")
	case 's', 'r':
		if has("sk_live_") || has("rk_live_") {
			return len(v) >= 8+16 && all(v[8:], "")
		}
		return has("sk-") && len(v) >= 3+32 && all(v[3:], "-_")
	}
	return false
}

// isPEMPrivateKey accepts a PEM block whose label ends in "PRIVATE KEY"
// ("RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "OPENSSH PRIVATE KEY", ...),
// closed by the matching END line around a non-empty body.
func isPEMPrivateKey(v []byte) bool {
	const begin, end, dashes = "-----BEGIN ", "-----END ", "-----"
	if !bytes.HasPrefix(v, []byte(begin)) {
		return false
	}
	eol := bytes.IndexByte(v, '\n')
	if eol < 0 {
		return false
	}
	line := bytes.TrimRight(v[:eol], "\r \t")
	if !bytes.HasSuffix(line, []byte("PRIVATE KEY"+dashes)) {
		return false
	}
	label := line[len(begin) : len(line)-len(dashes)]
	rest := v[eol+1:]
	i := bytes.LastIndex(rest, []byte(end))
	if i < 0 {
		return false
	}
	body, closing := rest[:i], rest[i+len(end):]
	return len(bytes.TrimSpace(body)) > 0 && bytes.HasPrefix(closing, label) &&
		string(closing[len(label):]) == dashes
}
