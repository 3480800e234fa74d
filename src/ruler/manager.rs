//! The rule manager: one task per rule group, evaluating its rules on the group's interval.
//!
//! ```text
//!  sync (start, every poll_interval, after each API change)
//!    RuleStore::tenants/list ─► desired groups ─► start new, restart changed (alerts carried
//!                                                 over), stop removed
//!  group task: sleep to the next aligned slot ─► evaluate(ts)
//!    each rule: QueryEngine::query (instant, at ts - query_offset, in process)
//!      recording ─► samples ─► RemoteWriter::send
//!      alerting  ─► state machine (state.rs) ─► Notifier::send (firing, resolved, resends)
//!    ─► status for the read APIs and /metrics ─► persisted alert state (state.rs)
//! ```
//!
//! Slots are aligned as Prometheus aligns groups: `base + offset`, `base` a multiple of the
//! interval and `offset` a hash of the namespace and group name modulo the interval, so
//! groups spread over the interval and every node evaluates a group at the same instants.
//! An evaluation that overruns skips the slots it missed and counts them.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use parking_lot::Mutex;
use serde_json::Value;
use tokio::task::JoinHandle;
use tovlog_storage::Storage;

use super::{
    group::{self, RuleGroup},
    notifier::{self, Notifier},
    remote_write::{RemoteWriter, Sample},
    state::{self, ActiveAlert, AlertState, Labels, PersistedGroup, PersistedRule},
    store::RuleStore,
    template::{Expansion, RuleTemplate},
    RulerConfig,
};
use crate::query::{Direction, QueryEngine, QueryRequest};

/// Identity of a running group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    /// Tenant.
    pub tenant: String,
    /// Namespace (Prometheus' `file`).
    pub namespace: String,
    /// Group name.
    pub name: String,
}

/// Health of a rule after its last evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not evaluated yet.
    Unknown,
    /// Last evaluation succeeded.
    Ok,
    /// Last evaluation failed (`last_error`).
    Err,
}

impl Health {
    /// Prometheus' word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Ok => "ok",
            Health::Err => "err",
        }
    }
}

/// Live status of one rule.
#[derive(Debug, Clone)]
pub struct RuleStatus {
    /// Health.
    pub health: Health,
    /// Error of the last evaluation, empty when it succeeded.
    pub last_error: String,
    /// Unix ms of the last evaluation (0: never).
    pub last_evaluation: i64,
    /// Seconds the last evaluation took.
    pub evaluation_time: f64,
    /// Alerts by label set (alerting rules).
    pub alerts: BTreeMap<Labels, ActiveAlert>,
}

impl Default for RuleStatus {
    fn default() -> Self {
        RuleStatus {
            health: Health::Unknown,
            last_error: String::new(),
            last_evaluation: 0,
            evaluation_time: 0.0,
            alerts: BTreeMap::new(),
        }
    }
}

/// Counters of a group for `/metrics` (Loki's `loki_prometheus_rule_*` family).
#[derive(Debug, Clone, Default)]
pub struct GroupCounters {
    /// Rule evaluations.
    pub evaluations: u64,
    /// Failed rule evaluations.
    pub failures: u64,
    /// Scheduled iterations, run or missed.
    pub iterations: u64,
    /// Iterations missed because an evaluation overran.
    pub missed: u64,
    /// Samples produced by the last evaluation.
    pub last_samples: u64,
    /// Sum and count of rule evaluation durations, seconds.
    pub rule_seconds: f64,
    /// Sum of group evaluation durations, seconds (count = iterations run).
    pub group_seconds: f64,
    /// Group evaluations run.
    pub group_runs: u64,
}

/// Live status of one group, shared between its task and the read APIs.
#[derive(Debug, Clone, Default)]
pub struct GroupStatus {
    /// One entry per rule, in rule order.
    pub rules: Vec<RuleStatus>,
    /// Unix ms of the last evaluation (0: never).
    pub last_evaluation: i64,
    /// Seconds the last evaluation took.
    pub evaluation_time: f64,
    /// Counters.
    pub counters: GroupCounters,
}

/// A group as the read APIs see it: its definition and live status.
#[derive(Debug, Clone)]
pub struct GroupView {
    /// Identity.
    pub key: GroupKey,
    /// Definition.
    pub group: RuleGroup,
    /// Effective interval.
    pub interval: Duration,
    /// Status at the time of the call.
    pub status: GroupStatus,
}

/// A compiled rule.
struct RuleSpec {
    rule: group::Rule,
    labels: Vec<(String, RuleTemplate)>,
    annotations: Vec<(String, RuleTemplate)>,
}

/// A compiled group.
struct GroupSpec {
    key: GroupKey,
    group: RuleGroup,
    interval: Duration,
    rules: Vec<RuleSpec>,
}

struct Running {
    spec: Arc<GroupSpec>,
    status: Arc<Mutex<GroupStatus>>,
    task: Option<JoinHandle<()>>,
}

