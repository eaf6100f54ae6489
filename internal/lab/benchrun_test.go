package lab

import (
	"math"
	"testing"
)

// TestSummariseAgainstControl checks the control column's arithmetic: each
// repetition's ratio over the control's ratio of the same repetition, then
// the median and spread of those quotients — and no column when the
// control did not run as often.
func TestSummariseAgainstControl(t *testing.T) {
	control := &BenchRow{Name: SpreadRow, Ratios: []float64{0.70, 0.80, 0.50}}
	row := BenchRow{Name: "random", Ratios: []float64{0.63, 0.84, 0.55}}
	row.summarise(control)
	want := []float64{0.90, 1.05, 1.10}
	if row.Control != SpreadRow || len(row.ControlRatios) != len(want) {
		t.Fatalf("control %q, ratios %v; want %v against %q", row.Control, row.ControlRatios, want, SpreadRow)
	}
	for i, w := range want {
		if math.Abs(row.ControlRatios[i]-w) > 1e-9 {
			t.Errorf("repetition %d: %.4f over its control, want %.2f", i, row.ControlRatios[i], w)
		}
	}
	if math.Abs(row.ControlMedian-1.05) > 1e-9 || math.Abs(row.ControlMin-0.90) > 1e-9 || math.Abs(row.ControlMax-1.10) > 1e-9 {
		t.Errorf("median %.4f (%.4f–%.4f), want 1.05 (0.90–1.10)", row.ControlMedian, row.ControlMin, row.ControlMax)
	}
	if math.Abs(row.Median-0.63) > 1e-9 {
		t.Errorf("the ratio to direct moved: median %.4f, want 0.63", row.Median)
	}

	short := BenchRow{Name: "timed", Ratios: []float64{0.7, 0.8}}
	short.summarise(&BenchRow{Name: SpreadRow, Ratios: []float64{0.7}})
	if short.Control != "" || short.ControlRatios != nil {
		t.Errorf("a control measured a different number of times gave %q %v; want no column", short.Control, short.ControlRatios)
	}
	alone := BenchRow{Name: "sticky", Ratios: []float64{0.9}}
	alone.summarise(nil)
	if alone.Control != "" || alone.Median != 0.9 {
		t.Errorf("a row without a control: %q, median %.2f", alone.Control, alone.Median)
	}
	for row, want := range map[string]string{"random": SpreadRow, "pin-own": SpreadRow, "timed": SpreadRow,
		CausalWrote: PositionRow, CausalNoPosition: PositionRow, "primary": "", "sticky": "", SpreadRow: "", PgpoolRow: ""} {
		if got := controlOf(row); got != want {
			t.Errorf("controlOf(%q) = %q, want %q", row, got, want)
		}
	}
}
