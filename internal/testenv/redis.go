package testenv

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisDB is the database tests use when neither REDIS_URL nor
// REDIS_DB names one: not db 0, which a developer's own hub may use.
const DefaultRedisDB = 9

// RedisOptions returns client options for the machine's Redis, after
// checking that it accepts connections. The server comes from REDIS_URL
// (redis://host:port/db, its db included) or else REDIS_ADDR (default
// 127.0.0.1:6379), and the database from the URL's path or else REDIS_DB
// (default DefaultRedisDB). Tests still keep their keys under a prefix of
// their own and delete only those: never FLUSHDB, the database is shared by
// concurrent test processes.
func RedisOptions(t testing.TB) *redis.Options {
	t.Helper()
	if raw := getenv("REDIS_URL", ""); raw != "" {
		o, err := redis.ParseURL(raw)
		if err != nil {
			t.Fatalf("REDIS_URL: %v", err)
		}
		require(t, "Redis", o.Addr)
		return o
	}
	return &redis.Options{Addr: RedisAddr(t), DB: RedisDB(t)}
}

// RedisDB returns the database number tests use when REDIS_URL is unset:
// REDIS_DB, default DefaultRedisDB.
func RedisDB(t testing.TB) int {
	t.Helper()
	raw := getenv("REDIS_DB", strconv.Itoa(DefaultRedisDB))
	db, err := strconv.Atoi(raw)
	if err != nil || db < 0 {
		t.Fatalf("REDIS_DB=%q: %v", raw, fmt.Errorf("want a database number >= 0"))
	}
	return db
}

// RedisClient returns a client on RedisOptions, closed when the test ends.
func RedisClient(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(RedisOptions(t))
	t.Cleanup(func() { _ = c.Close() })
	return c
}
