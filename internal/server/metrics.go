package server

import (
	"net/http"
	"net/netip"
	"strconv"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"quest/internal/dbrouter"
)

// metrics holds Quest's Prometheus registry. Label sets are bounded: route
// patterns (not paths), status codes, node names, and the router's fixed
// strategies, reasons and intents.
type metrics struct {
	registry *prometheus.Registry
	requests *prometheus.CounterVec
	http     http.Handler // the Prometheus text format of registry
}

func newMetrics(r *dbrouter.Router) *metrics {
	m := &metrics{registry: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "quest_http_requests_total", Help: "HTTP requests by route pattern and status.",
	}, []string{"route", "status"})
	m.registry.MustRegister(m.requests,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&routerCollector{r: r})
	m.http = promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
	return m
}

// count is middleware that counts requests by chi route pattern.
func (m *metrics) count(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		next.ServeHTTP(ww, r)
		route := "unmatched"
		if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
			route = rc.RoutePattern()
		}
		status := ww.Status()
		if status == 0 {
			status = http.StatusOK
		}
		m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	})
}

// handleMetrics serves /metrics on the main listener, which may face a
// network: the metrics describe the process (memory, file descriptors,
// goroutines) and the cluster, so they go only to requests from this
// machine — Prometheus scraping it locally — and not to those a proxy on
// this machine forwards, which look local too. With a listener of their
// own (Config.MetricsElsewhere) they are not served here at all.
func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	switch {
	case s.metricsElsewhere:
		http.NotFound(w, r)
	case !fromThisMachine(r):
		http.Error(w, "/metrics answers requests from this machine only; serve it with --metrics-addr to scrape it from elsewhere", http.StatusForbidden)
	default:
		s.metrics.http.ServeHTTP(w, r)
	}
}