struct Inner {
    config: RulerConfig,
    engine: QueryEngine,
    storage: Arc<Storage>,
    store: RuleStore,
    notifier: Arc<Notifier>,
    remote: Option<Arc<RemoteWriter>>,
    groups: Mutex<BTreeMap<GroupKey, Running>>,
    /// Serialises syncs (poll loop and API changes).
    sync_lock: tokio::sync::Mutex<()>,
    poller: Mutex<Option<JoinHandle<()>>>,
    /// Evaluation runs (tasks are started) only after `start`.
    started: std::sync::atomic::AtomicBool,
}

/// The ruler: rule stores, the running groups, notifier and remote writer. Cheap to clone.
#[derive(Clone)]
pub struct Ruler {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Ruler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ruler").finish_non_exhaustive()
    }
}

/// Current Unix time, ms.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn ms_to_system(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// FNV-1a of the namespace and group name: the group's slot offset in its interval. (Any
/// stable hash spreads groups; this one needs no dependency.)
fn group_hash(namespace: &str, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in namespace.bytes().chain([0xff]).chain(name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The evaluation slot at or before `now_ms` (Prometheus' `EvalTimestamp`).
pub fn aligned_slot(now_ms: i64, interval_ms: i64, offset_ms: i64) -> i64 {
    let adj = now_ms - offset_ms;
    adj - adj.rem_euclid(interval_ms) + offset_ms
}

impl Ruler {
    /// Build the ruler (needs a Tokio runtime for the notifier). Nothing is evaluated
    /// before [`Ruler::start`].
    pub fn new(
        config: RulerConfig,
        engine: QueryEngine,
        storage: Arc<Storage>,
    ) -> anyhow::Result<Ruler> {
        let notifier = Notifier::new(&config)?;
        let remote = RemoteWriter::new(&config.remote_write)?;
        let store = RuleStore::new(
            storage.clone(),
            Some(config.storage.local.directory.clone()),
        );
        Ok(Ruler {
            inner: Arc::new(Inner {
                config,
                engine,
                storage,
                store,
                notifier,
                remote,
                groups: Mutex::new(BTreeMap::new()),
                sync_lock: tokio::sync::Mutex::new(()),
                poller: Mutex::new(None),
                started: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RulerConfig {
        &self.inner.config
    }

    /// The rule stores.
    pub fn store(&self) -> &RuleStore {
        &self.inner.store
    }

    /// Load the rules (restoring saved alert states) and start evaluating; re-read the
    /// stores every `poll_interval`.
    pub async fn start(&self) {
        if !self.inner.config.enabled {
            tracing::info!("ruler disabled: rules are served but not evaluated");
            return;
        }
        self.inner
            .started
            .store(true, std::sync::atomic::Ordering::Release);
        if let Err(e) = sync(&self.inner).await {
            tracing::warn!(error = %e, "ruler: reading rule stores failed");
        }
        let inner = self.inner.clone();
        let poll = self
            .inner
            .config
            .poll_interval
            .max(Duration::from_millis(100));
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(poll).await;
                if let Err(e) = sync(&inner).await {
                    tracing::warn!(error = %e, "ruler: reading rule stores failed");
                }
            }
        });
        *self.inner.poller.lock() = Some(task);
    }

    /// Re-read the stores now (after an API change).
    pub async fn sync(&self) -> anyhow::Result<()> {
        if !self
            .inner
            .started
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Ok(());
        }
        sync(&self.inner).await
    }

    /// Stop every group and persist their alert states.
    pub async fn stop(&self) {
        let poller = self.inner.poller.lock().take();
        if let Some(p) = poller {
            p.abort();
        }
        let _guard = self.inner.sync_lock.lock().await;
        let taken = std::mem::take(&mut *self.inner.groups.lock());
        for Running { spec, status, task } in taken.into_values() {
            if let Some(t) = task {
                t.abort();
                let _ = t.await;
            }
            let snapshot = status.lock().clone();
            if let Err(e) = persist(&self.inner, &spec, &snapshot).await {
                tracing::warn!(error = %e, group = %spec.key.name, "ruler: saving alert state failed");
            }
        }
        // Deliver what is already queued before the process goes.
        self.inner.notifier.shutdown(Duration::from_secs(5)).await;
        if let Some(remote) = &self.inner.remote {
            remote.shutdown(Duration::from_secs(5)).await;
        }
    }

    /// Groups of `tenant` with their status, ordered by namespace and name.
    pub fn views(&self, tenant: &str) -> Vec<GroupView> {
        self.inner
            .groups
            .lock()
            .values()
            .filter(|r| r.spec.key.tenant == tenant)
            .map(|r| GroupView {
                key: r.spec.key.clone(),
                group: r.spec.group.clone(),
                interval: r.spec.interval,
                status: r.status.lock().clone(),
            })
            .collect()
    }

    /// Append the ruler's metrics (Loki's names) plus the notifier's and remote writer's.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let groups = self.inner.groups.lock();
        let rows: Vec<(GroupKey, usize, Duration, GroupStatus)> = groups
            .values()
            .map(|r| {
                (
                    r.spec.key.clone(),
                    r.spec.rules.len(),
                    r.spec.interval,
                    r.status.lock().clone(),
                )
            })
            .collect();
        drop(groups);
        let esc = |s: &str| {
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        let lbl = |k: &GroupKey| {
            format!(
                "rule_group=\"{};{}\",user=\"{}\"",
                esc(k.namespace.as_str()),
                esc(k.name.as_str()),
                esc(k.tenant.as_str())
            )
        };
        type Row = (GroupKey, usize, Duration, GroupStatus);
        type Getter = fn(&Row) -> f64;
        let per_group: [(&str, &str, &str, Getter); 9] = [
            ("loki_prometheus_rule_evaluations_total", "counter", "The total number of rule evaluations.", |r: &Row| r.3.counters.evaluations as f64),
            ("loki_prometheus_rule_evaluation_failures_total", "counter", "The total number of rule evaluation failures.", |r: &Row| r.3.counters.failures as f64),
            ("loki_prometheus_rule_group_iterations_total", "counter", "The total number of scheduled rule group evaluations, whether executed or missed.", |r: &Row| r.3.counters.iterations as f64),
            ("loki_prometheus_rule_group_iterations_missed_total", "counter", "The total number of rule group evaluations missed due to slow rule group evaluation.", |r: &Row| r.3.counters.missed as f64),
            ("loki_prometheus_rule_group_interval_seconds", "gauge", "The interval of a rule group.", |r: &Row| r.2.as_secs_f64()),
            ("loki_prometheus_rule_group_last_evaluation_timestamp_seconds", "gauge", "The timestamp of the last rule group evaluation in seconds.", |r: &Row| r.3.last_evaluation as f64 / 1000.0),
            ("loki_prometheus_rule_group_last_duration_seconds", "gauge", "The duration of the last rule group evaluation.", |r: &Row| r.3.evaluation_time),
            ("loki_prometheus_rule_group_rules", "gauge", "The number of rules.", |r: &Row| r.1 as f64),
            ("loki_prometheus_last_evaluation_samples", "gauge", "The number of samples returned during the last rule group evaluation.", |r: &Row| r.3.counters.last_samples as f64),
        ];
        for (name, kind, help, get) in per_group {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for r in &rows {
                let _ = writeln!(out, "{name}{{{}}} {}", lbl(&r.0), get(r));
            }
        }
        // Per-tenant summaries (sum and count), as Loki aggregates them.
        let mut per_user: BTreeMap<&str, (f64, u64, f64, u64)> = BTreeMap::new();
        for r in &rows {
            let e = per_user.entry(r.0.tenant.as_str()).or_default();
            e.0 += r.3.counters.rule_seconds;
            e.1 += r.3.counters.evaluations;
            e.2 += r.3.counters.group_seconds;
            e.3 += r.3.counters.group_runs;
        }
        for (name, help, pick) in [
            (
                "loki_prometheus_rule_evaluation_duration_seconds",
                "The duration for a rule to execute.",
                0usize,
            ),
            (
                "loki_prometheus_rule_group_duration_seconds",
                "The duration of rule group evaluations.",
                1,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} summary");
            for (user, v) in &per_user {
                let (sum, count) = if pick == 0 { (v.0, v.1) } else { (v.2, v.3) };
                let _ = writeln!(out, "{name}_sum{{user=\"{}\"}} {sum}", esc(user));
                let _ = writeln!(out, "{name}_count{{user=\"{}\"}} {count}", esc(user));
            }
        }
        let name = "tovlog_ruler_alerts";
        let _ = writeln!(
            out,
            "# HELP {name} Alerts of the ruler by state.\n# TYPE {name} gauge"
        );
        for r in &rows {
            for st in [AlertState::Pending, AlertState::Firing] {
                let n =
                    r.3.rules
                        .iter()
                        .flat_map(|x| x.alerts.values())
                        .filter(|a| a.state == st)
                        .count();
                let _ = writeln!(out, "{name}{{{},state=\"{}\"}} {n}", lbl(&r.0), st.as_str());
            }
        }
        self.inner.notifier.render_metrics(out);
        if let Some(rw) = &self.inner.remote {
            rw.render_metrics(out);
        }
    }
}

fn compile(key: GroupKey, group: RuleGroup, default_interval: Duration) -> GroupSpec {
    let interval = group
        .interval
        .filter(|d| !d.is_zero())
        .unwrap_or(default_interval)
        .max(Duration::from_millis(100));
    let rules = group
        .rules
        .iter()
        .map(|r| {
            let mut labels: BTreeMap<String, String> = group.labels.clone();
            labels.extend(r.labels.clone());
            let tmpl = |m: &BTreeMap<String, String>| -> Vec<(String, RuleTemplate)> {
                m.iter()
                    .map(|(k, v)| {
                        // Validation refuses such templates; should one still get here, the
                        // error text stands in for the value.
                        let t = RuleTemplate::compile(&r.alert, v).unwrap_or_else(|e| {
                            RuleTemplate::constant(&format!("<error parsing template: {e}>"))
                        });
                        (k.clone(), t)
                    })
                    .collect()
            };
            RuleSpec {
                labels: tmpl(&labels),
                annotations: tmpl(&r.annotations),
                rule: r.clone(),
            }
        })
        .collect();
    GroupSpec {
        key,
        group,
        interval,
        rules,
    }
}

/// Read every store and bring the running groups in line.
async fn sync(inner: &Arc<Inner>) -> anyhow::Result<()> {
    let _guard = inner.sync_lock.lock().await;
    let mut desired: BTreeMap<GroupKey, RuleGroup> = BTreeMap::new();
    for tenant in inner.store.tenants().await? {
        for (ns, groups) in inner.store.list(&tenant).await? {
            for g in groups {
                let key = GroupKey {
                    tenant: tenant.clone(),
                    namespace: ns.clone(),
                    name: g.name.clone(),
                };
                desired.insert(key, g);
            }
        }
    }
    // Stop removed and changed groups, keeping the alerts of changed ones.
    let mut carried: HashMap<GroupKey, GroupStatus> = HashMap::new();
    let mut removed = Vec::new();
    let mut stopping: Vec<(GroupKey, Running)> = Vec::new();
    {
        let mut groups = inner.groups.lock();
        let keys: Vec<GroupKey> = groups
            .iter()
            .filter(|(k, r)| desired.get(*k) != Some(&r.spec.group))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some(r) = groups.remove(&k) {
                stopping.push((k, r));
            }
        }
    }
    for (key, mut r) in stopping {
        if let Some(t) = r.task.take() {
            t.abort();
            let _ = t.await;
        }
        let status = r.status.lock().clone();
        if desired.contains_key(&key) {
            carried.insert(key, status);
        } else {
            removed.push(key);
        }
    }
    for key in removed {
        tracing::info!(tenant = %key.tenant, namespace = %key.namespace, group = %key.name, "ruler: group removed");
        let _ = inner
            .storage
            .delete_object(&state::object_name(&key.tenant, &key.namespace, &key.name))
            .await;
    }
    // Start new and changed groups.
    let mut to_start: Vec<(GroupKey, RuleGroup)> = Vec::new();
    {
        let groups = inner.groups.lock();
        for (k, g) in desired {
            if !groups.contains_key(&k) {
                to_start.push((k, g));
            }
        }
    }
    for (key, g) in to_start {
        let spec = Arc::new(compile(key.clone(), g, inner.config.evaluation_interval));
        let mut status = GroupStatus {
            rules: vec![RuleStatus::default(); spec.rules.len()],
            ..GroupStatus::default()
        };
        match carried.remove(&key) {
            Some(old) => carry_over(&spec, &mut status, old),
            None => restore_saved(inner, &spec, &mut status).await,
        }
        tracing::info!(tenant = %key.tenant, namespace = %key.namespace, group = %key.name, interval = ?spec.interval, "ruler: group started");
        let status = Arc::new(Mutex::new(status));
        let task = tokio::spawn(run_group(inner.clone(), spec.clone(), status.clone()));
        inner.groups.lock().insert(
            key,
            Running {
                spec,
                status,
                task: Some(task),
            },
        );
    }
    Ok(())
}

/// Keep the alerts and counters of a group whose definition changed, for rules with the same
/// name and expression.
fn carry_over(spec: &GroupSpec, status: &mut GroupStatus, old: GroupStatus) {
    status.counters = old.counters;
    status.last_evaluation = old.last_evaluation;
    status.evaluation_time = old.evaluation_time;
    let mut old_rules = old.rules;
    // Old statuses lost their rule identity; the alerts carry `alertname`, the rule name.
    for (i, r) in spec.rules.iter().enumerate() {
        if !r.rule.is_alert() {
            continue;
        }
        for o in old_rules.iter_mut() {
            let same = o
                .alerts
                .values()
                .next()
                .is_some_and(|a| a.labels.get("alertname") == Some(&r.rule.alert));
            if same {
                status.rules[i].alerts = std::mem::take(&mut o.alerts);
                break;
            }
        }
    }
}

async fn restore_saved(inner: &Inner, spec: &GroupSpec, status: &mut GroupStatus) {
    let name = state::object_name(&spec.key.tenant, &spec.key.namespace, &spec.key.name);
    let saved: PersistedGroup = match inner.storage.get_object(&name).await {
        Ok(Some(body)) => match serde_json::from_slice(&body) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(object = %name, error = %e, "ruler: unreadable alert state ignored");
                return;
            }
        },
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(object = %name, error = %e, "ruler: reading alert state failed");
            return;
        }
    };
    let now = now_ms();
    for (i, r) in spec.rules.iter().enumerate() {
        let Some(p) = saved
            .rules
            .iter()
            .find(|p| p.name == r.rule.alert && p.expr == r.rule.expr && r.rule.is_alert())
        else {
            continue;
        };
        let hold = r.rule.for_.unwrap_or_default();
        for a in state::restore(
            saved.saved_at,
            &p.alerts,
            hold,
            now,
            inner.config.for_outage_tolerance,
            inner.config.for_grace_period,
        ) {
            status.rules[i].alerts.insert(a.labels.clone(), a);
        }
    }
}

