//! Monthly (or any range) reports computed from the audit log: payments approved and refused by
//! count and amount, by destination, by rule tag, approvals by admin, time to approval, and
//! daily volume against the daily limit. The report is only as trustworthy as the chain it is
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
    for rec in records {
        let d = &rec.data;
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
    r
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
        svg.push_str(&format!(
            "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            pad + plot - bh - 4.0,
            esc(shown)
        ));
        svg.push_str(&format!(
            "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            pad + plot + 16.0,
            esc(label)
        ));
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
    let daily: Vec<(String, f64, String)> = r
        .daily_volume
        .iter()
        .map(|(d, v)| (d[5..].to_string(), *v as f64, format_msat(*v)))
        .collect();
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
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #999;padding:4px 8px}}</style></head><body>\
<h1>Warden report</h1><p>{} to {}</p>\
<table id=\"totals\"><tr><th></th><th>count</th><th>amount</th></tr>\
<tr><td>approved</td><td data-count=\"{}\">{}</td><td data-msat=\"{}\">{}</td></tr>\
<tr><td>refused</td><td data-count=\"{}\">{}</td><td data-msat=\"{}\">{}</td></tr>\
<tr><td>held</td><td data-count=\"{}\">{}</td><td data-msat=\"{}\">{}</td></tr></table>\
<h2>Daily volume against the daily limit</h2>{}\
<h2>Refusals and holds by rule</h2>{}<table id=\"rules\"><tr><th>rule</th><th>count</th><th>amount</th></tr>{rows}</table>\
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
