//! Monthly (or any range) reports computed from the audit log: payments approved and refused by
//! count and amount, by destination, by rule tag, approvals by admin, time to approval, daily
//! volume against the daily limit, channels opened and closed with the capacity held each day,
//! and the routing fees paid (what left the channels beyond the invoice amounts). The report is only as trustworthy as the chain it is
//! computed from, so callers verify the chain first.

use super::AuditRecord;
use crate::policy::units::format_msat;
use serde::Serialize;
use std::collections::BTreeMap;

/// Count and amount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Payments.
    pub count: u64,
    /// Msat.
    pub amount_msat: u64,
}

impl Tally {
    fn add(&mut self, amount: u64) {
        self.count += 1;
        self.amount_msat = self.amount_msat.saturating_add(amount);
    }
}

/// The report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// First second covered.
    pub since: u64,
    /// First second not covered.
    pub until: u64,
    /// Approved payments.
    pub approved: Tally,
    /// Refused payments.
    pub refused: Tally,
    /// Payments held for a quorum (each hold counted once per request).
    pub held: Tally,
    /// Approved by destination.
    pub by_destination: BTreeMap<String, Tally>,
    /// Refused or held, by rule tag.
    pub by_rule: BTreeMap<String, Tally>,
    /// Admin signatures, by admin and decision.
    pub approvals_by_admin: BTreeMap<String, BTreeMap<String, u64>>,
    /// Seconds from hold to quorum, for requests approved in the range.
    pub time_to_approval_secs: Vec<u64>,
    /// Approved volume per UTC day ("YYYY-MM-DD" → msat).
    pub daily_volume: BTreeMap<String, u64>,
    /// The daily limit the chart compares against, if the policy has one.
    pub daily_limit_msat: Option<u64>,
    /// Channels whose funding was signed in the range (capacity).
    pub channels_opened: Tally,
    /// Channels that started closing in the range (capacity).
    pub channels_closed: Tally,
    /// Capacity in channels at the end of each UTC day of the range, from every channel
    /// opened and closed since the log began ("YYYY-MM-DD" → msat).
    pub capacity_by_day: BTreeMap<String, u64>,
    /// Capacity in channels when the range begins, msat.
    pub capacity_at_start_msat: u64,
    /// Outgoing payments settled in the range, with their routing fees (count, fee msat).
    pub fees: Tally,
    /// What those payments sent, msat (invoice amounts plus fees).
    pub fees_sent_msat: u64,
}

impl Report {
    /// The highest daily volume as a fraction of the daily limit.
    pub fn peak_daily_utilization(&self) -> Option<f64> {
        let limit = self.daily_limit_msat.filter(|l| *l > 0)? as f64;
        self.daily_volume
            .values()
            .map(|v| *v as f64 / limit)
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
    }

    /// Median seconds to approval.
    pub fn median_time_to_approval(&self) -> Option<u64> {
        let mut v = self.time_to_approval_secs.clone();
        v.sort_unstable();
        v.get(v.len() / 2).copied()
    }
}

fn day(t: u64) -> String {
    crate::clock::format_utc(t)[..10].to_string()
}