async fn persist(inner: &Inner, spec: &GroupSpec, status: &GroupStatus) -> anyhow::Result<()> {
    let name = state::object_name(&spec.key.tenant, &spec.key.namespace, &spec.key.name);
    let rules: Vec<PersistedRule> = spec
        .rules
        .iter()
        .zip(&status.rules)
        .filter(|(r, s)| r.rule.is_alert() && !s.alerts.is_empty())
        .map(|(r, s)| PersistedRule {
            name: r.rule.alert.clone(),
            expr: r.rule.expr.clone(),
            alerts: s
                .alerts
                .values()
                .filter(|a| a.state != AlertState::Inactive)
                .cloned()
                .collect(),
        })
        .filter(|p| !p.alerts.is_empty())
        .collect();
    if rules.is_empty() {
        inner.storage.delete_object(&name).await?;
        return Ok(());
    }
    let body = serde_json::to_vec(&PersistedGroup {
        saved_at: now_ms(),
        rules,
    })?;
    inner
        .storage
        .put_object(&name, bytes::Bytes::from(body))
        .await?;
    Ok(())
}

/// A group's loop: evaluate at each aligned slot until aborted.
async fn run_group(inner: Arc<Inner>, spec: Arc<GroupSpec>, status: Arc<Mutex<GroupStatus>>) {
    let interval_ms = i64::try_from(spec.interval.as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    let offset_ms = i64::try_from(
        group_hash(&spec.key.namespace, &spec.key.name) % u64::try_from(interval_ms).unwrap_or(1),
    )
    .unwrap_or(0);
    let mut slot = aligned_slot(now_ms(), interval_ms, offset_ms) + interval_ms;
    let mut last_persist = 0i64;
    let mut persisted_shape: Vec<(Labels, AlertState)> = Vec::new();
    loop {
        let wait = slot - now_ms();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(0))).await;
        }
        evaluate(&inner, &spec, &status, slot).await;
        // Persist the alert state when it changed, and now and then while alerts are active
        // (the restore measures the outage from the last write).
        let shape: Vec<(Labels, AlertState)> = status
            .lock()
            .rules
            .iter()
            .flat_map(|r| r.alerts.values().map(|a| (a.labels.clone(), a.state)))
            .collect();
        let now = now_ms();
        if shape != persisted_shape || (!shape.is_empty() && now - last_persist >= 30_000) {
            let snapshot = status.lock().clone();
            match persist(&inner, &spec, &snapshot).await {
                Ok(()) => {
                    persisted_shape = shape;
                    last_persist = now;
                }
                Err(e) => {
                    tracing::warn!(error = %e, group = %spec.key.name, "ruler: saving alert state failed")
                }
            }
        }
        let now = now_ms();
        let missed = ((now - slot) / interval_ms - 1).max(0);
        {
            let mut st = status.lock();
            st.counters.iterations += 1 + u64::try_from(missed).unwrap_or(0);
            st.counters.missed += u64::try_from(missed).unwrap_or(0);
        }
        if missed > 0 {
            tracing::warn!(group = %spec.key.name, missed, "ruler: group evaluation overran its interval");
        }
        slot += (missed + 1) * interval_ms;
    }
}

