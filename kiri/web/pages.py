"""The dashboard's HTML, from the dicts of views.py. Everything that came from data (atom
and host names, messages, situations) goes through esc(); nothing here reads the store.

The pages carry no script: the overview and the atom pages refresh themselves with a
meta refresh, the day / week toggle is a link, Approve and Dismiss are POST forms.
"""

import math
import time
import urllib.parse
from dataclasses import dataclass
from html import escape

from .. import status
from .charts import Dot, Mark, Panel, chart
from .views import alert_atoms

REFRESH_SECONDS = 60
RATIO_TOP_MOST = 5.0   # a panel of score ÷ threshold stops here; beyond it a point is a triangle on the edge


@dataclass
class Site:
    """What every page needs besides its own data."""
    host: str
    csrf: str
    read_only: bool


def esc(value):
    return escape(str(value), quote=True)


def when(ts):
    return time.strftime("%a %d %b %H:%M", time.localtime(ts))


def url(path, **query):
    """`path` with a query string; atom names and numbers are quoted as data, never as markup."""
    query = {k: v for k, v in query.items() if v is not None}
    return path + ("?" + urllib.parse.urlencode(query) if query else "")


def atom_url(name, **query):
    return url("/atoms/" + urllib.parse.quote(name, safe=""), **query)


# -- the frame of every page -------------------------------------------------------------

STYLE = """
:root{--bg:#f4f5f7;--card:#fff;--ink:#1d2430;--muted:#687182;--line:#e3e6ea;--plot:#fbfbfc;
--accent:#2563eb;--like:#8b5cf6;--field:#0f766e;--bad:#dc2626;--warn:#d97706;--good:#15803d}
@media (prefers-color-scheme:dark){:root{--bg:#111418;--card:#1a1f26;--ink:#e6e9ee;--muted:#98a1ae;
--line:#2c333d;--plot:#161a20;--accent:#60a5fa;--like:#a78bfa;--field:#2dd4bf;--bad:#f87171;--warn:#fbbf24;--good:#4ade80}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
header.top{display:flex;align-items:center;gap:24px;padding:12px 28px;background:var(--card);border-bottom:1px solid var(--line)}
header.top .brand{font-weight:700;letter-spacing:.08em}header.top .host{color:var(--muted)}
header.top nav{display:flex;gap:18px;margin-left:auto}header.top nav a{color:var(--muted)}
header.top nav a.on{color:var(--ink);font-weight:600}
main{max-width:1100px;margin:0 auto;padding:20px 28px 48px}
h1{font-size:24px;margin:8px 0 14px}h2{font-size:17px;margin:0 0 10px}h3{font-size:15px;margin:0}
.muted{color:var(--muted)}.small{font-size:13px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:14px;margin-bottom:18px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px;margin-bottom:16px}
.cards .card{margin:0}.card .big{font-size:22px;font-weight:650;margin:4px 0 2px}
.card .label{font-size:12px;text-transform:uppercase;letter-spacing:.06em;color:var(--muted)}
.atom header{display:flex;align-items:baseline;flex-wrap:wrap;gap:10px;margin-bottom:6px}
.badge{display:inline-block;font-size:12px;font-weight:600;padding:1px 8px;border-radius:999px;border:1px solid currentColor}
.good,.running,.normal,.watching,.approved{color:var(--good)}.bad,.anomaly,.stale,.open{color:var(--bad)}
.unusual,.learning,.warn{color:var(--warn)}.stopped,.never,.cold,.unknown,.dismissed{color:var(--muted)}
.toolbar{display:flex;align-items:center;gap:14px;margin:6px 0 12px}.toolbar h2{margin:0}
.toggle a{padding:4px 12px;border:1px solid var(--line);background:var(--card);color:var(--ink)}
.toggle a:first-child{border-radius:6px 0 0 6px}.toggle a:last-child{border-radius:0 6px 6px 0;border-left:0}
.toggle a.on{background:var(--accent);border-color:var(--accent);color:#fff}
table{width:100%;border-collapse:collapse;font-size:14px}
th{text-align:left;font-weight:600;color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
th,td{padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.off td{background:color-mix(in srgb,var(--bad) 9%,transparent)}tr.off td.token{color:var(--bad);font-weight:650}
.bar{display:inline-block;height:8px;border-radius:4px;background:var(--bad);opacity:.7;vertical-align:middle;margin-left:6px}
.alerts-box{border-left:4px solid var(--bad)}.errors li{color:var(--bad)}
form.answer{display:inline-flex;gap:6px;margin:0}
button{font:inherit;font-size:13px;padding:3px 12px;border-radius:6px;border:1px solid var(--line);background:var(--card);color:var(--ink);cursor:pointer}
button.approve:hover{border-color:var(--good);color:var(--good)}button.dismiss:hover{border-color:var(--bad);color:var(--bad)}
pre.message{white-space:pre-wrap;background:var(--plot);border:1px solid var(--line);border-radius:8px;padding:12px;font-size:13px}
.legend{display:flex;gap:16px;font-size:12px;color:var(--muted);margin:2px 0 4px}
.legend i{display:inline-block;width:14px;height:3px;vertical-align:middle;margin-right:5px}
.chart{width:100%;height:auto;display:block}
.chart .plot{fill:var(--plot);stroke:var(--line)}.chart .grid{stroke:var(--line)}
.chart .line{fill:none;stroke-width:1.7;stroke-linejoin:round;stroke-linecap:round}
.chart .ratio{stroke:var(--accent)}.chart .likelihood{stroke:var(--like)}.chart .field{stroke:var(--field)}
.chart .threshold{stroke:var(--bad);stroke-dasharray:5 4;stroke-opacity:.8}
.chart .alert-mark line{stroke:var(--bad);stroke-opacity:.3;stroke-width:3}.chart .alert-mark path{fill:var(--bad)}
.chart .dot{fill:var(--bad);stroke:var(--card);stroke-width:1.5}.chart .over{fill:var(--bad)}
.chart text{font-size:11px;fill:var(--muted)}.chart .panel-label{font-size:12px;font-weight:600;fill:var(--ink)}
.chart .empty{font-size:13px}
.login{max-width:380px;margin:80px auto}.login input{width:100%;font:inherit;padding:8px;margin:8px 0 12px;
border:1px solid var(--line);border-radius:6px;background:var(--plot);color:var(--ink)}
"""

