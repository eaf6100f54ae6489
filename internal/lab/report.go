package lab

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

func checkLabel(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + " s"
}

// Markdown writes the table.
func (r *Result) Markdown(w io.Writer) {
	checks := make([]string, len(r.Checks))
	for i, d := range r.Checks {
		checks[i] = checkLabel(d)
	}
	fmt.Fprintf(w, "| strategy | lag | requests | read-your-writes failures (%s) | monotonic failures | stale reads | reads on primary | causal waits (avg) | primary streaks | p50 | p99 | req/s |\n",
		strings.Join(checks, " / "))
	fmt.Fprintln(w, "| --- | --- | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
	for _, c := range r.Cells {
		ryw := make([]string, len(c.RYWFailures))
		for i := range c.RYWFailures {
			ryw[i] = fmt.Sprintf("%d/%d", c.RYWFailures[i], c.RYWChecks[i])
		}
		waits := "–"
		if c.Waited > 0 {
			waits = fmt.Sprintf("%d (%s)", c.Waited, ms(c.WaitTotal/time.Duration(c.Waited), 1))
		}
		mono := fmt.Sprintf("%d/%d", c.MonoFailures, c.MonoChecks)
		if c.ClosedLoop {
			ryw = []string{fmt.Sprintf("%d/%d", c.RYWFailures[0], c.RYWChecks[0])}
		}
		share, streaks := fmt.Sprintf("%.0f %%", 100*c.primaryShare()), strconv.Itoa(c.Streaks)
		if c.Proxy {
			share, streaks = "not known (proxy)", "–"
		}
		fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %d | %s | %s | %s | %s | %s | %.0f |\n",
			c.Strategy, c.Setting, c.Requests, strings.Join(ryw, " / "), mono, c.StaleReads,
			share, waits, streaks, ms(c.P50, 1), ms(c.P99, 1), c.RPS)
	}
	fmt.Fprintf(w, "\n%d simulated users (half add to their wishlist and re-read it, half re-read a forum thread one writer appends to), %s think time, %s per cell; closed-loop cells without think time or lag. Run took %s on %s.\n",
		r.Users, r.Think, r.CellTime, r.Elapsed.Round(time.Second), r.Machine)
	for _, line := range r.Comments {
		fmt.Fprintln(w, line)
	}
}

// writeCSV writes one row per cell.
func (r *Result) writeCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	header := []string{"strategy", "lag", "closed_loop", "requests", "errors"}
	for _, d := range r.Checks {
		header = append(header, "ryw_checks_"+checkLabel(d), "ryw_failures_"+checkLabel(d))
	}
	header = append(header, "mono_checks", "mono_failures", "reads", "primary_reads", "stale_reads",
		"causal_waits", "causal_wait_ms_total", "primary_streaks", "p50_ms", "p99_ms", "req_per_s")
	cw.Write(header)
	for _, c := range r.Cells {
		row := []string{c.Strategy, c.Setting, strconv.FormatBool(c.ClosedLoop), strconv.Itoa(c.Requests), strconv.Itoa(c.Errors)}
		for i := range r.Checks {
			row = append(row, strconv.Itoa(c.RYWChecks[i]), strconv.Itoa(c.RYWFailures[i]))
		}
		row = append(row, strconv.Itoa(c.MonoChecks), strconv.Itoa(c.MonoFailures), strconv.Itoa(c.Reads),
			strconv.Itoa(c.PrimaryReads), strconv.Itoa(c.StaleReads), strconv.Itoa(c.Waited),
			fmt.Sprintf("%.1f", millis(c.WaitTotal)), strconv.Itoa(c.Streaks),
			fmt.Sprintf("%.2f", millis(c.P50)), fmt.Sprintf("%.2f", millis(c.P99)),
			fmt.Sprintf("%.1f", c.RPS))
		cw.Write(row)
	}
	cw.Flush()
	return cw.Error()
}

