package assertion_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/keyrack/keyrack/appliance/assertion"
)

// The first seven are the specification's SHA-512 test vectors; all were
// also checked against glibc/libxcrypt crypt(3) (the rounds=10 one as
// rounds=1000, the clamped value, since libxcrypt refuses rather than
// clamps).
func TestSHA512CryptVectors(t *testing.T) {
	for _, v := range []struct {
		pw, salt string
		rounds   int
		want     string
	}{
		{"Hello world!", "saltstring", 0, "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"},
		{"Hello world!", "saltstringsaltstring", 10000, "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."},
		{"This is just a test", "toolongsaltstring", 5000, "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0"},
		{"a very much longer text to encrypt.  This one even stretches over morethan one line.", "anotherlongsaltstring", 1400,
			"$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1"},
		{"we have a short salt string but not a short password", "short", 77777,
			"$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUeOxFmtlcGZelFl5CxtgfiAc0"},
		{"a short string", "asaltof16chars..", 123456,
			"$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4oPwcelCjmw2kSYu.Ec6ycULevoBK25fs2xXgMNrCzIMVcgEJAstJeonj1"},
		{"the minimum number is still observed", "roundstoolow", 10,
			"$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX."},
		// Edges of the password-length handling: empty, one and more
		// than one 64-byte block, and non-ASCII bytes.
		{"", "emptypw", 0, "$6$emptypw$TWmzQ8/uLn1BFSZ5Lkfum8lAba5vixF9Nl3Aiof.Praatq9nh0kkPuTdoVrIL6du0L6LAoadbPq.q.D7keveg/"},
		{strings.Repeat("a", 64), "sixtyfour", 0, "$6$sixtyfour$K/xKztW5JzkerYEn6XcFyosnglIp4vvQU0kCO1pkUZjdJ6baRuXxS4eNgf31Qps7EDGmAhxFmBXMHpnA453WF."},
		{strings.Repeat("a", 65), "sixtyfive", 0, "$6$sixtyfive$YgFIJsEaym9pjS6MSRs8VuR/f8ynrUzbLYR2KG4ZqEAxjKgbsAtq0xQ5EvLyBDQJtU6YFNbg7g/6ARc8dkw7Q1"},
		{strings.Repeat("x", 200), "longpw", 5000, "$6$rounds=5000$longpw$Twg.5yo9tdE0/GKj1C9dbKPzN/7PpOhfimMWAki/FOXdeFw9B0G9qAY8tiTfvNA1f1ZfL5d8c4Zo.NC9CM2eZ0"},
		{"p\u00e4ssw\u00f6rd", "u./9AZaz", 0, "$6$u./9AZaz$lpa0u.gd/MZodmu5HccRLW9PEPIXeqXnNvf9S6KD26HUd7F.fvAhkhgkEFv3UEIIPKXvHKJuCcaVKc2KEB7L1/"},
	} {
		got, err := assertion.SHA512Crypt(v.pw, v.salt, v.rounds)
		if err != nil || got != v.want {
			t.Errorf("SHA512Crypt(%q, %q, %d)\n got %s %v\nwant %s", v.pw, v.salt, v.rounds, got, err, v.want)
		}
	}
}

func TestSHA512CryptSalt(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 20; i++ {
		h, err := assertion.SHA512Crypt("pw", "", 0)
		if err != nil {
			t.Fatal(err)
		}
		parts := strings.Split(h, "$")
		if len(parts) != 4 || parts[1] != "6" || len(parts[2]) != 16 || len(parts[3]) != 86 {
			t.Fatalf("hash %q is not $6$<16 char salt>$<86 char hash>", h)
		}
		if seen[parts[2]] {
			t.Fatalf("salt %q repeated", parts[2])
		}
		seen[parts[2]] = true
		if again, _ := assertion.SHA512Crypt("pw", parts[2], 0); again != h {
			t.Fatalf("rehashing with the salt gives %s, not %s", again, h)
		}
	}
	for _, bad := range []string{"with$dollar", "spa ce", "colon:", "\u00e9"} {
		if _, err := assertion.SHA512Crypt("pw", bad, 0); !errors.Is(err, assertion.ErrInvalidHeaders) {
			t.Errorf("salt %q: %v", bad, err)
		}
	}
	h, err := assertion.SHA512Crypt("pw", "", 6000)
	if err != nil || !strings.HasPrefix(h, "$6$rounds=6000$") {
		t.Errorf("explicit rounds: %s %v", h, err)
	}
}
