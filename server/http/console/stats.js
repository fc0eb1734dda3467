// Live statistics: Triton's cumulative counters, polled, turned into rates and means per interval, and drawn
// as small line charts over the last minutes.

const WINDOW_S = 300; // what the charts show
const num = (v) => Number(v ?? 0); // the counters are uint64: numbers or strings, depending on the encoder

// Sum one model's counters over its versions (model_stats has one entry per version).
export function totals(statsAnswer) {
  const t = { success: 0, successNs: 0, queue: 0, queueNs: 0, compute: 0, computeNs: 0, inferences: 0, executions: 0 };
  for (const m of statsAnswer?.model_stats ?? []) {
    const s = m.inference_stats ?? {};
    t.success += num(s.success?.count);
    t.successNs += num(s.success?.ns);
    t.queue += num(s.queue?.count);
    t.queueNs += num(s.queue?.ns);
    t.compute += num(s.compute_infer?.count);
    t.computeNs += num(s.compute_infer?.ns);
    t.inferences += num(m.inference_count);
    t.executions += num(m.execution_count);
  }
  return t;
}

// One point per interval between two polls; null where nothing happened (no mean to show).
export function interval(a, b) {
  const dt = (b.time - a.time) / 1000;
  const d = (key) => b.totals[key] - a.totals[key];
  const ms = (ns, count) => (d(count) > 0 ? d(ns) / d(count) / 1e6 : null);
  return {
    time: b.time,
    rate: dt > 0 ? Math.max(0, d("success")) / dt : 0,
    batch: d("executions") > 0 ? d("inferences") / d("executions") : null,
    queueMs: ms("queueNs", "queue"),
    computeMs: ms("computeNs", "compute"),
  };
}

export const SERIES = [
  { key: "rate", title: "Request rate", unit: "req/s", digits: 1 },
  { key: "batch", title: "Mean batch size", unit: "images", digits: 2 },
  { key: "queueMs", title: "Mean queue time", unit: "ms", digits: 2 },
  { key: "computeMs", title: "Mean compute time", unit: "ms", digits: 2 },
];

export class History {
  constructor() {
    this.samples = new Map(); // model -> [{time, totals}]
  }
  add(model, time, statsAnswer) {
    const list = this.samples.get(model) ?? [];
    list.push({ time, totals: totals(statsAnswer) });
    while (list.length > 2 && time - list[0].time > WINDOW_S * 1000) list.shift();
    this.samples.set(model, list);
  }
  points(model) {
    const list = this.samples.get(model) ?? [];
    const out = [];
    for (let i = 1; i < list.length; i++) out.push(interval(list[i - 1], list[i]));
    return out;
  }
}

// A small line chart on a canvas; the numbers are also written in words next to it (for screen readers).
export function drawChart(canvas, points, key, now) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 240;
  const height = canvas.clientHeight || 112;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const values = points.map((p) => p[key]).filter((v) => v !== null);
  const top = Math.max(1e-9, ...values) * 1.15;
  const x = (t) => width - ((now - t) / (WINDOW_S * 1000)) * width;
  const y = (v) => height - 14 - (v / top) * (height - 24);
  g.strokeStyle = "#d0d7de";
  g.beginPath();
  g.moveTo(0, y(0) + 0.5);
  g.lineTo(width, y(0) + 0.5);
  g.stroke();
  g.fillStyle = "#57606a";
  g.font = "11px system-ui, sans-serif";
  const peak = Math.max(0, ...values);
  g.fillText(values.length ? (peak > 0 ? `max ${peak.toPrecision(3)}` : "idle (0)") : "no data yet", 4, 11);
  g.fillText(`last ${WINDOW_S / 60} min`, 4, height - 2);
  g.strokeStyle = "#0b5cad";
  g.lineWidth = 2;
  g.beginPath();
  let pen = false;
  for (const p of points) {
    if (p[key] === null) {
      pen = false;
      continue;
    }
    if (pen) g.lineTo(x(p.time), y(p[key]));
    else g.moveTo(x(p.time), y(p[key]));
    pen = true;
  }
  g.stroke();
}