// drawSVG draws two panels: the share of failed consistency checks per
// strategy and lag setting, and the closed-loop requests per second.
func (r *Result) drawSVG(w io.Writer) {
	var rows []string
	settings := []string{}
	fail := map[[2]string]float64{}
	rps := map[string]float64{}
	for _, c := range r.Cells {
		if !slices.Contains(rows, c.Strategy) {
			rows = append(rows, c.Strategy)
		}
		if c.ClosedLoop {
			rps[c.Strategy] = c.RPS
			continue
		}
		if !slices.Contains(settings, c.Setting) {
			settings = append(settings, c.Setting)
		}
		checks, fails := c.MonoChecks, c.MonoFailures
		for i := range c.RYWChecks {
			checks += c.RYWChecks[i]
			fails += c.RYWFailures[i]
		}
		if checks > 0 {
			fail[[2]string{c.Strategy, c.Setting}] = 100 * float64(fails) / float64(checks)
		}
	}
	colors := []string{"#94a3b8", "#60a5fa", "#f59e0b", "#ef4444", "#a855f7"}
	rowH, top, left := 34, 50, 90
	height := top + rowH*len(rows) + 70
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="900" height="%d" font-family="sans-serif" font-size="12">`+"\n", height)
	fmt.Fprintln(w, `<rect width="100%" height="100%" fill="white"/>`)
	fmt.Fprintf(w, `<text x="%d" y="22" font-size="14" font-weight="bold">Failed consistency checks (%% of checks)</text>`+"\n", left)
	fmt.Fprintf(w, `<text x="610" y="22" font-size="14" font-weight="bold">Closed-loop req/s</text>`+"\n")
	maxRPS := 1.0
	for _, v := range rps {
		maxRPS = max(maxRPS, v)
	}
	barW := 420.0 / 100
	for i, s := range rows {
		y := top + i*rowH
		fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-8, y+rowH/2, html.EscapeString(s))
		for j, set := range settings {
			v := fail[[2]string{s, set}]
			h := float64(rowH-8) / float64(max(len(settings), 1))
			fmt.Fprintf(w, `<rect x="%d" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", left, float64(y)+float64(j)*h, max(v*barW, 0.5), h-1, colors[j%len(colors)])
		}
		if v, ok := rps[s]; ok {
			fmt.Fprintf(w, `<rect x="610" y="%d" width="%.1f" height="%d" fill="#2563eb"/>`+"\n", y+4, 220*v/maxRPS, rowH-12)
			fmt.Fprintf(w, `<text x="%.1f" y="%d">%.0f</text>`+"\n", 614+220*v/maxRPS, y+rowH/2+2, v)
		}
	}
	ly := top + rowH*len(rows) + 20
	for j, set := range settings {
		x := left + (j%2)*260
		yy := ly + (j/2)*18
		fmt.Fprintf(w, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">lag: %s</text>`+"\n", x, yy, colors[j%len(colors)], x+18, yy+10, html.EscapeString(set))
	}
	fmt.Fprintln(w, `</svg>`)
}

// WriteFiles writes results.md, results.json, results.csv and chart.svg
// into dir.
func (r *Result) WriteFiles(dir string) error {
	var md, csv, svg strings.Builder
	r.Markdown(&md)
	if err := r.writeCSV(&csv); err != nil {
		return err
	}
	r.drawSVG(&svg)
	return writeFiles(dir, r, map[string]string{"results.md": md.String(), "results.csv": csv.String(), "chart.svg": svg.String()}, "results.json")
}

// writeFiles writes the named texts and v as JSON into dir.
func writeFiles(dir string, v any, texts map[string]string, jsonName string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("results: %w", err)
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("results: %w", err)
	}
	texts[jsonName] = string(b) + "\n"
	for name, text := range texts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return fmt.Errorf("results: %w", err)
		}
	}
	return nil
}

// ReplaceSection replaces the text between <!-- SECTION:begin --> and
// <!-- SECTION:end --> in a Markdown file with text.
func ReplaceSection(path, section, text string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("update %s: %w", path, err)
	}
	begin, end := "<!-- "+section+":begin -->", "<!-- "+section+":end -->"
	s := string(b)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %s … %s section", path, begin, end)
	}
	s = s[:i+len(begin)] + "\n" + text + s[j:]
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		return fmt.Errorf("update %s: %w", path, err)
	}
	return nil
}

// machine says what the run ran on.
func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				if _, v, ok := strings.Cut(line, ":"); ok {
					cpu = strings.TrimSpace(v)
				}
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.SplitN(string(b), "\n", 2)[0], "MemTotal: %d kB", &kb)
		mem = fmt.Sprintf(", %d GiB", (kb+(1<<19))>>20)
	}
	return fmt.Sprintf("%d cores (%s)%s, %s", runtime.NumCPU(), cpu, mem, runtime.Version())
}

// Markdown writes the fault table.
func (r *FaultResult) Markdown(w io.Writer) {
	fmt.Fprintln(w, "| scenario | requests | failed | read-only 503 | stale reads | anomalies | acknowledged writes checked (so far) | lost | p50 | p99 | notes |")
	fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
	for _, row := range r.Rows {
		notes := row.Notes
		if row.StaleMisses > 0 {
			notes = append(notes, fmt.Sprintf("%d stale-bannered page(s) lacked a write or went back", row.StaleMisses))
		}
		fmt.Fprintf(w, "| %s | %d | %d | %d | %d | %d | %d | %d | %s | %s | %s |\n", row.Scenario, row.Requests, row.Failed,
			row.ReadOnly, row.Stale, row.Anomalies, row.Acked, row.Lost, ms(row.P50, 1), ms(row.P99, 1), strings.Join(notes, "; "))
	}
	fmt.Fprintf(w, "\nEvery scenario under the causal strategy, users adding to their wishlists and re-reading them, re-reading a thread a writer appends to. Failed: 5xx other than the read-only page and the “may have been saved” page (a COMMIT whose answer was lost; counted in the notes), transport errors, users signed out. Stale reads: pages served with the staleness banner (the primary down and no replica fresh enough); anomalies: read-your-writes or monotonic failures on pages served without it. Run took %s on %s.\n",
		r.Elapsed.Round(time.Second), r.Machine)
}

