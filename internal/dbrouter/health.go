package dbrouter

import "time"

// Status says whether a node gets reads, and if not, why.
type Status uint8

// The statuses.
const (
	Usable     Status = iota // gets reads
	Down                     // unreachable: its probe failed, or a connection to it could not be made
	NotReplica               // a "replica" that is not in recovery
	Lagging                  // beyond the lag limit, or of unknown lag
	Diverged                 // a standby on an older timeline, past the point where the primary's forked from it
	Superseded               // a primary on a timeline older than one already promoted: split brain
	Unverified               // a standby on an older timeline, not yet known to be on the primary's history
	WentBack                 // a replica that restarted behind what it had replayed before
)

func (e Status) String() string {
	return [...]string{"usable", "down", "not a replica", "lagging", "off the primary's history",
		"superseded primary (split brain)", "not yet known to be on the primary's history",
		"went back in time: restarted behind what it had replayed"}[e]
}

// Health is what the tracker last saw of one node.
type Health struct {
	// Name is how pages show the node: "primary" for whichever node is the
	// primary now (or, while there is none, was the last one), else Member.
	Name string
	// Member is the node's own identity (Node.Name), whatever its role.
	Member     string
	Up         bool
	InRecovery bool
	Position   uint64 // flush position on the primary, replay position on a replica
	Receive    uint64 // a replica's receive position
	Paused     bool   // a replica's replay is paused (or its pause requested)
	PauseState string // pg_get_wal_replay_pause_state(), replicas only
	ApplyDelay time.Duration
	// Timeline: a primary's current timeline, from its current WAL
	// segment's name; a standby's, the timeline its walreceiver receives
	// (or last received, since this server started), or without one its
	// last restartpoint's — then TimelineGuessed is set: the standby may
	// well have followed a newer timeline since.
	Timeline        uint32
	TimelineGuessed bool
	LagBytes        int64 // reference position − replay position
	Lag             time.Duration
	// LagUnknown: the replica is behind the first position the tracker saw
	// on the primary, so when the primary passed its position is not
	// known; Lag is then only a lower bound, and the replica gets no reads
	// until it replays past that first position.
	LagUnknown bool
	// Floor: the replica restarted (a new postmaster) replaying less than
	// it had replayed before, on the same timeline — a crash that lost
	// replayed WAL, or a data directory restored from an older copy. It
	// gets no reads, in any strategy, until it replays past Floor again;
	// 0 when it has.
	Floor     uint64
	Status    Status // whether the node gets reads, and if not why
	CheckedAt time.Time
	Err       string
	// Patroni is what Patroni's REST API last said of the member, when the
	// router discovers its nodes there (Config.PatroniURLs). Routing
	// follows the node's own answers; this is shown beside them.
	Patroni Patroni
	// PatroniLeader: the node's own Patroni answered GET /primary with 200
	// on the last poll — it holds the leader lock. With discovery, only
	// such a node takes writes. PatroniLeaderErr says why not, when not.
	PatroniLeader    bool
	PatroniLeaderErr string

	started time.Time // pg_postmaster_start_time(): a change means a restart
	// connsAt is the node's pool connection count (Node.conns) when the
	// poll that read Position began.
	connsAt uint64
}

// Patroni is one member as Patroni's REST API (GET /cluster) reports it.
// The zero value: the router does not ask Patroni, or Patroni did not list
// the member.
type Patroni struct {
	Listed   bool
	Role     string // "leader", "replica", "sync_standby", "standby_leader"
	State    string // "running", "streaming", "starting", "stopped", "crashed", …
	Timeline uint32
	LagBytes int64 // a replica's lag as Patroni reports it; -1 when unknown

	api string // the member's own REST API (scheme://host:port), "" when unknown
}

// snapshot is the routing table the poller publishes; the request path
// only ever reads one, through an atomic pointer.
//
// Routing works on slots: slot 0 is the primary — the node that answered
// the last poll as not in recovery, or while none did, the last one that
// had — and slots 1… are the other nodes in configuration (or discovery)
// order. members maps a slot to its node, so a promotion only reorders
// slots, and a node discovery adds or drops only changes n.
type snapshot struct {
	n           int              // nodes in this snapshot; slots n… are empty
	nodes       [maxNodes]Health // by slot; 0 is the primary
	members     [maxNodes]*Node  // by slot
	primaryDown bool
	splitBrain  string           // what the pages say of a split brain (choosePrimary); "" without one
	replication []ReplicationRow // the primary's pg_stat_replication
	replErr     string
	patroniURL  string // discovery: the Patroni API that last answered
	patroniErr  string // discovery: why none did, or what it left out
}

func (s *snapshot) usable(i int) bool { return s.nodes[i].Status == Usable }

// slotOf returns node n's slot, or -1 when n is no longer a member.
func (s *snapshot) slotOf(n *Node) int {
	for slot, m := range s.members[:s.n] {
		if m == n {
			return slot
		}
	}
	return -1
}

// Health returns what the tracker last saw of every node, the primary
// first, then the others in configuration order.
func (r *Router) Health() []Health {
	snap := r.snap.Load()
	return append([]Health(nil), snap.nodes[:snap.n]...)
}
