package mask

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"slices"
	"strings"
	"testing"
)

func jwtOf(header, payload, sig string) string {
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload)) + "." + sig
}

func ecPEM(t testing.TB) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// classifySamples lists values with the classifiers that must match them;
// every other classifier must not.
func classifySamples(t testing.TB) []struct {
	v    string
	want []string
} {
	const sig = "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
	jwt := jwtOf(`{"alg":"HS256","typ":"JWT"}`, `{"sub":"1234567890","name":"John Doe","iat":1516239022}`, sig)
	alnum36 := strings.Repeat("aB3", 12)
	return []struct {
		v    string
		want []string
	}{
		// email
		{"alice@example.com", []string{Email}},
		{"first.last+tag@sub.example.co.uk", []string{Email}},
		{"  x_y-z@example.io\n", []string{Email}},
		{"o'brien@example.org", []string{Email}},
		{"jörg@bücher.example", []string{Email}},
		{"user@xn--bcher-kva.xn--p1ai", []string{Email}},
		{"alice@localhost", nil},
		{"@example.com", nil},
		{"alice@", nil},
		{"alice.example.com", nil},
		{"alice@@example.com", nil},
		{"a..b@example.com", nil},
		{".a@example.com", nil},
		{"alice@example.c", nil},
		{"alice@-example.com", nil},
		{"alice@example.com.", nil},
		{"alice @example.com", nil},
		{"mailto:alice@example.com", nil},
		{"Contact alice@example.com today", nil},
		{"alice@exa_mple.com", nil},
		{"alice@example.123", nil},

		// credit cards
		{"4111111111111111", []string{CreditCard}},
		{"4012888888881881", []string{CreditCard}},
		{"4222222222222", []string{CreditCard}},
		{"5555555555554444", []string{CreditCard}},
		{"5105105105105100", []string{CreditCard}},
		{"2223003122003222", []string{CreditCard}},
		{"378282246310005", []string{CreditCard}},
		{"371449635398431", []string{CreditCard}},
		{"6011111111111117", []string{CreditCard}},
		{"6011000990139424", []string{CreditCard}},
		{"3530111333300000", []string{CreditCard}},
		{"3566002020360505", []string{CreditCard}},
		{"30569309025904", []string{CreditCard}},
		{"38520000023237", []string{CreditCard}},
		{"6200000000000005", []string{CreditCard}},
		{"4111 1111 1111 1111", []string{CreditCard}},
		{"4111-1111-1111-1111", []string{CreditCard}},
		{"3782 822463 10005", []string{CreditCard}},
		{" 5555-5555-5555-4444 ", []string{CreditCard}},
		{"4111111111111112", nil},        // Luhn
		{"411111111111111", nil},         // Visa has no 15-digit numbers
		{"5555 5555 5555 4444 1", nil},   // 17 digits: not Mastercard
		{"20261204123045", nil},          // timestamp
		{"1733312345678", nil},           // epoch milliseconds
		{"1733312345678901", nil},        // epoch microseconds
		{"1234567812345670", nil},        // Luhn-valid, no issuer
		{"9999999999999995", nil},        // Luhn-valid, no issuer
		{"4111 1111-1111 1111", nil},     // mixed separators
		{"4111  1111 1111 1111", nil},    // double space
		{"41 11 11 11 11 11 11 11", nil}, // not card grouping
		{"-4111111111111111", nil},
		{"4111111111111111-", nil},
		{"ORD-4111111111111111", nil},
		{"4111111111111111 exp 12/27", nil},

		// IBAN
		{"DE89370400440532013000", []string{IBAN}},
		{"DE89 3704 0044 0532 0130 00", []string{IBAN}},
		{"GB82WEST12345698765432", []string{IBAN}},
		{"GB29 NWBK 6016 1331 9268 19", []string{IBAN}},
		{"gb29nwbk60161331926819", []string{IBAN}},
		{"FR1420041010050500013M02606", []string{IBAN}},
		{"NL91ABNA0417164300", []string{IBAN}},
		{"BE68539007547034", []string{IBAN}},
		{"CH9300762011623852957", []string{IBAN}},
		{"NO9386011117947", []string{IBAN}},
		{"DE89370400440532013001", nil},      // mod 97
		{"DE8937040044053201300", nil},       // length
		{"GB82WEST1234569876543", nil},       // length
		{"XX89370400440532013000", nil},      // country
		{"DE89 37040044 0532 0130 00", nil},  // grouping
		{"DE89-3704-0044-0532-0130-00", nil}, // dashes
		{"INV-2026-000123", nil},

		// US SSN
		{"123-45-6789", []string{USSSN}},
		{"078-05-1120", []string{USSSN}},
		{"123 45 6789", []string{USSSN}},
		{"899-99-9999", []string{USSSN}},
		{"000-12-3456", nil},
		{"666-12-3456", nil},
		{"900-12-3456", nil},
		{"999-12-3456", nil},
		{"123-00-4567", nil},
		{"123-45-0000", nil},
		{"123456789", nil},
		{"123-45-678", nil},
		{"123-45 6789", nil},
		{"123-456-789", nil},
		{"12-345-6789", nil},

		// phone
		{"+14155552671", []string{Phone}},
		{"+442079460958", []string{Phone}},
		{"+44 20 7946 0958", []string{Phone}},
		{"+44 (0)20 7946 0958", []string{Phone}},
		{"+1 (555) 123-4567", []string{Phone}},
		{"+1-555-123-4567", []string{Phone}},
		{"+33 6 12 34 56 78", []string{Phone}},
		{"+49 30 1234567", []string{Phone}},
		{"(555) 123-4567", []string{Phone}},
		{"(555)123-4567", []string{Phone}},
		{"555-123-4567", []string{Phone}},
		{"555.123.4567", []string{Phone}},
		{"555 123 4567", []string{Phone}},
		{"020 7946 0958", []string{Phone}},
		{"06 12 34 56 78", []string{Phone}},
		{"03-1234-5678", []string{Phone}},
		{"138 0013 8000", []string{Phone}},
		{"1-800-555-0199", []string{Phone}},
		{"2026-12-04", nil},                // date
		{"04.12.2026", nil},                // date
		{"2026-12-04 12:30:45", nil},       // timestamp
		{"1.2.3", nil},                     // version
		{"10.15.7", nil},                   // version
		{"5551234567", nil},                // plain integer
		{"20261204", nil},                  // plain integer
		{"+123", nil},                      // too short
		{"+0 123 456 7890", nil},           // no country code starts with 0
		{"12 345 678 901", nil},            // thousands
		{"1.234.567.890", nil},             // thousands
		{"978-3-16-148410-0", nil},         // ISBN-13
		{"0-306-40615-2", nil},             // ISBN-10
		{"2026-000123", nil},               // order number
		{"(555 123-4567", nil},             // unbalanced
		{"555--123-4567", nil},             // double separator
		{"555-123-4567-", nil},             // trailing separator
		{"555-123-4567 ext 12", nil},       // words
		{"+1 555 123 4567 8901 2345", nil}, // > 15 digits
		{"2-555-123-4567", nil},            // leading group other than 1

		// IPv4
		{"192.168.1.1", []string{IPv4}},
		{"0.0.0.0", []string{IPv4}},
		{"255.255.255.255", []string{IPv4}},
		{"10.100.200.250", []string{IPv4}},
		{"172.16.254.100", []string{IPv4}},
		{"1.2.3.4", []string{IPv4}},
		{"256.1.1.1", nil},
		{"1.2.3.4.5", nil},
		{"01.2.3.4", nil},
		{"1.2.3.", nil},
		{".1.2.3", nil},
		{"1.2.3.4/24", nil},
		{"1.2.3.4:5432", nil},
		{"a.b.c.d", nil},
		{"1..2.3", nil},

		// JWT
		{jwt, []string{JWT}},
		{"  " + jwt + "\n", []string{JWT}},
		{jwtOf(`{"alg":"none"}`, `{"sub":"x"}`, ""), []string{JWT}},
		{jwtOf(`{"typ":"JWT","alg":"RS256","kid":"k1"}`, `{"iss":"https://issuer.example"}`, sig), []string{JWT}},
		{jwtOf(`{"typ":"JWT"}`, `{"sub":"1"}`, sig), nil},      // no alg
		{jwtOf(`{"alg":""}`, `{"sub":"1"}`, sig), nil},         // empty alg
		{jwtOf(`["alg"]`, `{"sub":"1"}`, sig), nil},            // not an object
		{jwtOf(`{"alg":"HS256"}`, `not json`, sig), nil},       // payload
		{jwtOf(`{"alg":"HS256"}`, `{"a":1}`, sig) + ".x", nil}, // four segments
		{"a.b.c", nil},
		{"v1.2.3", nil},
		{"www.example.com", nil},
		{"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig+nature", nil},

		// cloud API keys
		{"AKIAIOSFODNN7EXAMPLE", []string{CloudAPIKey}},
		{"ASIAIOSFODNN7EXAMPLE", []string{CloudAPIKey}},
		{"AIza" + strings.Repeat("Sy-_9", 7), []string{CloudAPIKey}},
		{"ghp_" + alnum36, []string{CloudAPIKey}},
		{"gho_" + alnum36, []string{CloudAPIKey}},
		{"ghs_" + alnum36, []string{CloudAPIKey}},
		{"github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456", []string{CloudAPIKey}},
		{"xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", []string{CloudAPIKey}},
		{"xoxp-123456789012-1234567890123-1234567890123-0123456789abcdef0123456789abcdef", []string{CloudAPIKey}},
		{"sk_live_4eC39HqLyjWDarjtT1zdp7dc", []string{CloudAPIKey}},
		{"rk_live_4eC39HqLyjWDarjtT1zdp7dc", []string{CloudAPIKey}},
		{"sk-" + strings.Repeat("Ab1", 16), []string{CloudAPIKey}},
		{"sk-proj-" + strings.Repeat("Ab1_", 10), []string{CloudAPIKey}},
		{"AKIAIOSFODNN7EXAMPL", nil},
		{"AKIAIOSFODNN7EXAMPLE1", nil},
		{"AKIAiosfodnn7example", nil},
		{"AIza" + strings.Repeat("x", 34), nil},
		{"ghp_" + alnum36[:35], nil},
		{"ghx_" + alnum36, nil},
		{"github_pat_short", nil},
		{"xoxz-123456789012-1234567890123", nil},
		{"sk_test_4eC39HqLyjWDarjtT1zdp7dc", nil},
		{"sk_live_short", nil},
		{"sk-short", nil},
		{"sk-" + strings.Repeat("a", 31), nil},
		{"ASIAN-CUISINE-RESTAURANTS", nil},

		// PEM private keys
		{ecPEM(t), []string{PEMPrivateKey}},
		{"-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END RSA PRIVATE KEY-----", []string{PEMPrivateKey}},
		{"\n-----BEGIN OPENSSH PRIVATE KEY-----\r\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\r\n-----END OPENSSH PRIVATE KEY-----\r\n", []string{PEMPrivateKey}},
		{"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n", []string{PEMPrivateKey}},
		{"-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n", nil},
		{"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n", nil},
		{"-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJB\n-----END EC PRIVATE KEY-----\n", nil},
		{"-----BEGIN PRIVATE KEY-----\n\n-----END PRIVATE KEY-----\n", nil},
		{"-----BEGIN PRIVATE KEY-----\nMIIBOgIBAAJB\n", nil},
		{"key: -----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----", nil},

		// values that are nothing
		{"", nil},
		{"   ", nil},
		{"hello", nil},
		{"The quick brown fox", nil},
		{"123e4567-e89b-12d3-a456-426614174000", nil},
		{"0", nil},
		{"42", nil},
		{"3.14159", nil},
		{"-17.5", nil},
		{"2026-12-04T12:30:45Z", nil},
		{"2026-12-04 12:30:45.123456+00", nil},
		{"ORD-2026-000123", nil},
		{"1.2.3-beta.4", nil},
		{"v2.14.0", nil},
		{"true", nil},
		{"{\"a\":1}", nil},
		{"SELECT 1", nil},
		{"\\x4111111111111111", nil},
	}
}