NAV = (("/", "Overview"), ("/alerts", "Alerts"), ("/nerve", "Nerve"))


def document(site, title, body, active="", refresh=False):
    """A whole page: the header (this machine, the sections) around `body`."""
    links = "".join(f'<a href="{path}"{" class=on" if path == active else ""}>{name}</a>' for path, name in NAV)
    badge = ' <span class="badge warn">read-only</span>' if site.read_only else ""
    meta_refresh = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if refresh else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">{meta_refresh}'
            f'<link rel="icon" href="data:,"><title>{esc(title)} · KIRI · {esc(site.host)}</title>'
            f'<style>{STYLE}</style></head><body>'
            f'<header class="top"><span class="brand">KIRI</span><span class="host">{esc(site.host)}</span>{badge}'
            f'<nav>{links}</nav></header><main>{body}</main></body></html>')


def range_toggle(span_name, path, **query):
    links = "".join(f'<a href="{esc(url(path, range=name, **query))}"{" class=on" if name == span_name else ""}>'
                    f'Last {name}</a>' for name in ("day", "week"))
    return f'<span class="toggle">{links}</span>'


def answer_form(site, alert, back):
    """Approve / Dismiss for an alert, as a POST form with the CSRF token; nothing when read-only."""
    if site.read_only:
        return ""
    return (f'<form class="answer" method="post" action="/alerts/{int(alert["id"])}/feedback">'
            f'<input type="hidden" name="csrf" value="{esc(site.csrf)}">'
            f'<input type="hidden" name="next" value="{esc(back)}">'
            f'<button class="approve" name="verdict" value="approve">Approve</button>'
            f'<button class="dismiss" name="verdict" value="dismiss">Dismiss</button></form>')