/// Compute the report over records with `since <= time < until`.
pub fn compute(
    records: &[AuditRecord],
    since: u64,
    until: u64,
    daily_limit_msat: Option<u64>,
) -> Report {
    let mut r = Report {
        since,
        until,
        daily_limit_msat,
        ..Default::default()
    };
    let mut held_at: BTreeMap<String, u64> = BTreeMap::new();
    // (time, capacity change) of every channel open and close, from the log's start.
    let mut capacity_changes: Vec<(u64, i128)> = Vec::new();
    for rec in records {
        let d = &rec.data;
        if rec.kind == "channel" {
            let capacity = d["capacity_msat"].as_u64().unwrap_or(0);
            let opened = d["action"] == "open";
            capacity_changes.push((
                rec.time,
                if opened {
                    i128::from(capacity)
                } else {
                    -i128::from(capacity)
                },
            ));
            if (since..until).contains(&rec.time) {
                if opened {
                    r.channels_opened.add(capacity);
                } else {
                    r.channels_closed.add(capacity);
                }
            }
        }
        // Holds are remembered from before the range so time-to-approval is right at its start.
        if rec.kind == "event" && d["event"] == "request-created" {
            if let Some(id) = d["request_id"].as_str() {
                held_at.insert(id.to_string(), rec.time);
            }
        }
        if rec.time < since || rec.time >= until {
            continue;
        }
        let amount = d["amount_msat"].as_u64().unwrap_or(0);
        match rec.kind.as_str() {
            "decision" => {
                let tags = strings(&d["tags"]);
                match d["verdict"].as_str() {
                    Some("approve") => {
                        r.approved.add(amount);
                        *r.daily_volume.entry(day(rec.time)).or_default() += amount;
                        for dest in d["destinations"].as_array().into_iter().flatten() {
                            let name = dest["destination"].as_str().unwrap_or("?").to_string();
                            r.by_destination
                                .entry(name)
                                .or_default()
                                .add(dest["amount_msat"].as_u64().unwrap_or(0));
                        }
                    }
                    Some("deny") => {
                        r.refused.add(amount);
                        for t in tags {
                            r.by_rule.entry(t).or_default().add(amount);
                        }
                    }
                    // Holds are counted once per request, from its request-created event:
                    // a retried payment is evaluated again before its approval is used.
                    _ => {}
                }
            }
            "event" if d["event"] == "request-created" => {
                r.held.add(amount);
                for t in d["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str())
                {
                    r.by_rule.entry(t.to_string()).or_default().add(amount);
                }
            }
            "event" if d["event"] == "payment-refused" => {
                // Refusals outside the policy pipeline (VLS rules, capacity, malformed input).
                let tags = strings(&d["tags"]);
                if tags
                    .iter()
                    .any(|t| t.starts_with("policy-") || t.starts_with("warden-"))
                {
                    r.refused.add(amount);
                    for t in tags {
                        r.by_rule.entry(t).or_default().add(amount);
                    }
                }
            }
            "payment-settled" => {
                r.fees.add(d["fee_msat"].as_u64().unwrap_or(0));
                r.fees_sent_msat = r
                    .fees_sent_msat
                    .saturating_add(d["sent_msat"].as_u64().unwrap_or(0));
            }
            "approval" | "rejection" => {
                let admin = d["admin"].as_str().unwrap_or("?").to_string();
                *r.approvals_by_admin
                    .entry(admin)
                    .or_default()
                    .entry(rec.kind.clone())
                    .or_default() += 1;
                if d["state"] == "approved" {
                    if let Some(start) = d["request_id"].as_str().and_then(|id| held_at.get(id)) {
                        r.time_to_approval_secs
                            .push(rec.time.saturating_sub(*start));
                    }
                }
            }
            _ => {}
        }
    }
    let held_before = |t: u64| -> u64 {
        let sum: i128 = capacity_changes
            .iter()
            .filter(|(at, _)| *at < t)
            .map(|(_, c)| c)
            .sum();
        u64::try_from(sum.max(0)).unwrap_or(u64::MAX)
    };
    r.capacity_at_start_msat = held_before(since);
    for (day_start, _) in days(since, until) {
        let end = (day_start + 86_400).min(until);
        r.capacity_by_day.insert(day(day_start), held_before(end));
    }
    r
}

/// Every UTC day that overlaps `[since, until)`: its first second and its date.
fn days(since: u64, until: u64) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut t = since - since % 86_400;
    while t < until && out.len() < 3_660 {
        out.push((t, day(t)));
        t += 86_400;
    }
    out
}

