package postgres_test

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meridian-id/meridian/region/store"
)

// TestGroupCommitFailedCommit: a batch whose COMMIT fails (a deferred
// constraint trigger refuses tokens of client "poison" at commit time)
// fails every caller in it, and no caller that got nil lacks its token:
// nothing is acknowledged that was not committed.
func TestGroupCommitFailedCommit(t *testing.T) {
	dsn := schema(t)
	s := open(t, dsn)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `
		CREATE FUNCTION refuse_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'commit refused'; END $$;
		CREATE CONSTRAINT TRIGGER refuse_poison AFTER INSERT ON access_tokens DEFERRABLE INITIALLY DEFERRED
			FOR EACH ROW WHEN (NEW.client_id = 'poison') EXECUTE FUNCTION refuse_commit();`); err != nil {
		t.Fatal(err)
	}
	const callers = 300
	now := time.Now().UTC().Truncate(time.Microsecond)
	tokens := make([]store.AccessToken, callers)
	for i := range tokens {
		client := "client-ok"
		if i%10 == 0 {
			client = "poison"
		}
		tokens[i] = store.AccessToken{Hash: store.Digest(rand.Text()), ClientID: client, Subject: client,
			Format: "opaque", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	}
	errs := make([]error, callers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = s.CreateAccessToken(ctx, tokens[i])
		}()
	}
	close(start)
	wg.Wait()
	failedWithPoison := 0
	for i, err := range errs {
		_, gerr := s.GetAccessToken(ctx, tokens[i].Hash)
		switch {
		case i%10 == 0 && err == nil:
			t.Errorf("token %d of the refused client acknowledged", i)
		case err == nil && gerr != nil:
			t.Errorf("token %d acknowledged but not stored: %v", i, gerr)
		case err != nil && !errors.Is(gerr, store.ErrNotFound):
			t.Errorf("token %d failed (%v) but is stored (%v)", i, err, gerr)
		case err != nil && i%10 != 0:
			failedWithPoison++ // shared a batch with a refused token
		}
	}
	t.Logf("%d callers failed with the batch of a refused token", failedWithPoison)
}
