package cluster

import (
	"strings"
	"testing"
)

// haFixture is a three-member Patroni cluster on paper: nothing runs.
func haFixture(sync bool) *Cluster {
	c := &Cluster{dir: "/state", st: state{
		BinDir: "/usr/lib/postgresql/15/bin", DataRoot: "/root/x", SocketDir: "/root/x/run",
		Passwords: passwords{Super: "s", Repl: "r"},
		HA:        &haState{Scope: "quest-x", Sync: sync, Etcd: etcdState{ClientPort: 54340}},
	}}
	for i, name := range []string{"node1", "node2", "node3"} {
		c.st.Nodes = append(c.st.Nodes, Node{Name: name, Port: 54320 + i, DataDir: "/root/x/" + name})
		c.st.HA.Members = append(c.st.HA.Members, haMember{Name: name, RESTPort: 54330 + i})
	}
	return c
}

// TestPatroniConfigCarriesTheLauncherSettings checks that a Patroni member
// gets what the plain launcher gives its servers, Patroni's timing and the
// modes the issue asks for.
func TestPatroniConfigCarriesTheLauncherSettings(t *testing.T) {
	c := haFixture(true)
	c.st.HA.Members[1].DelayMS = 1500
	conf, err := c.patroniConfig("node2")
	if err != nil {
		t.Fatal(err)
	}
	dcs := conf["bootstrap"].(map[string]any)["dcs"].(map[string]any)
	params := dcs["postgresql"].(map[string]any)["parameters"].(map[string]string)
	for _, line := range LeaderSettings() {
		name, value, _ := strings.Cut(line, "=")
		name, value = strings.TrimSpace(name), strings.Trim(strings.TrimSpace(value), "'")
		if params[name] != value {
			t.Errorf("parameter %s = %q, want %q", name, params[name], value)
		}
	}
	if dcs["ttl"] != 10 || dcs["loop_wait"] != 1 || dcs["retry_timeout"] != 4 || dcs["synchronous_mode"] != true {
		t.Errorf("dcs = %v", dcs)
	}
	pg := conf["postgresql"].(map[string]any)
	if pg["listen"] != "127.0.0.1:54321" || pg["data_dir"] != "/root/x/node2" {
		t.Errorf("postgresql = %v", pg)
	}
	if got := pg["recovery_conf"].(map[string]string)["recovery_min_apply_delay"]; got != "1500ms" {
		t.Errorf("recovery_min_apply_delay = %q, want 1500ms", got)
	}
	if conf["name"] != "node2" || conf["restapi"].(map[string]any)["listen"] != "127.0.0.1:54331" {
		t.Errorf("name %v, restapi %v", conf["name"], conf["restapi"])
	}
}

func TestPickCandidate(t *testing.T) {
	c := haFixture(false)
	c.st.HA.Members[1].DelayMS = 1000 // node2 holds replay back
	lead := Member{Name: "node1", Role: RoleLeader, State: "running", Lag: -1}
	tests := []struct {
		name    string
		members []Member
		want    string
	}{
		{"least behind", []Member{lead, {Name: "node2", Role: RoleReplica, State: "running", Lag: 0}, {Name: "node3", Role: RoleReplica, State: "running", Lag: 10}}, "node3"},
		{"delayed only", []Member{lead, {Name: "node2", Role: RoleReplica, State: "running", Lag: 0}}, "node2"},
		{"sync standby", []Member{lead, {Name: "node2", Role: RoleSyncStandby, State: "running", Lag: 99}, {Name: "node3", Role: RoleReplica, State: "running", Lag: 0}}, "node2"},
		{"not running", []Member{lead, {Name: "node3", Role: RoleReplica, State: "down", Lag: 0}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.pickCandidate(tt.members); got != tt.want {
				t.Errorf("pickCandidate = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPatroniDCSByVersion(t *testing.T) {
	for _, tt := range []struct {
		out  string
		less bool
	}{
		{"patroni 3.0.2\n", true}, {"patroni 2.1.6", true}, {"patroni 3.0.3", false},
		{"patroni 3.3.0", false}, {"patroni 4.0.4", false},
	} {
		v, ok := parseVersion(tt.out)
		if !ok || versionLess(v, [3]int{3, 0, 3}) != tt.less {
			t.Errorf("%q: %v %v, want less=%v", tt.out, v, ok, tt.less)
		}
	}
	c := haFixture(false)
	conf, _ := c.patroniConfig("node1")
	if _, ok := conf["etcd3"]; !ok {
		t.Errorf("a cluster without dcs should keep etcd3: %v", conf)
	}
	c.st.HA.DCS = "etcd"
	conf, _ = c.patroniConfig("node1")
	if _, ok := conf["etcd"]; !ok || conf["etcd3"] != nil {
		t.Errorf("DCS etcd: %v", conf)
	}
}
