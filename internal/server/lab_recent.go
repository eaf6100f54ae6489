package server

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"quest/internal/dbrouter"
)

// "Your last 20 requests" on the lab: the viewer's own recent page views
// as a small SVG timeline, drawn server-side by html/template, and a table.

// verdict classes, most telling first: a request's mark takes the first
// class any of its page-data reads has (a read that may have missed the
// session's change wins whatever it was for).
const (
	verdictMissing   = "missing"
	verdictUnchecked = "unchecked"
	verdictWaited    = "waited"
	verdictPrimary   = "primary"
	verdictFresh     = "fresh"
	verdictNone      = "none"
)

var verdictOrder = []string{verdictMissing, verdictUnchecked, verdictWaited, verdictPrimary, verdictFresh, verdictNone}

var verdictLabels = map[string]string{
	verdictMissing:   "may be missing your change",
	verdictUnchecked: "not checked",
	verdictWaited:    "waited for a replica",
	verdictPrimary:   "primary",
	verdictFresh:     "fresh replica",
	verdictNone:      "no database read",
}

// readVerdict classes one read: fresh (a replica that had the session's
// position), waited N ms, primary, may be missing your change, or not
// checked (a replica whose position, or the session's, is not known).
func readVerdict(v readView) (class, label string) {
	switch {
	case v.Missing != "":
		return verdictMissing, v.Verdict
	case v.Node == "primary":
		return verdictPrimary, "primary"
	case strings.HasPrefix(v.Verdict, "waited"):
		return verdictWaited, v.Verdict
	case v.You == position(0):
		return verdictFresh, "fresh"
	}
	you, err1 := dbrouter.ParseLSN(v.You)
	node, err2 := dbrouter.ParseLSN(v.NodePos)
	if err1 == nil && err2 == nil && node >= you {
		return verdictFresh, "fresh"
	}
	return verdictUnchecked, verdictLabels[verdictUnchecked]
}

// requestVerdict classes a request by its reads: missing if any read may
// have missed the session's change, else by the page's own data (the
// session lookup when the page read nothing else).
func requestVerdict(reads []readView) (class, label string) {
	var page []readView
	for _, v := range reads {
		if v.Missing != "" {
			return readVerdict(v)
		}
		if v.For == "this page's data" {
			page = append(page, v)
		}
	}
	if len(page) == 0 {
		page = reads
	}
	class, label = verdictNone, verdictLabels[verdictNone]
	for _, v := range page {
		c, l := readVerdict(v)
		if slices.Index(verdictOrder, c) < slices.Index(verdictOrder, class) {
			class, label = c, l
		}
	}
	return class, label
}

// recentRead is one read in the table.
type recentRead struct {
	For, Node, State, You, NodePos string
	Class, Verdict                 string
}

// recentRow is one request in the table.
type recentRow struct {
	At, Path       string
	Class, Verdict string
	Reads          []recentRead
}

type timelineLane struct {
	Label, Class string
	Y, TextY     int
}

type timelineMark struct {
	X, Y         string
	Class, Title string
}

type timelineTick struct {
	X, Label string
	Anchor   string // text-anchor
}

// timeline is the SVG's geometry and the table's rows.
type timeline struct {
	Width, Height, Left, Right int
	LabelX, AxisY, TickY       int // where lane labels end; the axis; its labels
	Lanes                      []timelineLane
	Marks                      []timelineMark
	Ticks                      []timelineTick
	Rows                       []recentRow // newest first
}

const (
	tlWidth   = 760
	tlLeft    = 250 // lane labels
	tlRight   = 16
	tlLane    = 28
	tlTop     = 6
	tlAxis    = 26
	tlMarkH   = 18
	tlMinSpan = 10 * time.Second
)

// buildTimeline lays out reqs (oldest first) on a time axis from the first
// request to now: one mark per request, in its verdict's lane.
func buildTimeline(reqs []recentRequest, now time.Time) timeline {
	tl := timeline{Width: tlWidth, Left: tlLeft, Right: tlWidth - tlRight, LabelX: tlLeft - 10}
	if len(reqs) == 0 {
		return tl
	}
	classes := make([]string, len(reqs))
	used := map[string]bool{}
	for i, q := range reqs {
		class, label := requestVerdict(q.Reads)
		classes[i] = class
		used[class] = true
		row := recentRow{At: q.At.Format("15:04:05"), Path: q.Path, Class: class, Verdict: label}
		for _, v := range q.Reads {
			c, l := readVerdict(v)
			row.Reads = append(row.Reads, recentRead{For: v.For, Node: v.Node, State: v.State, You: v.You, NodePos: v.NodePos, Class: c, Verdict: l})
		}
		tl.Rows = append(tl.Rows, row)
	}
	slices.Reverse(tl.Rows)

	// The lanes: the four verdicts always, the rare ones when they occur.
	laneY := map[string]int{}
	for _, c := range verdictOrder {
		if !used[c] && (c == verdictUnchecked || c == verdictNone) {
			continue
		}
		y := tlTop + len(tl.Lanes)*tlLane + tlLane/2
		laneY[c] = y
		tl.Lanes = append(tl.Lanes, timelineLane{Label: verdictLabels[c], Class: c, Y: y, TextY: y + 5})
	}
	tl.AxisY = tlTop + len(tl.Lanes)*tlLane + 4
	tl.TickY = tl.AxisY + 18
	tl.Height = tl.AxisY + tlAxis

	start := reqs[0].At
	span := now.Sub(start)
	if span < tlMinSpan {
		span = tlMinSpan
	}
	plot := float64(tl.Right - tl.Left)
	x := func(t time.Time) float64 {
		f := float64(t.Sub(start)) / float64(span)
		return float64(tl.Left) + min(max(f, 0), 1)*plot
	}
	for i, q := range reqs {
		c := classes[i]
		tl.Marks = append(tl.Marks, timelineMark{
			X: fmt.Sprintf("%.1f", x(q.At)-2), Y: fmt.Sprintf("%d", laneY[c]-tlMarkH/2), Class: c,
			Title: fmt.Sprintf("%s %s — %s", q.At.Format("15:04:05"), q.Path, tl.Rows[len(reqs)-1-i].Verdict),
		})
	}
	tl.Ticks = []timelineTick{
		{X: fmt.Sprintf("%d", tl.Left), Label: roughly(span) + " ago", Anchor: "start"},
		{X: fmt.Sprintf("%.1f", float64(tl.Left)+plot/2), Label: roughly(span/2) + " ago", Anchor: "middle"},
		{X: fmt.Sprintf("%d", tl.Right), Label: "now", Anchor: "end"},
	}
	return tl
}