/// A plain-text table.
pub fn render_table(r: &Report) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Warden report {} to {}\n",
        crate::clock::format_utc(r.since),
        crate::clock::format_utc(r.until)
    ));
    out.push_str(&format!(
        "approved   {:>8}  {:>24}\n",
        r.approved.count,
        format_msat(r.approved.amount_msat)
    ));
    out.push_str(&format!(
        "refused    {:>8}  {:>24}\n",
        r.refused.count,
        format_msat(r.refused.amount_msat)
    ));
    out.push_str(&format!(
        "held       {:>8}  {:>24}\n",
        r.held.count,
        format_msat(r.held.amount_msat)
    ));
    if let Some(m) = r.median_time_to_approval() {
        out.push_str(&format!(
            "median time to approval: {m} s over {} approved requests\n",
            r.time_to_approval_secs.len()
        ));
    }
    if let Some(p) = r.peak_daily_utilization() {
        out.push_str(&format!(
            "peak daily volume: {:.1} % of the daily limit\n",
            p * 100.0
        ));
    }
    // Rule tags are short; destinations are whole node ids or addresses.
    for (title, tallies, width) in [
        ("by rule (refused or held):", &r.by_rule, 32),
        ("by destination (approved):", &r.by_destination, 80),
    ] {
        out.push_str(title);
        out.push('\n');
        for (k, v) in tallies {
            out.push_str(&format!(
                "  {k:<width$} {:>6}  {:>24}\n",
                v.count,
                format_msat(v.amount_msat)
            ));
        }
    }
    out.push_str(&format!(
        "channels: {} opened ({}), {} closing ({}); capacity {} at the start, {} at the end\n",
        r.channels_opened.count,
        format_msat(r.channels_opened.amount_msat),
        r.channels_closed.count,
        format_msat(r.channels_closed.amount_msat),
        format_msat(r.capacity_at_start_msat),
        format_msat(
            r.capacity_by_day
                .values()
                .last()
                .copied()
                .unwrap_or(r.capacity_at_start_msat)
        ),
    ));
    out.push_str(&format!(
        "routing fees paid: {} over {} settled payments ({} sent)\n",
        format_msat(r.fees.amount_msat),
        r.fees.count,
        format_msat(r.fees_sent_msat)
    ));
    out.push_str("admin signatures:\n");
    for (a, m) in &r.approvals_by_admin {
        out.push_str(&format!(
            "  {a:<16} {} approvals, {} rejections\n",
            m.get("approval").unwrap_or(&0),
            m.get("rejection").unwrap_or(&0)
        ));
    }
    out
}

