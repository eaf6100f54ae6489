package lab

import (
	"encoding/csv"
	"fmt"
	"html"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

func checkLabel(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + " s"
}

// Markdown writes the table.
func (r *Result) Markdown(w io.Writer) {
	checks := make([]string, len(r.Config.Checks))
	for i, d := range r.Config.Checks {
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
			waits = fmt.Sprintf("%d (%.1f ms)", c.Waited, float64(c.WaitTotal.Microseconds())/1000/float64(c.Waited))
		}
		mono := fmt.Sprintf("%d/%d", c.MonoFailures, c.MonoChecks)
		if c.ClosedLoop {
			ryw = []string{fmt.Sprintf("%d/%d", c.RYWFailures[0], c.RYWChecks[0])}
		}
		share, streaks := fmt.Sprintf("%.0f %%", 100*c.PrimaryShare()), strconv.Itoa(c.Streaks)
		if c.Proxy {
			share, streaks = "not known (proxy)", "–"
		}
		fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %d | %s | %s | %s | %s | %s | %.0f |\n",
			c.Strategy, c.Setting, c.Requests, strings.Join(ryw, " / "), mono, c.StaleReads,
			share, waits, streaks, ms(c.P50), ms(c.P99), c.RPS)
	}
	fmt.Fprintf(w, "\n%d simulated users (half add to their wishlist and re-read it, half re-read a forum thread one writer appends to), %s think time, %s per cell; closed-loop cells without think time or lag. Run took %s on %s.\n",
		r.Config.Users, r.Config.Think, r.Config.CellTime, r.Elapsed.Round(time.Second), r.Machine)
	if len(r.Bench) > 0 {
		fmt.Fprintln(w)
		BenchMarkdown(w, r.Bench, r.BenchClients, r.BenchTime)
	}
	for _, line := range r.Comments {
		fmt.Fprintln(w, line)
	}
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64) + " ms"
}

// CSV writes one row per cell.
func (r *Result) CSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	header := []string{"strategy", "lag", "closed_loop", "requests", "errors"}
	for _, d := range r.Config.Checks {
		header = append(header, "ryw_checks_"+checkLabel(d), "ryw_failures_"+checkLabel(d))
	}
	header = append(header, "mono_checks", "mono_failures", "reads", "primary_reads", "stale_reads",
		"causal_waits", "causal_wait_ms_total", "primary_streaks", "p50_ms", "p99_ms", "req_per_s")
	cw.Write(header)
	for _, c := range r.Cells {
		row := []string{c.Strategy, c.Setting, strconv.FormatBool(c.ClosedLoop), strconv.Itoa(c.Requests), strconv.Itoa(c.Errors)}
		for i := range r.Config.Checks {
			row = append(row, strconv.Itoa(c.RYWChecks[i]), strconv.Itoa(c.RYWFailures[i]))
		}
		row = append(row, strconv.Itoa(c.MonoChecks), strconv.Itoa(c.MonoFailures), strconv.Itoa(c.Reads),
			strconv.Itoa(c.PrimaryReads), strconv.Itoa(c.StaleReads), strconv.Itoa(c.Waited),
			fmt.Sprintf("%.1f", float64(c.WaitTotal.Microseconds())/1000), strconv.Itoa(c.Streaks),
			fmt.Sprintf("%.2f", float64(c.P50.Microseconds())/1000), fmt.Sprintf("%.2f", float64(c.P99.Microseconds())/1000),
			fmt.Sprintf("%.1f", c.RPS))
		cw.Write(row)
	}
	cw.Flush()
	return cw.Error()
}

// SVG draws two panels: the share of failed consistency checks per
// strategy and lag setting, and the closed-loop requests per second.
func (r *Result) SVG(w io.Writer) {
	var rows []string
	settings := []string{}
	fail := map[[2]string]float64{}
	rps := map[string]float64{}
	for _, c := range r.Cells {
		if !contains(rows, c.Strategy) {
			rows = append(rows, c.Strategy)
		}
		if c.ClosedLoop {
			rps[c.Strategy] = c.RPS
			continue
		}
		if !contains(settings, c.Setting) {
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

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// WriteFiles writes results.md, results.csv and chart.svg into dir.
func (r *Result) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var md strings.Builder
	r.Markdown(&md)
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "results.csv"))
	if err != nil {
		return err
	}
	if err := r.CSV(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	var svg strings.Builder
	r.SVG(&svg)
	return os.WriteFile(filepath.Join(dir, "chart.svg"), []byte(svg.String()), 0o644)
}

// UpdateReadme replaces the text between the markers <!-- SECTION:begin -->
// and <!-- SECTION:end --> in a README with the table.
func (r *Result) UpdateReadme(path, section string) error {
	var md strings.Builder
	r.Markdown(&md)
	return ReplaceSection(path, section, md.String())
}

// ReplaceSection replaces the text between <!-- SECTION:begin --> and
// <!-- SECTION:end --> in a file.
func ReplaceSection(path, section, text string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	begin, end := "<!-- "+section+":begin -->", "<!-- "+section+":end -->"
	s := string(b)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %s … %s section", path, begin, end)
	}
	s = s[:i+len(begin)] + "\n" + text + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}

// MachineDescription says what the run ran on.
func MachineDescription() string {
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
