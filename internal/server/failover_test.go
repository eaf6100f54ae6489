package server_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"quest/internal/cluster"
	"quest/internal/dbrouter"
	"quest/internal/store"
	"quest/internal/testcluster"
)

const lostWords = "may have been lost in a failover"

// TestALostAddIsToldAfterTheNextForm: a user's add is acknowledged by the
// leader, which crashes before its only replica received it; the replica
// is promoted. The user's next action is another add — a form, whose own
// reads settle the session's position on the new primary — and the page
// the browser is sent to afterwards must still say that a change may have
// been lost (the lab's HA table found it said nothing: the words went out
// on the form's redirect, which no browser shows). The page after that is
// plain again.
func TestALostAddIsToldAfterTheNextForm(t *testing.T) {
	testcluster.Long(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir, err := testcluster.NewDir("lost-add")
	if err != nil {
		t.Fatal(err)
	}
	c, err := cluster.Up(ctx, cluster.Config{Dir: dir, Port: 0, Replicas: 1, BinDir: os.Getenv("QUEST_PG_BIN")})
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Down(context.Background(), true) })
	if err := store.MigrateURL(ctx, c.PrimaryURL(), "up", io.Discard); err != nil {
		t.Fatal(err)
	}
	ta := startAppOn(t, c, dbrouter.Causal, nil)
	a := ta.app
	user := ta.client(t)
	user.signup()
	add := func(item string) {
		t.Helper()
		if r := user.post("/wishlist", url.Values{"item_id": {item}}); r.status != http.StatusSeeOther {
			t.Fatalf("add item %s: %d\n%s", item, r.status, r.body)
		}
	}
	add("1")
	if err := c.WaitCaughtUp(ctx, 15*time.Second); err != nil {
		t.Fatal(err)
	}

	// The replica stops receiving; the leader acknowledges an add.
	replica := c.Nodes()[1]
	super, err := pgx.Connect(ctx, c.SuperURL(replica))
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(context.Background())
	for _, q := range []string{"ALTER SYSTEM SET primary_conninfo = ''", "SELECT pg_reload_conf()"} {
		if _, err := super.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	testcluster.Eventually(t, 5*time.Second, "the replica's walreceiver stops", func() bool {
		var n int
		return super.QueryRow(ctx, "SELECT count(*) FROM pg_stat_wal_receiver").Scan(&n) == nil && n == 0
	})
	add("2")

	// The leader crashes; the replica, which never got the add, is promoted.
	if err := c.Stop(ctx, cluster.LeaderName, true); err != nil {
		t.Fatal(err)
	}
	if _, err := super.Exec(ctx, "SELECT pg_promote()"); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 10*time.Second, "writes work on the promoted replica", func() bool {
		return a.Router.Writable() && a.Router.Health()[0].Member == replica.Name
	})
	promoted, err := pgx.Connect(ctx, c.URL(replica))
	if err != nil {
		t.Fatal(err)
	}
	defer promoted.Close(context.Background())
	var held int
	if err := promoted.QueryRow(ctx, "SELECT count(*) FROM wishlist_entries WHERE item_id = 2").Scan(&held); err != nil {
		t.Fatal(err)
	}
	if held != 0 {
		t.Fatalf("the new primary holds the second add: the scenario did not happen")
	}

	// The user's next action is a form; the page after it tells.
	add("3")
	page := user.get("/wishlist")
	if page.status != http.StatusOK || !strings.Contains(page.body, lostWords) || page.header.Get("X-Quest-Lost") != "1" {
		t.Fatalf("the page after the next form: %d, X-Quest-Lost %q, words %v; want the loss told\n%s",
			page.status, page.header.Get("X-Quest-Lost"), strings.Contains(page.body, lostWords), page.body)
	}
	if again := user.get("/wishlist"); strings.Contains(again.body, lostWords) || again.header.Get("X-Quest-Lost") != "" {
		t.Fatal("the page after that still says a change was lost")
	}
}
