package routing

// A tiny unpadded base64url codec working on strings without allocating;
// encoding/base64 needs a []byte source, which costs a copy of every token on
// the hot verification path.

const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// dec maps one base64url character to its 6-bit value, or 0xff.
func dec(c byte) byte {
	switch {
	case c >= 'A' && c <= 'Z':
		return c - 'A'
	case c >= 'a' && c <= 'z':
		return c - 'a' + 26
	case c >= '0' && c <= '9':
		return c - '0' + 52
	case c == '-':
		return 62
	case c == '_':
		return 63
	}
	return 0xff
}

func encodedLen(n int) int { return (n*8 + 5) / 6 }

// encode writes the unpadded base64url form of src into dst, which must be
// encodedLen(len(src)) long.
func encode(dst, src []byte) {
	di, si := 0, 0
	for ; si+3 <= len(src); si += 3 {
		v := uint(src[si])<<16 | uint(src[si+1])<<8 | uint(src[si+2])
		dst[di] = alphabet[v>>18&0x3f]
		dst[di+1] = alphabet[v>>12&0x3f]
		dst[di+2] = alphabet[v>>6&0x3f]
		dst[di+3] = alphabet[v&0x3f]
		di += 4
	}
	switch len(src) - si {
	case 1:
		v := uint(src[si]) << 16
		dst[di] = alphabet[v>>18&0x3f]
		dst[di+1] = alphabet[v>>12&0x3f]
	case 2:
		v := uint(src[si])<<16 | uint(src[si+1])<<8
		dst[di] = alphabet[v>>18&0x3f]
		dst[di+1] = alphabet[v>>12&0x3f]
		dst[di+2] = alphabet[v>>6&0x3f]
	}
}

// decode fills dst from the unpadded base64url string src. It rejects
// characters outside the alphabet and non-zero trailing bits, so every
// artifact has exactly one spelling.
func decode(dst []byte, src string) bool {
	if len(src) != encodedLen(len(dst)) {
		return false
	}
	di, si := 0, 0
	for ; si+4 <= len(src); si += 4 {
		a, b, c, d := dec(src[si]), dec(src[si+1]), dec(src[si+2]), dec(src[si+3])
		if a|b|c|d == 0xff || (a|b|c|d)&0xc0 != 0 {
			return false
		}
		v := uint(a)<<18 | uint(b)<<12 | uint(c)<<6 | uint(d)
		dst[di], dst[di+1], dst[di+2] = byte(v>>16), byte(v>>8), byte(v)
		di += 3
	}
	switch len(src) - si {
	case 0:
		return true
	case 2:
		a, b := dec(src[si]), dec(src[si+1])
		if (a|b)&0xc0 != 0 || b&0x0f != 0 {
			return false
		}
		dst[di] = a<<2 | b>>4
		return true
	case 3:
		a, b, c := dec(src[si]), dec(src[si+1]), dec(src[si+2])
		if (a|b|c)&0xc0 != 0 || c&0x03 != 0 {
			return false
		}
		v := uint(a)<<10 | uint(b)<<4 | uint(c)>>2
		dst[di], dst[di+1] = byte(v>>8), byte(v)
		return true
	}
	return false
}