func TestClassify(t *testing.T) {
	for _, s := range classifySamples(t) {
		for _, name := range Classifiers() {
			got := Classify(name, []byte(s.v))
			want := slices.Contains(s.want, name)
			if got != want {
				t.Errorf("Classify(%q, %q) = %v; want %v", name, s.v, got, want)
			}
		}
	}
}

func TestClassifiers(t *testing.T) {
	got := Classifiers()
	want := []string{CloudAPIKey, CreditCard, Email, IBAN, IPv4, JWT, PEMPrivateKey, Phone, USSSN}
	if !slices.Equal(got, want) {
		t.Errorf("Classifiers() = %q; want %q", got, want)
	}
	for _, n := range want {
		if !KnownClassifier(n) {
			t.Errorf("KnownClassifier(%q) = false", n)
		}
	}
	if KnownClassifier("passport") || Classify("passport", []byte("X1234567")) {
		t.Error("an unknown classifier is known or matches")
	}
}

// TestClassifyAllocs checks that the negative case, which is nearly every
// value the proxy sees, does not allocate.
func TestClassifyAllocs(t *testing.T) {
	values := [][]byte{
		[]byte("hello world"), []byte("2026-12-04 12:30:45"), []byte("123e4567-e89b-12d3-a456-426614174000"),
		[]byte("20261204123045"), []byte("1.2.3"), []byte("alice@localhost"), []byte("ORD-2026-000123"),
		[]byte("4111111111111111"), []byte("alice@example.com"), []byte("+44 20 7946 0958"),
		[]byte("DE89370400440532013000"), []byte("AKIAIOSFODNN7EXAMPLE"), []byte("a.b.c"),
	}
	names := Classifiers()
	allocs := testing.AllocsPerRun(100, func() {
		for _, v := range values {
			for _, n := range names {
				Classify(n, v)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("Classify allocates %v times per run; want 0", allocs)
	}
}

// FuzzClassify checks that classifiers do not panic and ignore the white
// space around a value.
func FuzzClassify(f *testing.F) {
	for _, s := range classifySamples(f) {
		f.Add([]byte(s.v))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		padded := append(append([]byte(" \t"), v...), "\r\n"...)
		for _, name := range Classifiers() {
			if Classify(name, v) != Classify(name, padded) {
				t.Errorf("Classify(%q) differs for %q and %q", name, v, padded)
			}
		}
	})
}