/// Samples of an instant query's answer (vector or scalar).
fn samples_of(body: &Value) -> Result<Vec<(Labels, f64)>, String> {
    let data = body.get("data").ok_or("query answered without data")?;
    let parse = |v: Option<&Value>| -> Result<f64, String> {
        let s = v.and_then(Value::as_str).ok_or("sample without a value")?;
        s.parse::<f64>()
            .map_err(|_| format!("sample value {s:?} is not a number"))
    };
    match data.get("resultType").and_then(Value::as_str) {
        Some("vector") => {
            let result = data.get("result").and_then(Value::as_array);
            let mut out = Vec::new();
            for s in result.into_iter().flatten() {
                let labels: Labels = s
                    .get("metric")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((labels, parse(s.get("value").and_then(|v| v.get(1)))?));
            }
            Ok(out)
        }
        Some("scalar") => Ok(vec![(
            Labels::new(),
            parse(data.get("result").and_then(|v| v.get(1)))?,
        )]),
        _ => Err("rule result is not a vector or scalar".into()),
    }
}

/// Grafana Explore link for an expression (Loki's `generatorURL`).
fn generator_url(external_url: &str, expr: &str) -> String {
    let left = serde_json::json!({
        "queries": [{"refId": "A", "expr": expr}],
    })
    .to_string();
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("left", &left)
        .finish();
    format!("{}/explore?{q}", external_url.trim_end_matches('/'))
}

