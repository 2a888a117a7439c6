// Formatting of numbers, times and durations for the dashboard (the viewer's
// locale and time zone; the server sends epoch seconds).

const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
const hourMinute = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hour12: false });
const full = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

export const time = (epoch) => (epoch == null ? "—" : clock.format(new Date(epoch * 1000)));
export const hhmm = (epoch) => hourMinute.format(new Date(epoch * 1000));
export const fullTime = (epoch) => (epoch == null ? "" : full.format(new Date(epoch * 1000)));

/** 75 -> "1 min 15 s"; 4000 -> "1 h 6 min". */
export function duration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  const h = Math.floor(s / 3600);
  if (h < 48) return `${h} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

export const ago = (epoch, now) => (epoch == null ? "—" : `${duration(now - epoch)} ago`);

export function percent(ratio) {
  if (ratio == null) return "—";
  const pct = ratio * 100;
  return `${Number.isInteger(pct) ? pct : pct.toFixed(1)}%`;
}

export function seconds(value) {
  if (value == null) return "—";
  return value < 10 ? `${value.toFixed(2)} s` : `${value.toFixed(1)} s`;
}

export const count = (n) => new Intl.NumberFormat().format(n);

/** "SE3f0c…9a1b": long sids made short for a table; the full one goes in a title. */
export const shortSid = (sid) => (sid && sid.length > 12 ? `${sid.slice(0, 6)}…${sid.slice(-4)}` : sid || "—");
