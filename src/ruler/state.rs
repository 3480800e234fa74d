//! Alert states and their durable copy.
//!
//! An alerting rule keeps one [`ActiveAlert`] per label set, moving as Prometheus' rules do:
//!
//! ```text
//!  condition true ─► pending ──(held `for`)──► firing ──(condition false, after
//!                      │                         ▲      `keep_firing_for`)──► inactive
//!                      └─(condition false)─► gone │                         (resolved, kept
//!                                                 └── condition true again   15 min, resent)
//! ```
//!
//! After each evaluation that changes anything (and at least every 30 s while alerts are
//! active) a group's alerts are written as JSON to the chunks' object store
//! (`ruler-state/<tenant>/<namespace>/<group>`). On start a group restores them as
//! Prometheus restores `ALERTS_FOR_STATE`: firing alerts stay firing, pending ones keep
//! the time they already waited, unless the ruler was down longer than
//! `for_outage_tolerance`.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

/// Labels of an alert (sorted).
pub type Labels = BTreeMap<String, String>;

/// How long a resolved alert is kept (and resent), as Prometheus' `resolvedRetention`.
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// State of one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Resolved (kept for resending the resolution).
    Inactive,
    /// Condition true, `for` not yet elapsed.
    Pending,
    /// Condition held for `for`.
    Firing,
}

impl AlertState {
    /// Prometheus' name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One alert of a rule. Times are Unix milliseconds; 0 means unset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveAlert {
    /// Current state.
    pub state: AlertState,
    /// Labels after templating (sample labels, rule labels, `alertname`).
    pub labels: Labels,
    /// Annotations after templating.
    pub annotations: Labels,
    /// Value of the last sample.
    pub value: f64,
    /// When the condition became true.
    pub active_at: i64,
    /// When it started firing.
    #[serde(default)]
    pub fired_at: i64,
    /// When it resolved.
    #[serde(default)]
    pub resolved_at: i64,
    /// When it was last sent to Alertmanager.
    #[serde(default)]
    pub last_sent_at: i64,
    /// Since when it is kept firing by `keep_firing_for`.
    #[serde(default)]
    pub keep_firing_since: i64,
}

/// What is persisted for one rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersistedRule {
    /// Alert name.
    pub name: String,
    /// The rule's expression (restoring needs the same rule).
    pub expr: String,
    /// Its pending and firing alerts.
    pub alerts: Vec<ActiveAlert>,
}

/// What is persisted for one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersistedGroup {
    /// When it was written (Unix ms): the last time the alerts were known active.
    pub saved_at: i64,
    /// Alerting rules with active alerts.
    pub rules: Vec<PersistedRule>,
}

/// Object name of a group's persisted state.
pub fn object_name(tenant: &str, namespace: &str, group: &str) -> String {
    use super::store::escape;
    format!(
        "ruler-state/{}/{}/{}",
        escape(tenant),
        escape(namespace),
        escape(group)
    )
}

/// Alerts to restore for a rule with hold duration `hold`, at `now_ms`, from a state saved
/// at `saved.saved_at` (Prometheus' `RestoreForState`, applied before the first
/// evaluation). Firing alerts stay firing; a pending alert keeps the time it already
/// waited, but at least `grace` remains of a `for` longer than `grace`.
pub fn restore(
    saved_at: i64,
    alerts: &[ActiveAlert],
    hold: Duration,
    now_ms: i64,
    outage_tolerance: Duration,
    grace: Duration,
) -> Vec<ActiveAlert> {
    let tolerance = i64::try_from(outage_tolerance.as_millis()).unwrap_or(i64::MAX);
    if now_ms.saturating_sub(saved_at) > tolerance {
        return Vec::new();
    }
    let hold_ms = i64::try_from(hold.as_millis()).unwrap_or(i64::MAX);
    let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    let mut out = Vec::new();
    for a in alerts {
        let mut a = a.clone();
        // Resent right after the restart, so Alertmanager hears from us again.
        a.last_sent_at = 0;
        match a.state {
            AlertState::Inactive => continue,
            AlertState::Firing => {}
            AlertState::Pending => {
                let spent = saved_at - a.active_at;
                let remaining = hold_ms - spent;
                if remaining <= 0 {
                    // Waited long enough before the outage: fires at the next evaluation.
                } else if remaining < grace_ms {
                    a.active_at = now_ms + grace_ms - hold_ms;
                } else {
                    a.active_at += now_ms - saved_at;
                }
            }
        }
        out.push(a);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(state: AlertState, active_at: i64) -> ActiveAlert {
        ActiveAlert {
            state,
            labels: Labels::new(),
            annotations: Labels::new(),
            value: 1.0,
            active_at,
            fired_at: 0,
            resolved_at: 0,
            last_sent_at: 5,
            keep_firing_since: 0,
        }
    }

    #[test]
    fn restore_follows_prometheus() {
        let hour = Duration::from_secs(3600);
        let grace = Duration::from_secs(600);
        // Firing stays firing and is resent.
        let r = restore(
            1000,
            &[alert(AlertState::Firing, 0)],
            hour,
            2000,
            hour,
            grace,
        );
        assert_eq!(r[0].state, AlertState::Firing);
        assert_eq!(r[0].last_sent_at, 0);
        // Pending with 30 min of 1 h waited keeps its progress, shifted by the outage.
        let saved = 30 * 60_000;
        let now = saved + 60_000;
        let r = restore(
            saved,
            &[alert(AlertState::Pending, 0)],
            hour,
            now,
            hour,
            grace,
        );
        assert_eq!(r[0].active_at, 60_000);
        // Less than the grace period left: the grace period is waited again.
        let saved = 55 * 60_000;
        let r = restore(
            saved,
            &[alert(AlertState::Pending, 0)],
            hour,
            saved,
            hour,
            grace,
        );
        assert_eq!(r[0].active_at, saved + 600_000 - 3_600_000);
        // Outage longer than the tolerance: nothing restored.
        assert!(restore(
            0,
            &[alert(AlertState::Firing, 0)],
            hour,
            2 * 3_600_000,
            hour,
            grace
        )
        .is_empty());
    }
}
