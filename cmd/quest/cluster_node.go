package main

import (
	"context"
	"fmt"
	"strings"

	"quest/internal/cluster"
)

// nodePasswords name the environment variables init-node takes the roles'
// passwords from (never flags: a command line is visible to every user).
var nodePasswords = []string{"POSTGRES_PASSWORD", "QUEST_APP_PASSWORD", "QUEST_REPL_PASSWORD", "QUEST_LEVER_PASSWORD"}

// clusterInitNode is quest cluster init-node: one node of a cluster that
// something else runs — a container of the docker-compose stack — set up
// in place by internal/cluster with what `quest cluster up` gives its own
// nodes. The container then runs postgres itself.
func (e environment) clusterInitNode(ctx context.Context, a clusterAction, args []string) error {
	fs := e.newFlags("cluster "+a.name, "cluster "+a.line()+"\n\n"+a.what+
		"\n\nPasswords come from the environment: "+strings.Join(nodePasswords, ", ")+
		"\n(a follower needs only QUEST_REPL_PASSWORD).")
	cfg := cluster.NodeConfig{Log: e.stdout}
	fs.StringVar(&cfg.Role, "role", "", "leader or follower")
	fs.StringVar(&cfg.Name, "name", "", "a follower's name (replica1): its slot and application_name")
	fs.StringVar(&cfg.Leader, "leader", "leader:5432", "a follower's leader, host:port")
	fs.IntVar(&cfg.Replicas, "replicas", 2, "a leader's followers: it makes the slots replica1…replicaN for them")
	fs.StringVar(&cfg.DataDir, "data", firstNonEmpty(e.getenv("PGDATA"), "/var/lib/postgresql/data"), "the data directory (default $PGDATA); a node already there is left as it is")
	fs.IntVar(&cfg.Port, "port", 5432, "the port the node serves on")
	fs.StringVar(&cfg.Listen, "listen", "*", "listen_addresses")
	fs.StringVar(&cfg.SocketDir, "socket-dir", "/var/run/postgresql", "unix_socket_directories")
	fs.StringVar(&cfg.User, "user", "", "OS user owning the data when run as root (default postgres)")
	fs.StringVar(&cfg.BinDir, "pg-bin", e.getenv("QUEST_PG_BIN"), "PostgreSQL bin directory (default: searched)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("cluster init-node takes no arguments, got %s; see quest cluster init-node --help", strings.Join(pos, " "))
	}
	if cfg.Role != "leader" && cfg.Role != "follower" {
		return usagef("cluster init-node needs --role leader or --role follower")
	}
	if cfg.Role == "follower" && cfg.Name == "" {
		return usagef("cluster init-node --role follower needs --name, e.g. --name replica1")
	}
	cfg.SuperPassword, cfg.AppPassword = e.getenv("POSTGRES_PASSWORD"), e.getenv("QUEST_APP_PASSWORD")
	cfg.ReplPassword, cfg.LeverPassword = e.getenv("QUEST_REPL_PASSWORD"), e.getenv("QUEST_LEVER_PASSWORD")
	var missing []string
	for _, name := range nodePasswords {
		if e.getenv(name) == "" && (cfg.Role == "leader" || name == "QUEST_REPL_PASSWORD") {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return usagef("cluster init-node --role %s: set %s in the environment", cfg.Role, strings.Join(missing, ", "))
	}
	if err := cluster.InitNode(ctx, cfg); err != nil {
		return fmt.Errorf("%s: %w", cfg.Role, err)
	}
	return nil
}