def answer_words(alert):
    if alert["feedback"]:
        verdict = alert["feedback"]["verdict"]
        return f'<span class="{"approved" if verdict == "approve" else "dismissed"}">{esc(verdict)}ed</span>'
    return '<span class="open">no answer</span>'


def alerts_table(site, alerts, back, now):
    if not alerts:
        return '<p class="muted">No alerts.</p>'
    rows = []
    for a in alerts:
        first_line = (a["message"].splitlines() or [""])[0]
        rows.append(f'<tr><td><a href="/alerts/{int(a["id"])}">#{int(a["id"])}</a></td>'
                    f'<td title="{esc(when(a["ts"]))}">{esc(status.ago(now - a["ts"]))}</td>'
                    f'<td>{esc(", ".join(alert_atoms(a)))}</td><td>{esc(first_line)}</td>'
                    f'<td>{answer_words(a)}</td><td>{answer_form(site, a, back)}</td></tr>')
    return ('<table><tr><th>#</th><th>When</th><th>Atoms</th><th>What</th><th>Answer</th><th></th></tr>'
            + "".join(rows) + "</table>")


# -- charts of surprise ------------------------------------------------------------------

def ratio_top(ratios):
    """The top of a score ÷ threshold panel: room above the threshold line, at most RATIO_TOP_MOST."""
    peak = max((r for _, r in ratios), default=0.0)
    return 2.0 if peak <= 1.8 else min(RATIO_TOP_MOST, math.ceil(peak * 1.1))


def surprise_chart(name, view, span_name):
    """score ÷ threshold (the line at 1 is the threshold) and the likelihood (its alert level
    dashed), readings over the threshold dotted, alerts marked."""
    ratios = view["ratios"]
    over = [Dot(ts, r, f"{when(ts)}: {r:.2f}× the threshold", atom_url(name, at=f"{ts:.3f}", range=span_name))
            for ts, r in ratios if r > 1][-300:]
    panels = [Panel("score ÷ threshold", ratios, 0.0, ratio_top(ratios), line=1.0, line_label="the threshold",
                    dots=over, max_gap=view["max_gap"], kind="ratio", height=120),
              Panel("likelihood", view["likelihoods"], 0.0, 1.0, line=view["likelihood_alert"],
                    line_label="unusual above this", max_gap=view["max_gap"], kind="likelihood", height=56)]
    return chart(panels, view["since"], view["now"], alert_marks(view["alerts"]), title=f"{name}: surprise over time")


def alert_marks(alerts):
    return [Mark(a["ts"], f"alert #{a['id']}: {(a['message'].splitlines() or [''])[0]}", f"/alerts/{int(a['id'])}")
            for a in alerts]


LEGEND = ('<div class="legend"><span><i style="background:var(--accent)"></i>score ÷ threshold</span>'
          '<span><i style="background:var(--like)"></i>likelihood</span>'
          '<span><i style="background:var(--bad)"></i>threshold, alerts</span></div>')


# -- the overview ------------------------------------------------------------------------

