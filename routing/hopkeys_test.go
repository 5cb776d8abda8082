package routing

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"sync"
)

var (
	testHopKeysOnce sync.Once
	testHopPriv     map[string]*ecdsa.PrivateKey
	testHopPub      map[string]*ecdsa.PublicKey
)

// keyed gives cfg its region's test hop key and every test region's
// public key.
func keyed(cfg RouterConfig) RouterConfig {
	testHopKeysOnce.Do(func() {
		testHopPriv, testHopPub = map[string]*ecdsa.PrivateKey{}, map[string]*ecdsa.PublicKey{}
		for _, r := range []string{"eu", "us", "ap"} {
			k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				panic(err)
			}
			testHopPriv[r], testHopPub[r] = k, &k.PublicKey
		}
	})
	cfg.HopKey, cfg.HopKeys = testHopPriv[cfg.Local], testHopPub
	return cfg
}