/// One evaluation of a group at `ts_ms`.
async fn evaluate(inner: &Inner, spec: &GroupSpec, status: &Mutex<GroupStatus>, ts_ms: i64) {
    let started = Instant::now();
    let offset_ms = spec
        .group
        .query_offset
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(0))
        .unwrap_or(0);
    let query_ts = ts_ms - offset_ms;
    let cfg = &inner.config;
    let mut to_send: Vec<notifier::Alert> = Vec::new();
    let mut samples_total = 0u64;
    for (i, r) in spec.rules.iter().enumerate() {
        let rule_started = Instant::now();
        let req = QueryRequest {
            tenant: spec.key.tenant.clone(),
            query: r.rule.expr.clone(),
            start_ns: query_ts.saturating_mul(1_000_000),
            end_ns: query_ts.saturating_mul(1_000_000),
            step_ns: 0,
            limit: 100,
            direction: Direction::Backward,
            instant: true,
            categorize_labels: false,
        };
        let result = match inner.engine.query(req).await {
            Ok(body) => samples_of(&body),
            Err(e) => Err(e.to_string()),
        };
        let outcome = match result {
            Ok(samples) => {
                samples_total += samples.len() as u64;
                if r.rule.is_alert() {
                    let mut st = status.lock();
                    let mut applied = Ok(());
                    if let Some(rs) = st.rules.get_mut(i) {
                        applied = apply_alerts(cfg, spec, r, rs, &samples, ts_ms, &mut to_send);
                        // Publish the health with the new state: a reader between this
                        // and the bookkeeping below must not see a pending alert of a rule
                        // that has never been evaluated.
                        if applied.is_ok() {
                            rs.health = Health::Ok;
                            rs.last_error.clear();
                            rs.last_evaluation = ts_ms;
                        }
                    }
                    applied
                } else {
                    record(inner, spec, r, samples, query_ts)
                }
            }
            Err(e) => Err(e),
        };
        let took = rule_started.elapsed().as_secs_f64();
        let mut guard = status.lock();
        let st = &mut *guard;
        st.counters.evaluations += 1;
        st.counters.rule_seconds += took;
        if outcome.is_err() {
            st.counters.failures += 1;
        }
        if let Some(rs) = st.rules.get_mut(i) {
            rs.last_evaluation = ts_ms;
            rs.evaluation_time = took;
            match outcome {
                Ok(()) => {
                    rs.health = Health::Ok;
                    rs.last_error.clear();
                }
                Err(e) => {
                    tracing::debug!(rule = %r.rule.name(), error = %e, "ruler: rule evaluation failed");
                    rs.health = Health::Err;
                    rs.last_error = e;
                }
            }
        }
    }
    if !to_send.is_empty() {
        inner.notifier.send(to_send);
    }
    let took = started.elapsed().as_secs_f64();
    let mut st = status.lock();
    st.last_evaluation = ts_ms;
    st.evaluation_time = took;
    st.counters.last_samples = samples_total;
    st.counters.group_seconds += took;
    st.counters.group_runs += 1;
}