def overview(site, view, span_name):
    info, now = view["status"], view["now"]
    daemon = info["daemon"]
    body = [f'<h1>{esc(info["host"])}</h1>']
    if info.get("database_damage"):
        body.append(f'<section class="card alerts-box"><b>Database damaged:</b> {esc(info["database_damage"])}. '
                    'What it holds cannot be trusted; <code>kiri check</code> says how to recover it.'
                    f'<p class="muted small">daemon: {esc(status.describe_daemon(daemon, now))}</p></section>')
        return document(site, "Overview", "".join(body), active="/", refresh=True)
    open_alerts = [a for a in view["alerts"] if not a["feedback"]]
    counts = view["nerve"]
    body.append('<section class="cards">'
                + card("Daemon", f'<span class="{esc(daemon["state"])}">{esc(daemon["state"])}</span>',
                       status.describe_daemon(daemon, now))
                + card("Open alerts", str(len(info.get("pending_alerts") or [])),
                       f"{len(view['alerts'])} in the last {span_name}, {len(open_alerts)} unanswered")
                + card("Nerve", "model" if counts["trained"] else "rule",
                       f"{counts['decisions']} decisions, {counts['answered']} answered")
                + card("Database", f"{info['db_bytes'] / 1e6:.1f} MB", info["home"])
                + "</section>")
    body.append(cycle_errors(info))
    body.append(f'<div class="toolbar"><h2>Surprise per atom</h2>{range_toggle(span_name, "/")}</div>')
    for name, atom in view["atoms"].items():
        body.append(atom_card(name, atom, view, span_name, now))
    body.append(f'<div class="toolbar"><h2>Alerts in the last {span_name}</h2><a href="/alerts">all alerts</a></div>'
                f'<section class="card">{alerts_table(site, view["alerts"][:10], "/", now)}</section>')
    return document(site, "Overview", "".join(body), active="/", refresh=True)


def card(label, big, small):
    return (f'<div class="card"><div class="label">{esc(label)}</div><div class="big">{big}</div>'
            f'<div class="muted small">{esc(small)}</div></div>')


def cycle_errors(info):
    cycle = info.get("last_cycle") or {}
    errors = cycle.get("errors") or []
    if not errors:
        return ""
    items = "".join(f"<li>{esc(pipe)} {esc(stage)}: {esc(error)}</li>" for pipe, stage, error in errors[:10])
    return f'<section class="card alerts-box"><h2>The last cycle had errors</h2><ul class="errors">{items}</ul></section>'


def verdict_line(last, now):
    """'anomaly · score 7.71 · 4.28× threshold · likelihood 0.12 · 3 min ago' of a status' last_score."""
    parts = [f"score {last['score']:.3f}"]
    if last.get("ratio") is not None:
        parts.append(f"{last['ratio']:.2f}× threshold")
    if last.get("likelihood") is not None:
        parts.append(f"likelihood {last['likelihood']:.2f}")
    parts.append(status.ago(now - last["ts"]))
    return (f'<span class="badge {esc(last["verdict"])}">{esc(last["verdict"])}</span> '
            f'<span class="muted small">{esc(" · ".join(parts))}</span>')


def atom_card(name, atom, view, span_name, now):
    elsewhere = f' <span class="muted small">on {esc(atom["host"])}</span>' \
        if atom.get("host") not in (None, view["status"]["host"]) else ""
    head = (f'<header><h3><a href="{esc(atom_url(name, range=span_name))}">{esc(name)}</a>{elsewhere}</h3>'
            f'<span class="badge {esc(atom["phase"])}">{esc(atom["phase"])}</span>')
    if atom.get("last_score"):
        head += verdict_line(atom["last_score"], now)
    head += "</header>"
    notes = []
    if atom.get("weights_error"):
        notes.append(f"weights unusable: {atom['weights_error']}")
    if atom.get("source"):
        notes.append(f"source unavailable: {atom['source']}")
    if atom["phase"] == "cold":
        notes.append(f"collecting: {atom['readings_to_go']} readings to go before it learns")
    note = "".join(f'<p class="muted small">{esc(n)}</p>' for n in notes)
    graph = ""
    if atom["ratios"] or atom["trained"]:
        graph = LEGEND + surprise_chart(name, dict(view, **atom), span_name)
    return f'<section class="card atom">{head}{note}{graph}</section>'


# -- an atom -----------------------------------------------------------------------------