// fromThisMachine reports whether r came from a loopback address, not
// forwarded by a proxy.
func fromThisMachine(r *http.Request) bool {
	for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Real-Ip"} {
		if r.Header.Get(h) != "" {
			return false
		}
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// Metrics is the Prometheus endpoint alone, for a listener of its own
// (quest serve --metrics-addr): GET and HEAD /metrics, to whoever reaches
// that listener, and 404 for every other path. Its own requests are not
// counted in quest_http_requests_total.
func (s *Server) Metrics() http.Handler {
	r := chi.NewRouter()
	r.Use(secureHeaders, middleware.GetHead)
	r.Method(http.MethodGet, "/metrics", s.metrics.http)
	return r
}

// routerCollector reads the router's counters and the tracker's view at
// scrape time.
type routerCollector struct{ r *dbrouter.Router }

var (
	descReads      = prometheus.NewDesc("quest_reads_total", "Reads by the node that served them, strategy, reason and intent.", []string{"node", "strategy", "reason", "intent"}, nil)
	descLagBytes   = prometheus.NewDesc("quest_replica_lag_bytes", "Replica replay lag in bytes, as the tracker last saw it.", []string{"node"}, nil)
	descLagSeconds = prometheus.NewDesc("quest_replica_lag_seconds", "Replica replay lag in seconds, as the tracker last saw it.", []string{"node"}, nil)
	descUp         = prometheus.NewDesc("quest_node_up", "1 when the tracker reached the node at its last poll.", []string{"node"}, nil)
	descUsable     = prometheus.NewDesc("quest_node_usable", "1 when the node gets reads (not down, not lagging past the limit).", []string{"node"}, nil)
	descCausal     = prometheus.NewDesc("quest_causal_reads_total", "Causal reads by outcome: fresh, waited, primary (fell back), stale.", []string{"outcome"}, nil)
	descShort      = prometheus.NewDesc("quest_causal_checks_failed_total", "Causal in-band checks that fell short (result discarded, next candidate tried).", nil, nil)
	descWait       = prometheus.NewDesc("quest_causal_wait_seconds_total", "Time causal reads spent waiting in-band for a replica.", nil, nil)
	descExtraTrips = prometheus.NewDesc("quest_causal_extra_round_trips_total", "Round trips spent on discarded attempts and post-commit positions.", nil, nil)
	descRoundTrips = prometheus.NewDesc("quest_round_trips_total", "Round trips from the application's pools, by node.", []string{"node"}, nil)
	descPoolInUse  = prometheus.NewDesc("quest_pool_acquired_conns", "Connections in use, by node.", []string{"node"}, nil)
	descPoolIdle   = prometheus.NewDesc("quest_pool_idle_conns", "Idle connections, by node.", []string{"node"}, nil)
	descPoolTotal  = prometheus.NewDesc("quest_pool_total_conns", "Open connections, by node.", []string{"node"}, nil)
	descPoolWaits  = prometheus.NewDesc("quest_pool_empty_acquire_total", "Acquires that had to wait for a connection, by node.", []string{"node"}, nil)
	descStrategy   = prometheus.NewDesc("quest_strategy", "1 for the strategy in force.", []string{"strategy"}, nil)
	routerDescs    = []*prometheus.Desc{descReads, descLagBytes, descLagSeconds, descUp, descUsable, descCausal, descShort, descWait, descExtraTrips, descRoundTrips, descPoolInUse, descPoolIdle, descPoolTotal, descPoolWaits, descStrategy}
)

func (c *routerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range routerDescs {
		ch <- d
	}
}

func (c *routerCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.r
	for _, d := range r.DecisionCounts() {
		ch <- prometheus.MustNewConstMetric(descReads, prometheus.CounterValue, float64(d.Count),
			d.Node, d.Strategy.String(), d.Reason.String(), d.Intent.String())
	}
	for i, h := range r.Health() {
		if i > 0 {
			ch <- prometheus.MustNewConstMetric(descLagBytes, prometheus.GaugeValue, float64(h.LagBytes), h.Name)
			ch <- prometheus.MustNewConstMetric(descLagSeconds, prometheus.GaugeValue, h.Lag.Seconds(), h.Name)
		}
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, b2f(h.Up), h.Name)
		ch <- prometheus.MustNewConstMetric(descUsable, prometheus.GaugeValue, b2f(h.Status == dbrouter.Usable), h.Name)
	}
	cs := r.CausalStats()
	for outcome, n := range map[string]int64{"fresh": cs.Fresh, "waited": cs.Waited, "primary": cs.OnPrimary, "stale": cs.Stale} {
		ch <- prometheus.MustNewConstMetric(descCausal, prometheus.CounterValue, float64(n), outcome)
	}
	ch <- prometheus.MustNewConstMetric(descShort, prometheus.CounterValue, float64(cs.Short))
	ch <- prometheus.MustNewConstMetric(descWait, prometheus.CounterValue, cs.WaitTotal.Seconds())
	ch <- prometheus.MustNewConstMetric(descExtraTrips, prometheus.CounterValue, float64(cs.ExtraTrips))
	for node, n := range r.RoundTrips() {
		ch <- prometheus.MustNewConstMetric(descRoundTrips, prometheus.CounterValue, float64(n), node)
	}
	for _, n := range r.Nodes() {
		st, label := n.Stat(), r.Label(n)
		ch <- prometheus.MustNewConstMetric(descPoolInUse, prometheus.GaugeValue, float64(st.AcquiredConns()), label)
		ch <- prometheus.MustNewConstMetric(descPoolIdle, prometheus.GaugeValue, float64(st.IdleConns()), label)
		ch <- prometheus.MustNewConstMetric(descPoolTotal, prometheus.GaugeValue, float64(st.TotalConns()), label)
		ch <- prometheus.MustNewConstMetric(descPoolWaits, prometheus.CounterValue, float64(st.EmptyAcquireCount()), label)
	}
	cur := r.Strategy()
	for _, s := range dbrouter.Strategies() {
		ch <- prometheus.MustNewConstMetric(descStrategy, prometheus.GaugeValue, b2f(s == cur), s.String())
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