/// A recording rule's samples, sent with remote write.
fn record(
    inner: &Inner,
    spec: &GroupSpec,
    r: &RuleSpec,
    samples: Vec<(Labels, f64)>,
    ts_ms: i64,
) -> Result<(), String> {
    let mut out: Vec<Sample> = Vec::with_capacity(samples.len());
    let mut seen = std::collections::HashSet::new();
    for (mut labels, value) in samples {
        labels.remove("__name__");
        for (k, t) in &r.labels {
            labels.insert(k.clone(), t.text().to_string());
        }
        labels.insert("__name__".into(), r.rule.record.clone());
        if !seen.insert(labels.clone()) {
            return Err(
                "vector contains metrics with the same labelset after applying rule labels".into(),
            );
        }
        for (k, v) in &inner.config.external_labels {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
        out.push(Sample {
            labels,
            value,
            timestamp_ms: ts_ms,
        });
    }
    let limit = spec.group.limit;
    if limit > 0 && out.len() as i64 > limit {
        return Err(format!(
            "exceeded limit of {limit} with {} series",
            out.len()
        ));
    }
    if let Some(rw) = &inner.remote {
        if !out.is_empty() {
            rw.send(out);
        }
    }
    Ok(())
}

/// Prometheus' alerting-rule step at `ts_ms` over the query's samples.
fn apply_alerts(
    cfg: &RulerConfig,
    spec: &GroupSpec,
    r: &RuleSpec,
    rs: &mut RuleStatus,
    samples: &[(Labels, f64)],
    ts_ms: i64,
    to_send: &mut Vec<notifier::Alert>,
) -> Result<(), String> {
    let hold_ms = r
        .rule
        .for_
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let keep_ms = r
        .rule
        .keep_firing_for
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    // Labels and annotations of each sample's alert.
    let mut current: BTreeMap<Labels, (Labels, f64)> = BTreeMap::new();
    for (sample_labels, value) in samples {
        let mut base = sample_labels.clone();
        base.remove("__name__");
        let e = Expansion {
            labels: &base,
            value: *value,
            external_labels: &cfg.external_labels,
            external_url: &cfg.external_url,
        };
        let mut labels = base.clone();
        for (k, t) in &r.labels {
            labels.insert(k.clone(), t.expand(&e));
        }
        labels.insert("alertname".into(), r.rule.alert.clone());
        let annotations: Labels = r
            .annotations
            .iter()
            .map(|(k, t)| (k.clone(), t.expand(&e)))
            .collect();
        if current.contains_key(&labels) {
            return Err(
                "vector contains metrics with the same labelset after applying alert labels".into(),
            );
        }
        current.insert(labels, (annotations, *value));
    }
    // Present samples: new alerts pend, known ones update.
    for (labels, (annotations, value)) in &current {
        match rs.alerts.get_mut(labels) {
            Some(a) if a.state != AlertState::Inactive => {
                a.value = *value;
                a.annotations = annotations.clone();
                a.keep_firing_since = 0;
            }
            _ => {
                rs.alerts.insert(
                    labels.clone(),
                    ActiveAlert {
                        state: AlertState::Pending,
                        labels: labels.clone(),
                        annotations: annotations.clone(),
                        value: *value,
                        active_at: ts_ms,
                        fired_at: 0,
                        resolved_at: 0,
                        last_sent_at: 0,
                        keep_firing_since: 0,
                    },
                );
            }
        }
    }
    // Absent: pending ones go, firing ones resolve (after keep_firing_for).
    rs.alerts.retain(|labels, a| {
        if current.contains_key(labels) {
            return true;
        }
        if keep_ms > 0 && a.state == AlertState::Firing {
            if a.keep_firing_since == 0 {
                a.keep_firing_since = ts_ms;
            }
            if ts_ms - a.keep_firing_since < keep_ms {
                return true;
            }
        }
        if a.state == AlertState::Pending
            || (a.resolved_at != 0 && ts_ms - a.resolved_at > state::RESOLVED_RETENTION_MS)
        {
            return false;
        }
        if a.state != AlertState::Inactive {
            a.state = AlertState::Inactive;
            a.resolved_at = ts_ms;
        }
        true
    });
    let limit = spec.group.limit;
    let active = rs
        .alerts
        .values()
        .filter(|a| a.state != AlertState::Inactive)
        .count();
    if limit > 0 && active as i64 > limit {
        rs.alerts.clear();
        return Err(format!("exceeded limit of {limit} with {active} alerts"));
    }
    // Pending long enough: fire.
    for a in rs.alerts.values_mut() {
        if a.state == AlertState::Pending && ts_ms - a.active_at >= hold_ms {
            a.state = AlertState::Firing;
            if a.fired_at == 0 {
                a.fired_at = ts_ms;
            }
        }
    }
    // What Alertmanager must hear (Prometheus' `needsSending`).
    let resend_ms = i64::try_from(cfg.resend_delay.as_millis()).unwrap_or(i64::MAX);
    let valid_ms =
        i64::try_from((4 * cfg.resend_delay.max(spec.interval)).as_millis()).unwrap_or(i64::MAX);
    let gen_url = generator_url(&cfg.external_url, &r.rule.expr);
    for a in rs.alerts.values_mut() {
        let needs = match a.state {
            AlertState::Pending => false,
            _ if a.resolved_at > a.last_sent_at => true,
            _ => a.last_sent_at == 0 || a.last_sent_at + resend_ms <= ts_ms,
        };
        if !needs {
            continue;
        }
        a.last_sent_at = ts_ms;
        let mut labels = a.labels.clone();
        for (k, v) in &cfg.external_labels {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
        to_send.push(notifier::Alert {
            labels,
            annotations: a.annotations.clone(),
            starts_at: ms_to_system(if a.fired_at != 0 {
                a.fired_at
            } else {
                a.active_at
            }),
            // A firing alert stays valid in Alertmanager for four resend periods or group
            // intervals, whichever is longer, as Prometheus sends it: a group slower than the
            // resend delay must not see its alerts resolved between evaluations.
            ends_at: Some(if a.resolved_at != 0 {
                ms_to_system(a.resolved_at)
            } else {
                ms_to_system(ts_ms.saturating_add(valid_ms))
            }),
            generator_url: gen_url.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_align_on_interval_plus_offset() {
        assert_eq!(aligned_slot(125_000, 60_000, 5_000), 125_000);
        assert_eq!(aligned_slot(124_999, 60_000, 5_000), 65_000);
        assert_eq!(aligned_slot(10, 1_000, 0), 0);
    }

    fn one_rule(yaml: &str) -> anyhow::Result<GroupSpec> {
        let g = group::parse_group(yaml.as_bytes()).map_err(anyhow::Error::msg)?;
        let key = GroupKey {
            tenant: "t".into(),
            namespace: "ns".into(),
            name: g.name.clone(),
        };
        Ok(compile(key, g, Duration::from_secs(1)))
    }

    #[test]
    fn alerts_pend_fire_keep_firing_and_resolve() -> anyhow::Result<()> {
        let spec = one_rule(
            "name: g\nrules:\n- alert: A\n  expr: sum(rate({a=\"b\"}[1m])) > 0\n  for: 2s\n  keep_firing_for: 2s\n  labels:\n    who: '{{ $labels.user }}'\n  annotations:\n    s: 'v={{ $value }}'\n",
        )?;
        let cfg = RulerConfig::default();
        let r = &spec.rules[0];
        let mut rs = RuleStatus::default();
        let sample: Vec<(Labels, f64)> = vec![(
            [("user".to_string(), "bob".to_string())]
                .into_iter()
                .collect(),
            7.0,
        )];
        let mut sent = Vec::new();
        apply_alerts(&cfg, &spec, r, &mut rs, &sample, 1_000, &mut sent)
            .map_err(anyhow::Error::msg)?;
        let a = rs
            .alerts
            .values()
            .next()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no alert"))?;
        assert_eq!(a.state, AlertState::Pending);
        assert_eq!(a.labels.get("who").map(String::as_str), Some("bob"));
        assert_eq!(a.labels.get("alertname").map(String::as_str), Some("A"));
        assert_eq!(a.annotations.get("s").map(String::as_str), Some("v=7"));
        assert!(sent.is_empty(), "pending alerts are not sent");
        apply_alerts(&cfg, &spec, r, &mut rs, &sample, 2_000, &mut sent)
            .map_err(anyhow::Error::msg)?;
        assert_eq!(
            rs.alerts.values().next().map(|a| a.state),
            Some(AlertState::Pending)
        );
        apply_alerts(&cfg, &spec, r, &mut rs, &sample, 3_000, &mut sent)
            .map_err(anyhow::Error::msg)?;
        assert_eq!(
            rs.alerts.values().next().map(|a| a.state),
            Some(AlertState::Firing)
        );
        assert_eq!(sent.len(), 1);
        let valid = 4 * cfg.resend_delay.max(spec.interval);
        assert_eq!(
            sent[0].ends_at,
            Some(ms_to_system(3_000) + valid),
            "a firing alert is valid for four resend periods or intervals"
        );
        // Still firing: not resent before resend_delay.
        apply_alerts(&cfg, &spec, r, &mut rs, &sample, 4_000, &mut sent)
            .map_err(anyhow::Error::msg)?;
        assert_eq!(sent.len(), 1);
        // Condition gone: kept firing for 2 s, then resolved and sent with endsAt.
        apply_alerts(&cfg, &spec, r, &mut rs, &[], 5_000, &mut sent).map_err(anyhow::Error::msg)?;
        apply_alerts(&cfg, &spec, r, &mut rs, &[], 6_000, &mut sent).map_err(anyhow::Error::msg)?;
        assert_eq!(
            rs.alerts.values().next().map(|a| a.state),
            Some(AlertState::Firing)
        );
        apply_alerts(&cfg, &spec, r, &mut rs, &[], 7_000, &mut sent).map_err(anyhow::Error::msg)?;
        let a = rs
            .alerts
            .values()
            .next()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no alert"))?;
        assert_eq!(a.state, AlertState::Inactive);
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1].ends_at, Some(ms_to_system(7_000)));
        // A pending alert whose condition stops is dropped.
        let mut rs = RuleStatus::default();
        apply_alerts(&cfg, &spec, r, &mut rs, &sample, 1_000, &mut sent)
            .map_err(anyhow::Error::msg)?;
        apply_alerts(&cfg, &spec, r, &mut rs, &[], 2_000, &mut sent).map_err(anyhow::Error::msg)?;
        assert!(rs.alerts.is_empty());
        Ok(())
    }

    #[test]
    fn instant_answers_become_samples() -> anyhow::Result<()> {
        let v: Value = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"b"},"value":[1,"2.5"]},{"metric":{},"value":[1,"NaN"]}]}}"#,
        )?;
        let s = samples_of(&v).map_err(anyhow::Error::msg)?;
        assert_eq!(s[0].0.get("a").map(String::as_str), Some("b"));
        assert_eq!(s[0].1, 2.5);
        assert!(s[1].1.is_nan());
        let m: Value = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
        )?;
        assert_eq!(
            samples_of(&m).err().as_deref(),
            Some("rule result is not a vector or scalar")
        );
        Ok(())
    }
}