/// CSV: one section per table, `section,key,count,amount_msat`.
pub fn render_csv(r: &Report) -> String {
    let mut out = String::from("section,key,count,amount_msat\n");
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    out.push_str(&format!(
        "total,approved,{},{}\n",
        r.approved.count, r.approved.amount_msat
    ));
    out.push_str(&format!(
        "total,refused,{},{}\n",
        r.refused.count, r.refused.amount_msat
    ));
    out.push_str(&format!(
        "total,held,{},{}\n",
        r.held.count, r.held.amount_msat
    ));
    for (section, tallies) in [("rule", &r.by_rule), ("destination", &r.by_destination)] {
        for (k, v) in tallies {
            out.push_str(&format!(
                "{section},{},{},{}\n",
                q(k),
                v.count,
                v.amount_msat
            ));
        }
    }
    for (k, v) in &r.daily_volume {
        out.push_str(&format!("day,{k},,{v}\n"));
    }
    for (k, t) in [
        ("opened", r.channels_opened),
        ("closing", r.channels_closed),
    ] {
        out.push_str(&format!("channels,{k},{},{}\n", t.count, t.amount_msat));
    }
    for (k, v) in &r.capacity_by_day {
        out.push_str(&format!("capacity,{k},,{v}\n"));
    }
    out.push_str(&format!(
        "fees,routing,{},{}\n",
        r.fees.count, r.fees.amount_msat
    ));
    for (a, m) in &r.approvals_by_admin {
        for (d, n) in m {
            out.push_str(&format!("admin,{},{n},\n", q(&format!("{a}:{d}"))));
        }
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn bar_chart(
    id: &str,
    title: &str,
    bars: &[(String, f64, String)],
    limit: Option<(f64, String)>,
) -> String {
    let (w, h, pad, foot) = (640.0, 260.0, 30.0, 40.0);
    let max = bars
        .iter()
        .map(|b| b.1)
        .fold(limit.as_ref().map(|l| l.0).unwrap_or(0.0), f64::max)
        .max(1.0);
    let n = bars.len().max(1) as f64;
    let bw = (w - 2.0 * pad) / n;
    let plot = h - pad - foot;
    let mut svg = format!(
        "<svg id=\"{id}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\" font-family=\"sans-serif\" font-size=\"11\"><title>{}</title>",
        esc(title),
        esc(title)
    );
    svg.push_str(&format!(
        "<line x1=\"{pad}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#333\"/>",
        w - pad,
        pad + plot,
        pad + plot
    ));
    // With many bars (a month's days) only some carry their labels, and empty ones none.
    let every = if bars.len() > 16 { 5 } else { 1 };
    for (i, (label, v, shown)) in bars.iter().enumerate() {
        let bh = v / max * plot;
        let x = pad + i as f64 * bw;
        let bar_w = (bw * 0.7).max(1.0);
        let cx = x + bar_w / 2.0;
        svg.push_str(&format!(
            "<rect class=\"bar\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar_w:.1}\" height=\"{bh:.1}\" fill=\"#3b6ea5\"><title>{}: {}</title></rect>",
            pad + plot - bh,
            esc(label),
            esc(shown)
        ));
        if *v > 0.0 && bars.len() <= 16 {
            svg.push_str(&format!(
                "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                pad + plot - bh - 4.0,
                esc(shown)
            ));
        }
        if i % every == 0 || i + 1 == bars.len() {
            svg.push_str(&format!(
                "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                pad + plot + 16.0,
                esc(label)
            ));
        }
    }
    if let Some((l, shown)) = limit {
        let y = pad + plot - l / max * plot;
        svg.push_str(&format!(
            "<line class=\"limit\" x1=\"{pad}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#c0392b\" stroke-dasharray=\"4\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#c0392b\">daily limit {}</text>",
            w - pad,
            w - pad,
            y - 4.0,
            esc(&shown)
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// A self-contained HTML page with inline SVG charts; prints as it shows.
pub fn render_html(r: &Report) -> String {
    // Every day of the range, so the chart's width is the month's (an empty day is no bar).
    let daily: Vec<(String, f64, String)> = days(r.since, r.until)
        .into_iter()
        .map(|(_, d)| {
            let v = r.daily_volume.get(&d).copied().unwrap_or(0);
            (d[8..].to_string(), v as f64, format_msat(v))
        })
        .collect();
    let capacity: Vec<(String, f64, String)> = r
        .capacity_by_day
        .iter()
        .map(|(d, v)| (d[8..].to_string(), *v as f64, format_msat(*v)))
        .collect();
    let mut destinations = String::new();
    for (d, v) in &r.by_destination {
        destinations.push_str(&format!(
            "<tr><td class=\"dest\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(d),
            v.count,
            esc(&format_msat(v.amount_msat))
        ));
    }
    let channels = format!(
        "<table id=\"channels\"><tr><th></th><th>count</th><th>capacity</th></tr>\
<tr><td>opened</td><td>{}</td><td>{}</td></tr><tr><td>closing</td><td>{}</td><td>{}</td></tr>\
<tr><td>held at the start</td><td></td><td>{}</td></tr></table>\
<p id=\"fees\">Routing fees paid: {} over {} settled payments ({} sent).</p>",
        r.channels_opened.count,
        esc(&format_msat(r.channels_opened.amount_msat)),
        r.channels_closed.count,
        esc(&format_msat(r.channels_closed.amount_msat)),
        esc(&format_msat(r.capacity_at_start_msat)),
        esc(&format_msat(r.fees.amount_msat)),
        r.fees.count,
        esc(&format_msat(r.fees_sent_msat)),
    );
    let rules: Vec<(String, f64, String)> = r
        .by_rule
        .iter()
        .map(|(t, v)| (t.clone(), v.count as f64, v.count.to_string()))
        .collect();
    let mut rows = String::new();
    for (t, v) in &r.by_rule {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(t),
            v.count,
            esc(&format_msat(v.amount_msat))
        ));
    }
    let mut admins = String::new();
    for (a, m) in &r.approvals_by_admin {
        admins.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(a),
            m.get("approval").unwrap_or(&0),
            m.get("rejection").unwrap_or(&0)
        ));
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Warden report</title>\
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #999;padding:4px 8px;white-space:nowrap}}td.dest{{white-space:normal;word-break:break-all}}</style></head><body>\
<h1>Warden report</h1><p>{} to {}</p>\
<table id=\"totals\"><tr><th></th><th>count</th><th>amount</th></tr>\
<tr><td>approved</td><td data-count=\"{}\">{}</td><td data-msat=\"{}\">{}</td></tr>\
<tr><td>refused</td><td data-count=\"{}\">{}</td><td data-msat=\"{}\">{}</td></tr>\
<tr><td>held</td><td data-count=\"{}\">{}</td><td data-msat=\"{}\">{}</td></tr></table>\
<h2>Daily volume against the daily limit</h2>{}\
<h2>Refusals and holds by rule</h2>{}<table id=\"rules\"><tr><th>rule</th><th>count</th><th>amount</th></tr>{rows}</table>\
<h2>Approved by destination</h2><table id=\"destinations\"><tr><th>destination</th><th>count</th><th>amount</th></tr>{destinations}</table>\
<h2>Channels</h2>{channels}<h3>Capacity in channels at the end of each day</h3>{}\
<h2>Admin signatures</h2><table id=\"admins\"><tr><th>admin</th><th>approvals</th><th>rejections</th></tr>{admins}</table>\
</body></html>\n",
        esc(&crate::clock::format_utc(r.since)),
        esc(&crate::clock::format_utc(r.until)),
        r.approved.count,
        r.approved.count,
        r.approved.amount_msat,
        esc(&format_msat(r.approved.amount_msat)),
        r.refused.count,
        r.refused.count,
        r.refused.amount_msat,
        esc(&format_msat(r.refused.amount_msat)),
        r.held.count,
        r.held.count,
        r.held.amount_msat,
        esc(&format_msat(r.held.amount_msat)),
        bar_chart(
            "daily-volume",
            "Approved volume per day and the daily limit",
            &daily,
            r.daily_limit_msat.map(|l| (l as f64, format_msat(l)))
        ),
        bar_chart("refusals-by-rule", "Refusals and holds by rule", &rules, None),
        bar_chart(
            "capacity-by-day",
            "Capacity in channels at the end of each day",
            &capacity,
            None
        ),
    )
}

/// `2026-11` → (first second of the month, first second of the next).
pub fn month_range(month: &str) -> Result<(u64, u64), String> {
    let (y, m) = month
        .split_once('-')
        .ok_or_else(|| format!("\"{month}\" is not YYYY-MM"))?;
    let y: i64 = y
        .parse()
        .map_err(|_| format!("\"{month}\" is not YYYY-MM"))?;
    let m: u32 = m
        .parse()
        .map_err(|_| format!("\"{month}\" is not YYYY-MM"))?;
    if !(1..=12).contains(&m) || y < 1970 {
        return Err(format!("\"{month}\" is not a month after 1970"));
    }
    let start = days_from_civil(y, m, 1) * 86_400;
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    Ok((start as u64, (days_from_civil(ny, nm, 1) * 86_400) as u64))
}

/// `2026-11-25` → Unix seconds at 00:00 UTC.
pub fn date_start(date: &str) -> Result<u64, String> {
    let parts: Vec<&str> = date.split('-').collect();
    let bad = || format!("\"{date}\" is not YYYY-MM-DD");
    if parts.len() != 3 {
        return Err(bad());
    }
    let y: i64 = parts[0].parse().map_err(|_| bad())?;
    let m: u32 = parts[1].parse().map_err(|_| bad())?;
    let d: u32 = parts[2].parse().map_err(|_| bad())?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1970 {
        return Err(bad());
    }
    Ok((days_from_civil(y, m, d) * 86_400) as u64)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The strings of a JSON array (a record's rule tags); anything else is no strings.
fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(time: u64, kind: &str, data: serde_json::Value) -> AuditRecord {
        AuditRecord {
            v: 1,
            seq: 0,
            time,
            kind: kind.into(),
            data,
            prev: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn channels_capacity_per_day_fees_and_a_chart_of_every_day() {
        let (since, until) = month_range("2026-11").unwrap();
        let day = 86_400;
        let open = |t, cap| {
            rec(
                t,
                "channel",
                serde_json::json!({"action": "open", "capacity_msat": cap}),
            )
        };
        let records = vec![
            // Before the month: a channel of 3,000,000 sat is already open.
            open(since - day, 3_000_000_000u64),
            open(since + 2 * day + 5, 5_000_000_000u64),
            rec(
                since + 9 * day,
                "channel",
                serde_json::json!({"action": "close", "capacity_msat": 3_000_000_000u64}),
            ),
            rec(
                since + 3 * day,
                "decision",
                serde_json::json!({"verdict": "approve", "amount_msat": 7_000, "destinations": [{"destination": "node 02ab", "amount_msat": 7_000}]}),
            ),
            rec(
                since + 4 * day,
                "payment-settled",
                serde_json::json!({"amount_msat": 100_000, "sent_msat": 101_000, "fee_msat": 1_000}),
            ),
            rec(
                since + 5 * day,
                "payment-settled",
                serde_json::json!({"amount_msat": 50_000, "sent_msat": 52_000, "fee_msat": 2_000}),
            ),
            // After the month: not in it.
            open(until + 1, 9_000_000_000u64),
        ];
        let r = compute(&records, since, until, Some(1_000_000));
        assert_eq!(
            r.channels_opened,
            Tally {
                count: 1,
                amount_msat: 5_000_000_000
            }
        );
        assert_eq!(
            r.channels_closed,
            Tally {
                count: 1,
                amount_msat: 3_000_000_000
            }
        );
        assert_eq!(r.capacity_at_start_msat, 3_000_000_000);
        assert_eq!(r.capacity_by_day.len(), 30, "every day of November");
        assert_eq!(r.capacity_by_day["2026-11-01"], 3_000_000_000);
        assert_eq!(r.capacity_by_day["2026-11-03"], 8_000_000_000);
        assert_eq!(r.capacity_by_day["2026-11-10"], 5_000_000_000);
        assert_eq!(r.capacity_by_day["2026-11-30"], 5_000_000_000);
        assert_eq!(
            r.fees,
            Tally {
                count: 2,
                amount_msat: 3_000
            }
        );
        assert_eq!(r.fees_sent_msat, 153_000);
        let text = render_table(&r);
        assert!(text.contains("channels: 1 opened (5,000,000 sat), 1 closing (3,000,000 sat); capacity 3,000,000 sat at the start, 5,000,000 sat at the end"), "{text}");
        assert!(
            text.contains("routing fees paid: 3 sat over 2 settled payments (153 sat sent)"),
            "{text}"
        );

        let html = render_html(&r);
        let dom = tl::parse(&html, tl::ParserOptions::default()).unwrap();
        let parser = dom.parser();
        let start = html.find("<svg id=\"daily-volume\"").unwrap();
        let chart = &html[start..start + html[start..].find("</svg>").unwrap()];
        let heights: Vec<f64> = chart
            .split("<rect class=\"bar\"")
            .skip(1)
            .map(|b| {
                let h = b.split(" height=\"").nth(1).unwrap();
                h[..h.find('"').unwrap()].parse().unwrap()
            })
            .collect();
        assert_eq!(heights.len(), 30, "one bar per day of the month");
        assert_eq!(
            heights.iter().filter(|h| **h > 0.0).count(),
            1,
            "{heights:?}"
        );
        assert!(heights[3] > 0.0, "the 4th holds the volume");
        assert!(dom.get_element_by_id("capacity-by-day").is_some());
        let dest = dom
            .get_element_by_id("destinations")
            .unwrap()
            .get(parser)
            .unwrap();
        assert!(dest.inner_text(parser).contains("node 02ab"));
        assert!(html.contains("Routing fees paid: 3 sat over 2 settled payments"));
    }

    #[test]
    fn month_and_date_ranges() {
        assert_eq!(
            month_range("2026-11").unwrap(),
            (1_793_491_200, 1_796_083_200)
        );
        assert_eq!(
            month_range("2026-12").unwrap().1,
            date_start("2027-01-01").unwrap()
        );
        assert!(month_range("2026-13").is_err());
        assert_eq!(date_start("2026-11-23").unwrap(), 1_795_392_000);
        assert!(date_start("yesterday").unwrap_err().contains("YYYY-MM-DD"));
    }
}
