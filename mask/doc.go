// Package mask finds and masks sensitive values in PostgreSQL query results,
// keeping every masked value valid for its column's type.
//
// A policy decision's mask list (DESIGN.md, "Policy") names columns or
// classifiers and a method for each:
//
//	"mask": [{"table": "public.customers", "column": "email", "method": "email"},
//	         {"classifier": "credit_card", "method": "last4"}]
//
// The proxy compiles each rule's method once (NewMethod or RuleMethod), builds
// an Action per result column from the RowDescription, and calls
// Masker.Apply on every DataRow value, or on the fields of every COPY row
// (SplitCopyRow, AppendCopyRow). An Evidence per statement collects what the
// audit record says about masking, without the originals.
//
// # Classifiers
//
// Classify reports whether a whole value (surrounding white space aside)
// looks like:
//
//	email            local@domain.tld: dot-atom local part, 2+ labels, alphabetic or punycode TLD
//	credit_card      13-19 digits, bare or in groups (first 4, then 3-6) split by single spaces
//	                 or dashes of one kind; Luhn; a Visa, Mastercard, Amex, Discover, JCB,
//	                 Diners or UnionPay prefix at a length that scheme issues
//	iban             country code of the IBAN registry at its length, check digits, BBAN;
//	                 bare or in groups of 4 split by single spaces; mod-97 = 1; any case
//	us_ssn           AAA-GG-SSSS or AAA GG SSSS; not area 000, 666, 9xx, group 00 or serial 0000.
//	                 Nine bare digits are not an SSN (too many identifiers look so)
//	phone            "+" and 8-15 digits, bare (E.164) or grouped by spaces, dashes, dots,
//	                 one (area) group; or a national number of 10-11 digits in 2+ groups
//	                 of 2-5 ("(555) 123-4567", "020 7946 0958", "1-800-555-0199").
//	                 Not dates, versions, IPv4 addresses, thousands groups or bare integers
//	ipv4             dotted quad, octets 0-255 without leading zeros
//	jwt              three base64url segments (empty signature allowed); the header is a
//	                 JSON object with a non-empty "alg", the payload a JSON object
//	cloud_api_key    AWS AKIA/ASIA + 16 [A-Z0-9]; GCP AIza + 35; GitHub ghp_/gho_/ghu_/ghs_/ghr_
//	                 + 36, github_pat_ + 22 or more; Slack xox[baprs]-; Stripe sk_live_/rk_live_
//	                 + 16 or more; OpenAI-style sk- + 32 or more
//	pem_private_key  -----BEGIN ...PRIVATE KEY----- with a body and the matching END line
//
// Classify does not allocate, except for values shaped like a JWT.
//
// # Methods
//
//	redact   text (default "****")               the text
//	partial  keep_first, keep_last (default 1),  the first and last characters (runes) kept, the
//	         mask_char (default "*")             others replaced; never more than half the
//	                                             characters (rounded down) are kept: the larger
//	                                             count shrinks first, keep_last on a tie
//	email    -                                   "****@domain" (from the last "@"); "****" without "@"
//	last4    -                                   the last 4 letters or digits kept (at most half
//	                                             of them), the others "*", separators kept:
//	                                             4111-1111-1111-1111 -> ****-****-****-1111
//	hash     length (1-64, default 16)           lowercase hex of HMAC-SHA256(host key, value),
//	                                             its first length digits
//	null     -                                   NULL
//
// # Types
//
// Mask turns each method's result into a valid value of the column's type in
// the column's format (text or binary), or NULL when there is none. Binary
// encodings are PostgreSQL's (checked with pgtype and against a server in
// the tests). Per type:
//
//	text, unknown,    the method's text. varchar(n) truncates to n characters; bpchar(n) masks
//	varchar, bpchar,  the value without its padding, then pads or truncates to n; name truncates
//	name (TextLike)   to 63 bytes. A column whose OID Mask does not know (citext, a domain) is
//	                  text only when Column.TextLike says so.
//	bytea             hash: the HMAC's first (length+1)/2 bytes; the others: the text method
//	                  applied to the bytes. Text format is \x hex (escape format is read too).
//	json, jsonb       a JSON string holding the text method's result, applied to the content
//	                  of a value that is a JSON string, else to the JSON text. Binary jsonb is
//	                  version 1 and the text.
//	int2, int4, int8  hash: a non-negative integer of the type from the HMAC; last4: the
//	                  absolute value mod 10000; redact: the redact text when it is an integer
//	                  of the type ("0", "-1"), else NULL; partial, email: NULL.
//	numeric(p,s)      integers that fit p-s digits (18 at most), printed with scale s. hash:
//	                  from the HMAC; last4: the integer part's last 4 digits (NaN, Infinity:
//	                  NULL); redact: the text when such an integer, else NULL; partial, email:
//	                  NULL. A negative scale: NULL for every method.
//	float4, float8    hash: an integral value below 2^24 (float4) or 2^53 (float8) from the
//	                  HMAC; last4: |trunc(v)| mod 10000 (NaN, Infinity: NULL); redact: the
//	                  text when a float, else NULL; partial, email: NULL.
//	uuid              hash: a version 4 UUID made of the HMAC; redact: the text when a UUID
//	                  (so "00000000-0000-0000-0000-000000000000" gives the nil UUID), else
//	                  NULL; the others: NULL.
//	inet, cidr        family and prefix length kept. hash: 10.x.y.z or fd00::/8 from the HMAC;
//	                  redact: the text when a valid value, else 0.0.0.0 or :: ("0.0.0.0/24");
//	                  cidr clears host bits; the others: NULL.
//	date, time,       NULL: no masked value of these types is both valid and hides the
//	timestamp(tz),    original.
//	interval, bool,
//	any other OID
//
// The null method and a NULL value give NULL for every type.
//
// # Hash tokens
//
// A hash token depends only on the host key and the value's text, so it is
// stable across processes and restarts and equal values can still be joined
// or counted. The text hashed is the value as PostgreSQL prints it, whichever
// the wire format: the decimal of an integer, the numeric's text, a float as
// PostgreSQL 12+ prints it, the canonical UUID and inet text, a bpchar
// without padding, the content of a JSON string, and (for bytea) the bytes.
// The same value in a text and an int8 column hashes alike (then printed as
// hex or as an integer).
//
// # Evidence
//
// An Evidence keeps, per statement, the labels masked and their counts, an
// HMAC of the originals under a key derived from the host key (not the hash
// method's key, so the digest is no lookup table for tokens) and a SHA-256 of
// the masked outputs. Originals are never kept.
//
// # COPY
//
// COPY ... TO STDOUT in text or CSV format arrives one row per CopyData
// message; SplitCopyRow decodes a row into fields, AppendCopyRow encodes
// fields exactly as PostgreSQL does, so an unmasked row is written back
// byte for byte. The fields are text-format values: mask them with
// Column{TypeOID: the column's type} when the proxy knows it (the catalog, a
// Describe of the query), else with pgtype.TextOID, which keeps the masks
// readable where an unknown type would give NULL. Binary COPY is not
// handled: a proxy that must mask one should refuse it.
//
// # Assumptions
//
// Text is UTF-8 (client_encoding UTF8): partial and last4 count runes.
// Float text is PostgreSQL 12+ output with extra_float_digits >= 1 (the
// default) for hash tokens to match across formats.
//
// A Masker and a Method are safe for concurrent use; an Evidence is not.
package mask
