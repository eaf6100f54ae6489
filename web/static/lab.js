// The lag lab's live panel: polls /lab/state every second, updates the
// members table with the server's words and draws two small SVG charts,
// with a mark where the primary changed. It never touches a form, so a
// delay being typed is not overwritten; when the primary has changed since
// the page loaded it says so, since the levers drawn in each row are for
// the role its member had then. No external resources.
(function () {
  "use strict";
  const colors = { primary: "#2563eb", replica1: "#16a34a", replica2: "#d97706", replica3: "#9333ea", replica4: "#db2777" };
  // Other names (node1, node2, … of a Patroni cluster) get a colour from
  // their name, so a member keeps its colour when its role changes.
  const palette = ["#16a34a", "#d97706", "#9333ea", "#db2777", "#0891b2", "#65a30d", "#dc2626", "#4f46e5"];
  const color = (n) => {
    if (colors[n]) return colors[n];
    let h = 0;
    for (const c of n) h = (h * 31 + c.charCodeAt(0)) >>> 0;
    return palette[h % palette.length];
  };
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

  // primaryMarks shades the seconds without a primary and draws a dashed
  // line, labelled ("failover: node1 → node2"), where the primary changed.
  // x(i) is sample i's place; w, a sample's width.
  function primaryMarks(svg, hist, x, w) {
    hist.forEach((s, i) => {
      if (s.primary === "") el("rect", { class: "no-primary", x: x(i), y: 0, width: Math.max(w, 1), height: H - PAD }, svg);
    });
    let row = 0;
    hist.forEach((s, i) => {
      if (!s.mark) return;
      const at = x(i);
      el("line", { class: "primary-mark", x1: at, y1: 0, x2: at, y2: H - PAD }, svg);
      const right = at > W / 2;
      const t = el("text", { class: "primary-mark-label", x: right ? at - 3 : at + 3, y: 24 + 12 * (row++ % 3), "text-anchor": right ? "end" : "start" }, svg);
      t.textContent = s.mark;
    });
  }

  function drawLag(svg, hist) {
    svg.replaceChildren();
    if (hist.length < 2) return;
    const names = Object.keys(hist[hist.length - 1].lag);
    let max = 1;
    hist.forEach((s) => names.forEach((n) => { max = Math.max(max, s.lag[n] || 0); }));
    max = Math.ceil(max);
    const x = (i) => PAD + (i * (W - PAD)) / (hist.length - 1);
    const y = (v) => H - PAD - (v / max) * (H - 2 * PAD);
    primaryMarks(svg, hist, x, (W - PAD) / (hist.length - 1));
    axis(svg, max, " s");
    names.forEach((n) => {
      const pts = hist.map((s, i) => x(i).toFixed(1) + "," + y(s.lag[n] || 0).toFixed(1)).join(" ");
      el("polyline", { points: pts, fill: "none", stroke: color(n), "stroke-width": 2 }, svg);
    });
  }

  function drawReads(svg, hist) {
    svg.replaceChildren();
    if (hist.length < 1) return;
    const bw = (W - PAD) / Math.max(hist.length, 1);
    primaryMarks(svg, hist, (i) => PAD + i * bw, bw);
    axis(svg, 100, "%");
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

  // rolesChanged says, above the table, that the primary is not the one
  // the page was drawn for: each row's levers are for the roles then.
  function rolesChanged(st) {
    const table = document.getElementById("nodes");
    const note = document.getElementById("roles-changed");
    if (!table || !note) return;
    const then = table.dataset.primary || "";
    if (st.primary === then) {
      note.hidden = true;
      return;
    }
    let words;
    if (st.primary === "") {
      words = "No member takes writes right now" + (then ? " (" + then + " did when this page loaded)" : "") +
        (st.ha ? ": after a crash of the primary, Patroni promotes a replica within about 10 s. " : ". ");
    } else {
      words = "The primary is " + st.primary + " now" + (then ? " (it was " + then + " when this page loaded)" : "") + ". ";
    }
    note.replaceChildren(document.createTextNode(words));
    const a = document.createElement("a");
    a.href = "/lab#members";
    a.textContent = "Reload for the levers of the current roles.";
    note.appendChild(a);
    note.hidden = false;
  }

  // splitBrain shows, or hides, what the router says of a split brain.
  function splitBrain(st) {
    const p = document.getElementById("split-brain");
    if (!p) return;
    p.textContent = st.split_brain ? st.split_brain.charAt(0).toUpperCase() + st.split_brain.slice(1) + "." : "";
    p.hidden = !st.split_brain;
  }

  function haOp(op) {
    const p = document.getElementById("ha-op");
    if (!p || !op) return;
    p.textContent = op.text;
    p.hidden = !op.text;
    p.classList.toggle("running", op.running);
    p.classList.toggle("failed", op.failed);
  }

  function update(st) {
    document.getElementById("strategy").textContent = st.strategy;
    splitBrain(st);
    const seen = new Set();
    // Rows follow members, not roles: after a failover each row still
    // shows its own member, whatever it has become.
    st.nodes.forEach((n) => {
      const row = Array.from(document.querySelectorAll("#nodes tr[data-member]")).find((r) => r.dataset.member === n.member);
      if (!row) return;
      seen.add(row);
      const set = (f, v) => { const c = row.querySelector('[data-field="' + f + '"]'); if (c) c.textContent = v; };
      set("display", n.display);
      set("router-role", n.router_role);
      set("timeline", n.timeline || "–");
      set("patroni", n.patroni);
      set("replay", n.replay);
      set("delay", n.apply_delay);
      set("behind", n.behind);
      set("position", n.position);
      set("gets", n.gets_reads);
      set("reads", n.reads);
    });
    // A member the router no longer reports is greyed out.
    document.querySelectorAll("#nodes tr[data-member]").forEach((row) => row.classList.toggle("gone", !seen.has(row)));
    rolesChanged(st);
    haOp(st.ha_op);
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