// WriteFiles writes faults.md and faults.json into dir.
func (r *FaultResult) WriteFiles(dir string) error {
	var md strings.Builder
	r.Markdown(&md)
	return writeFiles(dir, r, map[string]string{"faults.md": md.String()}, "faults.json")
}

// Markdown writes the HA fault table, what its columns mean, what the
// replication modes cost, and which targets held.
func (r *HAResult) Markdown(w io.Writer) {
	fmt.Fprintln(w, "| scenario | requests | failed reads | failed writes | read-only 503 | stale pages | pages “may have been lost” | anomalies | writes acknowledged | lost | promoted after | writes back after the fault / the promotion | writes p50 / p99 before the fault | p50 | p99 | notes |")
	fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | --- |")
	for _, row := range r.Rows {
		promoted, back := "–", "–"
		switch {
		case row.Promoted > 0:
			promoted = secs(row.Promoted)
			back = secs(row.WritesBack) + " / " + secs(row.AfterPromotion())
		case row.WritesBack > 0:
			back = secs(row.WritesBack) + " / –"
		case row.Key == RowSwitchover:
			back = "never refused"
		}
		writes := "–"
		if row.Writes > 0 {
			writes = fmt.Sprintf("%s / %s (%d)", ms(row.WriteP50, 1), ms(row.WriteP99, 1), row.Writes)
		}
		fmt.Fprintf(w, "| %s | %d | %d | %d | %d | %d | %d | %d | %d | %d | %s | %s | %s | %s | %s | %s |\n",
			row.Scenario, row.Requests, row.FailedReads, row.FailedWrites, row.ReadOnly, row.Stale, row.LostPages, row.Anomalies,
			row.Acked, row.Lost, promoted, back, writes, ms(row.P50, 1), ms(row.P99, 1), strings.Join(row.Notes, "; "))
	}
	fmt.Fprintf(w, "\nEach row on a Patroni cluster of three members (ttl %s), a new one per replication mode, under the causal strategy: %d simulated users add to their wishlists and re-read them, re-read a thread a writer appends to, for %s before the fault and %s after it settled; the app gets every member's URL and Patroni's REST APIs (it discovers the members there), and reads each node's role every %s. "+
		"Failed reads: page views that failed (transport errors, 5xx, users signed out); failed writes: forms that failed otherwise than with the read-only page or the “may have been saved” page. "+
		"Stale pages carried the staleness banner (no primary, no replica fresh enough); pages “may have been lost” said the session's change may have been lost in a failover. "+
		"Anomalies: read-your-writes or monotonic failures on pages that said neither. Lost: the row's acknowledged writes missing on the primary after it. "+
		"Promoted after: from the crash until the new leader took writes, as the lab's own poll of Patroni and PostgreSQL (every 50 ms) saw it. "+
		"Writes back: from the fault until a probe writing every %s had a write acknowledged again, and that less the promotion time (negative: the app saw the new leader before the lab's poll did). "+
		"Writes p50 / p99: the forms acknowledged in the phase before the fault (how many), on the healthy cluster.\n",
		span(r.TTL), r.Users, span(r.Phase), span(r.Phase), span(r.PollInterval), span(probeInterval))
	if lines := r.findings(); len(lines) > 0 {
		fmt.Fprintln(w)
		for _, l := range lines {
			fmt.Fprintln(w, l)
		}
	}
	if len(r.Targets) > 0 {
		fmt.Fprintln(w, "\nTargets:")
		fmt.Fprintln(w)
		for _, t := range r.Targets {
			held := "held"
			if !t.Held {
				held = "**not held**"
			}
			fmt.Fprintf(w, "- %s: %s — %s\n", held, t.What, t.Measured)
		}
	}
	versions := ""
	if r.Versions != "" {
		versions = "; " + r.Versions
	}
	fmt.Fprintf(w, "\nRun took %s on %s%s.\n", r.Elapsed.Round(time.Second), r.Machine, versions)
}

// findings are the lines under the HA table that compare the replication
// modes: what the asynchronous crash lost, and what synchronous_mode costs
// each write.
func (r *HAResult) findings() []string {
	var out []string
	var latency []string
	for _, row := range r.Rows {
		if row.Key == RowCrash {
			out = append(out, fmt.Sprintf("Asynchronous replication: the crash lost %d of the row's %d acknowledged writes; %d pages and %d form answers said a change may have been lost.",
				row.Lost, row.Acked, row.LostPages, row.LostForms))
		}
		if (row.Key == RowCrash || row.Key == RowCrashSync) && row.Writes > 0 {
			latency = append(latency, fmt.Sprintf("%s %s / %s", replication(row.Sync), ms(row.WriteP50, 1), ms(row.WriteP99, 1)))
		}
	}
	if len(latency) > 0 {
		out = append(out, "Writes on the healthy cluster, p50 / p99 (the form's whole request): "+strings.Join(latency, "; ")+".")
	}
	return out
}

// WriteFiles writes faults-ha.md and faults-ha.json into dir.
func (r *HAResult) WriteFiles(dir string) error {
	var md strings.Builder
	r.Markdown(&md)
	return writeFiles(dir, r, map[string]string{"faults-ha.md": md.String()}, "faults-ha.json")
}
