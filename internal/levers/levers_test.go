package levers

import (
	"context"
	"strings"
	"testing"
)

func TestForReplicasTakesEachReplicasHostAndPort(t *testing.T) {
	r, err := ForReplicas("postgres://quest_lever:s3cret@leader:5432/quest?sslmode=disable", map[string]string{
		"replica1": "postgres://quest:pw@replica1:5432/quest?sslmode=disable&application_name=replica1",
		"replica2": "postgres://quest:pw@127.0.0.1:54322/quest?application_name=replica2",
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"replica1": "postgres://quest_lever:s3cret@replica1:5432/quest?sslmode=disable",
		"replica2": "postgres://quest_lever:s3cret@127.0.0.1:54322/quest?sslmode=disable",
	} {
		if got, err := r.URL(name); err != nil || got != want {
			t.Errorf("URL(%s) = %q, %v; want %q", name, got, err, want)
		}
	}
	// Without a host of its own, too.
	r, err = ForReplicas("postgres://quest_lever:s3cret@/quest", map[string]string{"replica1": "postgres://quest@replica1:5432/quest"})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := r.URL("replica1"); got != "postgres://quest_lever:s3cret@replica1:5432/quest" {
		t.Errorf("URL(replica1) = %q", got)
	}
	if err := r.Pause(context.Background(), "replica9"); err == nil || !strings.Contains(err.Error(), `no lever for "replica9"; the replicas are replica1`) {
		t.Errorf("Pause(replica9) = %v", err)
	}
}

func TestForReplicasRefusesWhatIsNoLeverURL(t *testing.T) {
	replicas := map[string]string{"replica1": "postgres://quest@replica1:5432/quest"}
	for raw, want := range map[string]string{
		"mysql://quest_lever:pw@db/quest":  "not a postgres:// URL",
		"postgres://db/quest":              "names no role",
		"postgres://quest_lever:pw@:x/q%z": "not a postgres:// URL",
	} {
		_, err := ForReplicas(raw, replicas)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ForReplicas(%q) = %v, want %q", raw, err, want)
		}
		if err != nil && strings.Contains(err.Error(), ":pw@") {
			t.Errorf("ForReplicas(%q) shows the password: %v", raw, err)
		}
	}
	if err := SetDelay(context.Background(), "replica1", "postgres://x@127.0.0.1:1/q", -1); err == nil {
		t.Error("a negative delay was accepted")
	}
}