def atom_page(site, view, span_name):
    name, spec, model, now = view["name"], view["spec"], view["model"], view["now"]
    head = f'<h1>{esc(name)} <span class="badge {esc(model["phase"])}">{esc(model["phase"])}</span></h1>'
    body = [head, model_cards(model, now)]
    body.append(f'<section class="card">{reading_section(view, spec, span_name)}</section>')
    body.append(f'<div class="toolbar"><h2>Over time</h2>{range_toggle(span_name, atom_url(name))}</div>')
    body.append(f'<section class="card"><h2>Surprise</h2>{LEGEND}{surprise_chart(name, view, span_name)}</section>')
    body.append(f'<section class="card"><h2>Readings</h2><p class="muted small">Each field\'s values; '
                f'a red dot is a token the model found surprising in a reading over the threshold '
                f'(click it for its explanation).</p>{fields_chart(view, spec, span_name)}</section>')
    return document(site, name, "".join(body), refresh=view["reading"] is None or view["reading"]["latest"])


def model_cards(model, now):
    if model.get("weights_error"):
        return f'<section class="card alerts-box">weights unusable: {esc(model["weights_error"])}</section>'
    if not model["trained"]:
        return (f'<section class="card">Not trained yet: {esc(model["readings_to_go"])} real readings to go '
                'before the daemon trains it.</section>')
    learned = model["learned_from"]
    window = "—"
    if model.get("from_ts") and model.get("to_ts"):
        window = f"{when(model['from_ts'])} → {when(model['to_ts'])}"
    threshold = "none" if model["threshold"] is None else f"{model['threshold']:.3f}"
    set_by = (model.get("threshold_info") or {}).get("set_by")
    rate = model.get("false_alarm_rate")
    trained = status.ago(now - model["trained_at"]) if model.get("trained_at") else "—"
    cards = [card("Model trained", trained, f"{model['steps']} steps"),
             card("Training window", f"{learned['real'] + learned['synthetic']:,} readings",
                  f"{window}; {learned['real']} real, {learned['synthetic']} synthetic"),
             card("Threshold", threshold, {"floor": "the floor: one unlikely token",
                                           "q99": "99th percentile of held-out scores"}.get(set_by, "")),
             card("Held-out false alarms", "—" if rate is None else f"{100 * rate:.1f} %",
                  "share of held-out real readings over the threshold")]
    note = f'<p class="muted small">weights: {esc(model["note"])}</p>' if model.get("note") else ""
    return '<section class="cards">' + "".join(cards) + "</section>" + note


def reading_section(view, spec, span_name):
    reading = view["reading"]
    if reading is None:
        return '<h2>The latest reading explained</h2><p class="muted">No scored reading yet.</p>'
    s = reading["score"]
    which = "<h2>The latest reading explained</h2>" if reading["latest"] else \
        (f'<h2>A chosen reading explained <a class="small" href="{esc(atom_url(view["name"], range=span_name))}">'
         'show the latest</a></h2>')
    ratio = f"{s.ratio:.2f}× the threshold" if math.isfinite(s.ratio) else "no threshold"
    threshold = f"{s.threshold:.3f}" if math.isfinite(s.threshold) else "none"
    facts = [f"score {s.score:.3f}", f"threshold {threshold}", ratio,
             "read after the reading before it" if s.context else "read on its own"]
    if s.likelihood is not None:
        facts.append(f"likelihood {s.likelihood:.2f}")
    head = (f'{which}<p>{esc(when(reading["ts"]))}: <span class="badge {esc(s.verdict)}">{esc(s.verdict)}</span> '
            f'<span class="muted small">{esc(" · ".join(facts))}</span></p>')
    clamped = f'<p class="muted small">clamped to the edge bucket: {esc(", ".join(s.clamped))}</p>' if s.clamped else ""
    return head + explanation_table(s, spec.labels) + clamped


