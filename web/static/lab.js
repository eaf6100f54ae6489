// The lag lab's live panel: polls /lab/state every second, updates the
// replica table with the server's words and draws two small SVG charts.
// It never touches a form, so a delay being typed is not overwritten.
// No external resources.
(function () {
  "use strict";
  const colors = { primary: "#2563eb", replica1: "#16a34a", replica2: "#d97706", replica3: "#9333ea", replica4: "#db2777" };
  const color = (n) => colors[n] || "#6b7280";
  const W = 600, H = 160, PAD = 24;
  const svgNS = "http://www.w3.org/2000/svg";

  function el(name, attrs, parent) {
    const e = document.createElementNS(svgNS, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }

  function axis(svg, max, unit) {
    el("line", { x1: PAD, y1: H - PAD, x2: W, y2: H - PAD, stroke: "#d1d5db" }, svg);
    const t = el("text", { x: 2, y: 12, "font-size": 10, fill: "#6b7280" }, svg);
    t.textContent = max + unit;
    const z = el("text", { x: 2, y: H - PAD, "font-size": 10, fill: "#6b7280" }, svg);
    z.textContent = "0";
  }

  function drawLag(svg, hist) {
    svg.replaceChildren();
    if (hist.length < 2) return;
    const names = Object.keys(hist[hist.length - 1].lag);
    let max = 1;
    hist.forEach((s) => names.forEach((n) => { max = Math.max(max, s.lag[n] || 0); }));
    max = Math.ceil(max);
    axis(svg, max, " s");
    const x = (i) => PAD + (i * (W - PAD)) / (hist.length - 1);
    const y = (v) => H - PAD - (v / max) * (H - 2 * PAD);
    names.forEach((n) => {
      const pts = hist.map((s, i) => x(i).toFixed(1) + "," + y(s.lag[n] || 0).toFixed(1)).join(" ");
      el("polyline", { points: pts, fill: "none", stroke: color(n), "stroke-width": 2 }, svg);
    });
  }

  function drawReads(svg, hist) {
    svg.replaceChildren();
    if (hist.length < 1) return;
    axis(svg, 100, "%");
    const bw = (W - PAD) / Math.max(hist.length, 1);
    hist.forEach((s, i) => {
      const total = Object.values(s.reads).reduce((a, b) => a + b, 0);
      if (!total) return;
      let y0 = H - PAD;
      Object.keys(s.reads).sort().forEach((n) => {
        const h = (s.reads[n] / total) * (H - 2 * PAD);
        el("rect", { x: PAD + i * bw, y: y0 - h, width: Math.max(bw - 0.5, 0.5), height: h, fill: color(n) }, svg);
        y0 -= h;
      });
    });
  }

  function legend(nodes) {
    const p = document.getElementById("legend");
    p.replaceChildren();
    nodes.forEach((n) => {
      const s = document.createElement("span");
      s.className = "key";
      s.style.setProperty("--key", color(n.name));
      s.textContent = n.name;
      p.appendChild(s);
    });
  }

  function update(st) {
    document.getElementById("strategy").textContent = st.strategy;
    st.nodes.forEach((n) => {
      const row = document.querySelector('tr[data-node="' + n.name + '"]');
      if (!row) return;
      const set = (f, v) => { const c = row.querySelector('[data-field="' + f + '"]'); if (c) c.textContent = v; };
      set("replay", n.replay);
      set("delay", n.apply_delay);
      set("behind", n.behind);
      set("position", n.position);
      set("gets", n.gets_reads);
      set("reads", n.reads);
    });
    drawLag(document.getElementById("lag-chart"), st.history);
    drawReads(document.getElementById("reads-chart"), st.history);
    legend(st.nodes);
  }

  async function poll() {
    try {
      const r = await fetch("/lab/state", { cache: "no-store" });
      if (r.ok) update(await r.json());
    } catch (e) { /* the next tick tries again */ }
    setTimeout(poll, 1000);
  }
  poll();
})();
