//! `wardenctl top`: a live view of the signer for an operator's terminal: the node connection,
//! each velocity window as a gauge against its limit, pending approvals with their age, and the
//! last decisions with their rule tags. It follows `WatchEvents` and polls `Status` and
//! `ListPending` once a second. `q` or Ctrl-C quits.

use crate::admin::Conn;
use crossterm::event::{self, Event as TermEvent, KeyCode, KeyModifiers};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::layout::{Constraint, Direction, Layout};
use ratatui::style::{Color, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Gauge, List, ListItem, Paragraph, Row, Table};
use std::collections::VecDeque;
use std::time::Duration;
use warden::api::proto;
use warden::clock::format_utc;
use warden::policy::units::format_msat;

struct View {
    status: Option<proto::StatusResponse>,
    pending: Vec<proto::ApprovalRequest>,
    decisions: VecDeque<String>,
    error: Option<String>,
}

fn draw(f: &mut ratatui::Frame, v: &View) {
    let windows = v.status.as_ref().map(|s| s.windows.len()).unwrap_or(0) as u16;
    // The header grows by a line for a freeze and for each started recovery action.
    let alarms = v
        .status
        .as_ref()
        .map(|s| usize::from(!s.frozen.is_empty()) + s.recovery.len())
        .unwrap_or(0) as u16;
    let chunks = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(4 + alarms),
            Constraint::Length(windows * 3 + 2),
            Constraint::Min(6),
            Constraint::Min(6),
        ])
        .split(f.area());
    let head = match &v.status {
        Some(s) => vec![
            Line::from(format!(
                "node {}  [{}]",
                if s.node_id.is_empty() {
                    "?"
                } else {
                    &s.node_id
                },
                s.node_connection
            )),
            Line::from(format!(
                "policy {} {}   pending {}   {}",
                s.policy_name,
                &s.policy_hash[..16.min(s.policy_hash.len())],
                s.pending,
                format_utc(s.time)
            )),
        ],
        None => vec![Line::from("connecting to wardend…")],
    };
    let mut head = head;
    if let Some(s) = &v.status {
        // A freeze and a started recovery action are what admins must not miss.
        if !s.frozen.is_empty() {
            head.push(Line::styled(
                format!("FROZEN {}", s.frozen),
                Style::default().fg(Color::Red),
            ));
        }
        for r in &s.recovery {
            head.push(Line::styled(
                format!("RECOVERY {r}"),
                Style::default().fg(Color::Red),
            ));
        }
    }
    if let Some(e) = &v.error {
        head.push(Line::styled(e.clone(), Style::default().fg(Color::Red)));
    }
    f.render_widget(
        Paragraph::new(head).block(Block::default().borders(Borders::ALL).title("Warden")),
        chunks[0],
    );

    let wchunks = Layout::default()
        .direction(Direction::Vertical)
        .margin(1)
        .constraints(vec![Constraint::Length(3); windows as usize])
        .split(chunks[1]);
    f.render_widget(
        Block::default()
            .borders(Borders::ALL)
            .title("Velocity windows"),
        chunks[1],
    );
    if let Some(s) = &v.status {
        for (w, area) in s.windows.iter().zip(wchunks.iter()) {
            let ratio = if w.limit_msat > 0 {
                (w.used_msat as f64 / w.limit_msat as f64).min(1.0)
            } else {
                0.0
            };
            let color = if ratio >= 0.8 {
                Color::Red
            } else {
                Color::Green
            };
            let label = format!(
                "{} of {} ({:.0} %)",
                format_msat(w.used_msat),
                format_msat(w.limit_msat),
                ratio * 100.0
            );
            let g = Gauge::default()
                .block(Block::default().title(format!("{} {} {}", w.tag, w.window, w.scope)))
                .gauge_style(Style::default().fg(color))
                .ratio(ratio)
                .label(label);
            f.render_widget(g, *area);
        }
    }

    let now = v.status.as_ref().map(|s| s.time).unwrap_or(0);
    let rows: Vec<Row> = v
        .pending
        .iter()
        .map(|r| {
            let approvals = r
                .signatures
                .iter()
                .filter(|s| s.decision == "approve")
                .count();
            Row::new(vec![
                r.id.clone(),
                format_msat(r.amount_msat),
                format!("{approvals}/{}", r.need),
                r.rule_tag.clone(),
                format!("{}s", now.saturating_sub(r.created_at)),
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(20),
            Constraint::Length(18),
            Constraint::Length(6),
            Constraint::Length(24),
            Constraint::Length(8),
        ],
    )
    .header(Row::new(vec!["ID", "AMOUNT", "SIGNED", "RULE", "AGE"]))
    .block(
        Block::default()
            .borders(Borders::ALL)
            .title("Pending approvals"),
    );
    f.render_widget(table, chunks[2]);

    let items: Vec<ListItem> = v
        .decisions
        .iter()
        .map(|d| ListItem::new(d.clone()))
        .collect();
    f.render_widget(
        List::new(items).block(
            Block::default()
                .borders(Borders::ALL)
                .title("Last decisions"),
        ),
        chunks[3],
    );
}

fn describe(e: &proto::Event) -> Option<String> {
    let kind = proto::EventKind::try_from(e.kind).ok()?;
    let word = match kind {
        proto::EventKind::PaymentApproved => "approved",
        proto::EventKind::PaymentRefused => "refused",
        proto::EventKind::RequestCreated => "held",
        proto::EventKind::RequestApproved => "quorum",
        proto::EventKind::RequestRejected => "rejected",
        proto::EventKind::LimitWarning => "warning",
        proto::EventKind::Freeze => "freeze",
        proto::EventKind::Recovery => "RECOVERY",
        proto::EventKind::Policy => "policy",
        proto::EventKind::Channel => "channel",
        _ => return None,
    };
    Some(format!(
        "{} {word:<8} {:>18} [{}] {}",
        &format_utc(e.time)[11..19],
        format_msat(e.amount_msat),
        e.tags.join(", "),
        e.message
    ))
}

pub async fn run(conn: &Conn) -> anyhow::Result<()> {
    let mut client = conn.connect().await?;
    let mut events = client
        .watch_events(proto::WatchEventsRequest {})
        .await?
        .into_inner();
    enable_raw_mode()?;
    let mut out = std::io::stdout();
    crossterm::execute!(out, EnterAlternateScreen)?;
    let mut terminal = ratatui::Terminal::new(ratatui::backend::CrosstermBackend::new(out))?;
    let mut view = View {
        status: None,
        pending: vec![],
        decisions: VecDeque::new(),
        error: None,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let result: anyhow::Result<()> = async {
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    match (client.status(proto::StatusRequest {}).await, client.list_pending(proto::ListPendingRequest::default()).await) {
                        (Ok(s), Ok(p)) => {
                            view.status = Some(s.into_inner());
                            view.pending = p.into_inner().requests;
                            view.error = None;
                        }
                        (Err(e), _) | (_, Err(e)) => view.error = Some(format!("wardend: {}", e.message())),
                    }
                }
                e = events.message() => match e {
                    Ok(Some(e)) => if let Some(line) = describe(&e) {
                        view.decisions.push_front(line);
                        view.decisions.truncate(50);
                    },
                    Ok(None) => view.error = Some("the event stream ended".into()),
                    Err(e) => view.error = Some(format!("events: {}", e.message())),
                },
            }
            terminal.draw(|f| draw(f, &view))?;
            while event::poll(Duration::from_millis(0))? {
                if let TermEvent::Key(k) = event::read()? {
                    if k.code == KeyCode::Char('q') || (k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL)) {
                        return Ok(());
                    }
                }
            }
        }
    }
    .await;
    disable_raw_mode()?;
    crossterm::execute!(terminal.backend_mut(), LeaveAlternateScreen)?;
    result
}