def explanation_table(score, labels):
    """Token by token: what came, how surprising it was, what the model expected."""
    peak = max((t.get("surprise") or 0.0 for t in score.tokens), default=0.0) or 1.0
    rows = []
    for t in score.tokens:
        label = labels.get(t.get("field")) or (t.get("field") or "", "")
        surprise = t.get("surprise") or 0.0
        bar = f'<span class="bar" style="width:{60 * min(surprise / peak, 1.0):.0f}px"></span>' if surprise > 0.05 else ""
        rows.append(f'<tr class="{"off" if score.is_surprising(t) else ""}">'
                    f'<td>{esc(label[0])}</td><td class="token">{esc(t.get("token"))}</td>'
                    f'<td>{esc(value_words(t.get("value"), label))}</td>'
                    f'<td class="num">{surprise:.2f}{bar}</td>'
                    f'<td>{esc(t.get("expected") or "")}</td><td>{esc(range_words(t.get("expected_range"), label))}</td>'
                    f'<td class="num">{probability(t.get("p"))}</td><td class="num">{probability(t.get("p_expected"))}</td></tr>')
    return ('<table><tr><th>Field</th><th>Token</th><th>Value</th><th class="num">Surprise (nats)</th>'
            '<th>Expected</th><th>Usually</th><th class="num">p</th><th class="num">p expected</th></tr>'
            + "".join(rows) + "</table>")


def probability(p):
    return "" if p is None else f"{p:.2f}"


def value_words(value, label):
    """95 with ("CPU", "%") -> '95%'; 1 with ("network", "", {0: "down", 1: "up"}) -> 'up'."""
    if value is None:
        return ""
    states = label[2] if len(label) > 2 else {}
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    if value in states:
        return states[value]
    text = f"{value:.0f}" if value == int(value) or abs(value) >= 100 else f"{value:.1f}"
    return text + label[1] if len(label) > 1 else text


def range_words(expected_range, label):
    if not expected_range:
        return ""
    low, high = expected_range
    states = label[2] if len(label) > 2 else {}
    if states:
        return states.get(math.ceil(low), "")
    return f"{value_words(low, (label[0], ''))}–{value_words(high, label)}"


def fields_chart(view, spec, span_name):
    """One panel per field the atom judges, its raw values; surprising tokens of the readings
    over the threshold dotted and linked to their explanation."""
    panels = []
    for field in view["fields"]:
        label = spec.labels.get(field) or (field, "")
        points = [(o["ts"], float(o["values"][field])) for o in view["observations"]
                  if isinstance(o["values"].get(field), (int, float))]
        low, high = field_range(spec.schema[field], points)
        dots = [Dot(ts, float(t["value"]), f"{when(ts)}: {label[0]} {value_words(t['value'], label)} "
                                           f"({t['token']}, expected {t.get('expected')})",
                    atom_url(view["name"], at=f"{ts:.3f}", range=span_name))
                for ts, s in zip(view["anomaly_ts"], view["anomalies"])
                for t in s.surprising() if t.get("field") == field and isinstance(t.get("value"), (int, float))]
        states = label[2] if len(label) > 2 else {}
        unit = f" ({label[1].strip()})" if len(label) > 1 and label[1].strip() else ""
        panels.append(Panel(f"{label[0]}{unit}", points, low, high, dots=dots[-300:], max_gap=view["max_gap"],
                            kind="field", height=72, tick_labels={float(k): v for k, v in states.items()}))
    if not panels:
        return '<p class="muted">This atom has no fields to show.</p>'
    return chart(panels, view["since"], view["now"], alert_marks(view["alerts"]), title=f"{view['name']}: readings")


def field_range(schema_entry, points):
    """The y range of a field: its schema's range (0–100 for CPU %), widened to what came."""
    values = [v for _, v in points]
    if isinstance(schema_entry, (tuple, list)) and len(schema_entry) >= 2:
        low, high = float(schema_entry[0]), float(schema_entry[1])
    elif values:
        low, high = min(values), max(values)
    else:
        low, high = 0.0, 1.0
    low, high = min([low] + values), max([high] + values)
    return (low, high) if high > low else (low - 1.0, high + 1.0)


# -- alerts ------------------------------------------------------------------------------

def alerts_page(site, view, now):
    body = (f'<h1>Alerts</h1><section class="card">{alerts_table(site, view["alerts"], "/alerts", now)}</section>'
            f'<p class="muted small">Approve if it mattered; Dismiss if not, and Nerve learns to keep quiet '
            'about ones like it. A second answer replaces the first.</p>')
    return document(site, "Alerts", body, active="/alerts", refresh=True)


def alert_page(site, view, now):
    a, labels = view["alert"], view["labels"]
    here = f"/alerts/{int(a['id'])}"
    host = a["details"].get("host") or site.host
    seen = f", last seen {esc(when(a['last_ts']))}" if a["last_ts"] != a["ts"] else ""
    body = [f'<h1>Alert #{int(a["id"])} <span class="badge {esc(a["state"])}">{esc(a["state"])}</span></h1>',
            f'<section class="card"><p>On <b>{esc(host)}</b>, {esc(when(a["ts"]))}{seen}. '
            f'About: {esc(situation_words(a["situation"], labels))}.</p>'
            f'<p>Your answer: {answer_words(a)} {answer_form(site, a, here)}</p>'
            f'<pre class="message">{esc(a["message"])}</pre></section>']
    for s in view["scores"]:
        link = atom_url(s.atom, at=f"{a['ts']:.3f}", range="day")
        ratio = f"{s.ratio:.2f}× the threshold" if math.isfinite(s.ratio) else "no threshold"
        body.append(f'<section class="card"><h2><a href="{esc(link)}">{esc(s.atom)}</a> '
                    f'<span class="badge {esc(s.verdict)}">{esc(s.verdict)}</span> '
                    f'<span class="muted small">score {s.score:.3f} · {esc(ratio)}</span></h2>'
                    f'{explanation_table(s, labels.get(s.atom) or {})}</section>')
    return document(site, f"Alert #{int(a['id'])}", "".join(body), active="/alerts")


DIRECTIONS = {">": "higher", "<": "lower", "!": "other"}


def situation_words(situation, labels):
    """'pulse:C>+M>' -> 'pulse: CPU higher, memory higher than expected'."""
    parts = []
    for part in (situation or "").split(","):
        atom, _, fields = part.partition(":")
        names = labels.get(atom) or {}
        words = [f"{(names.get(f[:-1]) or (f[:-1],))[0]} {DIRECTIONS.get(f[-1], f[-1])}"
                 for f in fields.split("+") if len(f) > 1]
        parts.append(f"{atom}: {', '.join(words)} than expected" if words else f"{atom}: unusual together")
    return "; ".join(parts) or "unknown"


# -- Nerve -------------------------------------------------------------------------------

def nerve_page(site, view, now):
    counts, labels = view["counts"], view["labels"]
    mode = "model" if counts["trained"] and counts["ready"] else "rule"
    body = [f'<h1>Nerve <span class="badge {"good" if mode == "model" else "cold"}">{mode}</span></h1>',
            '<section class="cards">'
            + card("Decides by", "its model" if mode == "model" else "the rule",
                   "picks alert or suppress for what the rule flags" if mode == "model"
                   else "alert when an atom is over its threshold")
            + card("Decisions stored", f"{counts['decisions']:,}", f"the model needs {counts['need_decisions']}")
            + card("Answers", f"{counts['answered']:,}", f"the model needs {counts['need_answers']}")
            + card("Keeps quiet", f"≥ {100 * view['confidence']:.0f} % sure", "and only about what you dismissed")
            + "</section>"]
    rows = "".join(f'<tr><td>{esc(situation_words(q["situation"], labels))}</td><td class="num">{q["count"]}</td>'
                   f'<td><a href="/alerts/{int(q["alert"]["id"])}">#{int(q["alert"]["id"])}</a> '
                   f'{esc(when(q["alert"]["ts"]))}</td></tr>' for q in view["quiet"])
    body.append('<section class="card"><h2>What it may keep quiet about</h2>'
                '<p class="muted small">Situations like an alert you dismissed: once its model decides, Nerve may '
                'silence these, and nothing else.</p>'
                + (f'<table><tr><th>Situation (you dismissed it)</th><th class="num">Times</th><th>Newest</th></tr>{rows}</table>'
                   if rows else '<p class="muted">Nothing yet: dismiss an alert and Nerve learns to keep quiet '
                                'about ones like it.</p>')
                + "</section>")
    if view["suppressed"]:
        body.append('<section class="card"><h2>Alerts it kept quiet</h2>'
                    + decisions_table(view["suppressed"], view["prefixes"]) + "</section>")
    rows = "".join(f'<tr><td><a href="/alerts/{int(a["id"])}">#{int(a["id"])}</a></td>'
                   f'<td>{answer_words(a)}</td><td>{esc(when(a["feedback"]["ts"]))}</td>'
                   f'<td>{esc(situation_words(a["situation"], labels))}</td></tr>' for a in view["answers"])
    body.append('<section class="card"><h2>Your answers</h2>'
                + (f'<table><tr><th>Alert</th><th>Answer</th><th>When</th><th>About</th></tr>{rows}</table>'
                   if rows else '<p class="muted">No answers yet.</p>') + "</section>")
    body.append('<section class="card"><h2>Recent decisions</h2>'
                + (decisions_table(view["decisions"], view["prefixes"]) if view["decisions"]
                   else '<p class="muted">No decisions yet: the daemon makes one each cycle with a new reading.</p>')
                + "</section>")
    return document(site, "Nerve", "".join(body), active="/nerve", refresh=True)


def decisions_table(decisions, prefixes):
    rows = []
    for d in decisions:
        p = "" if d.get("probability") is None else f"{d['probability']:.2f}"
        repeat = f'<a href="/alerts/{int(d["repeat_of"])}">#{int(d["repeat_of"])}</a>' if d.get("repeat_of") else ""
        rows.append(f'<tr><td>{esc(when(d["ts"]))}</td><td>{esc(state_words(d["state"], prefixes))}</td>'
                    f'<td><span class="badge {esc(action_class(d["action"]))}">{esc(d["action"])}</span></td>'
                    f'<td>{esc(d["source"])}</td><td class="num">{p}</td><td>{repeat}</td></tr>')
    return ('<table><tr><th>When</th><th>State (score ÷ threshold)</th><th>Action</th><th>By</th>'
            '<th class="num">p</th><th>Repeat of</th></tr>' + "".join(rows) + "</table>")


def action_class(action):
    return {"alert": "anomaly", "suppress": "unusual", "ok": "normal"}.get(action, "cold")


def state_words(state, prefixes):
    """{'P': 2.31, 'R': None, 'U': 0.4, 'H': 14.5, 'W': 1} -> 'pulse 2.31× · rhythm — · likelihood 0.40×'
    (the likelihood relative to its alert level, as Nerve reads it)."""
    words = []
    for key in [k for k in prefixes if k in state] + [k for k in state if k not in prefixes and k not in ("H", "W")]:
        value = state[key]
        name = "likelihood" if key == "U" else prefixes.get(key, key)
        words.append(f"{name} {'—' if value is None else f'{value:.2f}×'}")
    return " · ".join(words)


# -- the rest ----------------------------------------------------------------------------

def login_page(site, back, wrong=False):
    warning = '<p class="bad">That token is not the one in config.ini.</p>' if wrong else ""
    body = (f'<section class="card login"><h2>Sign in</h2>{warning}'
            f'<p class="muted small">This dashboard asks for its access token (<code>web_token</code>).</p>'
            f'<form method="post" action="/login"><input type="hidden" name="csrf" value="{esc(site.csrf)}">'
            f'<input type="hidden" name="next" value="{esc(back)}">'
            f'<input type="password" name="token" autocomplete="current-password" autofocus aria-label="access token">'
            f'<button type="submit">Sign in</button></form></section>')
    return document(site, "Sign in", body)


def error_page(site, code, message):
    body = (f'<section class="card"><h1>{int(code)}</h1><p>{esc(message)}</p>'
            f'<p><a href="/">Back to the overview</a></p></section>')
    return document(site, str(code), body)
