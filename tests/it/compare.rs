//! The comparison rules of the Loki oracle (`shared/conformance/check.py`), in Rust: stream and
//! series order is free, entries inside a stream must match in order, numbers compare with a
//! 1e-6 relative tolerance, label/value/series lists compare as sets, `index/stats` is checked for
//! shape, `index/volume` values within 10%, error bodies by status only.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// One recorded case.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Case {
    pub id: String,
    #[serde(default)]
    pub category: String,
    pub path: String,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub expect: Expect,
}

/// What Loki answered.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Expect {
    pub status: u16,
    #[serde(default)]
    pub json: Option<Value>,
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "+Inf" | "Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            s => s.parse().ok(),
        },
        _ => None,
    }
}

fn same_num(a: &Value, b: &Value, tol: f64) -> bool {
    match (num(a), num(b)) {
        (Some(x), Some(y)) => {
            (x.is_nan() && y.is_nan())
                || x == y
                || (x - y).abs() <= tol * 1f64.max(x.abs()).max(y.abs())
        }
        _ => a == b,
    }
}

fn key(labels: &Value) -> String {
    // serde_json maps are sorted (no preserve_order feature), so this is canonical.
    labels.to_string()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn cmp_samples(exp: &[Value], got: &[Value], where_: &str, tol: f64) -> Result<(), String> {
    if exp.len() != got.len() {
        return Err(format!(
            "{where_}: {} samples expected, {} returned",
            exp.len(),
            got.len()
        ));
    }
    for (e, g) in exp.iter().zip(got) {
        let ok = e
            .get(0)
            .zip(g.get(0))
            .is_some_and(|(a, b)| same_num(a, b, tol))
            && e.get(1)
                .zip(g.get(1))
                .is_some_and(|(a, b)| same_num(a, b, tol));
        if !ok {
            return Err(format!("{where_}: sample {e} expected, {g} returned"));
        }
    }
    Ok(())
}

fn cmp_result(rtype: &str, exp: &Value, got: &Value, tol: f64) -> Result<(), String> {
    let empty = Vec::new();
    let exp = exp.as_array().unwrap_or(&empty);
    let got = got.as_array().unwrap_or(&empty);
    match rtype {
        "streams" => {
            let em: BTreeMap<String, &Vec<Value>> = exp
                .iter()
                .map(|s| (key(&s["stream"]), s["values"].as_array().unwrap_or(&empty)))
                .collect();
            let mut gm: BTreeMap<String, Vec<Value>> = BTreeMap::new();
            for s in got {
                gm.entry(key(&s["stream"]))
                    .or_default()
                    .extend(s["values"].as_array().unwrap_or(&empty).iter().cloned());
            }
            let ek: BTreeSet<_> = em.keys().collect();
            let gk: BTreeSet<_> = gm.keys().collect();
            if ek != gk {
                let miss: Vec<_> = ek.difference(&gk).take(2).collect();
                let extra: Vec<_> = gk.difference(&ek).take(2).collect();
                return Err(format!(
                    "streams differ: missing {miss:?}; unexpected {extra:?}"
                ));
            }
            for (k, ev) in em {
                let gv = &gm[&k];
                if ev.len() != gv.len() {
                    return Err(format!(
                        "stream {k}: {} entries expected, {} returned",
                        ev.len(),
                        gv.len()
                    ));
                }
                for (i, (e, g)) in ev.iter().zip(gv).enumerate() {
                    let e2: Vec<String> = e
                        .as_array()
                        .unwrap_or(&empty)
                        .iter()
                        .take(2)
                        .map(text)
                        .collect();
                    let g2: Vec<String> = g
                        .as_array()
                        .unwrap_or(&empty)
                        .iter()
                        .take(2)
                        .map(text)
                        .collect();
                    if e2 != g2 {
                        return Err(format!(
                            "stream {k} entry {i}: expected {e2:?}, returned {g2:?}"
                        ));
                    }
                    if let Some(meta) = e.get(2) {
                        if g.get(2) != Some(meta) {
                            return Err(format!(
                                "stream {k} entry {i}: metadata expected {meta}, returned {:?}",
                                g.get(2)
                            ));
                        }
                    }
                }
            }
            Ok(())
        }
        "matrix" | "vector" => {
            let field = if rtype == "matrix" { "values" } else { "value" };
            let em: BTreeMap<String, &Value> =
                exp.iter().map(|s| (key(&s["metric"]), &s[field])).collect();
            let gm: BTreeMap<String, &Value> =
                got.iter().map(|s| (key(&s["metric"]), &s[field])).collect();
            let ek: BTreeSet<_> = em.keys().collect();
            let gk: BTreeSet<_> = gm.keys().collect();
            if ek != gk {
                let miss: Vec<_> = ek.difference(&gk).take(2).collect();
                let extra: Vec<_> = gk.difference(&ek).take(2).collect();
                return Err(format!(
                    "series differ ({} expected, {} returned): missing {miss:?}; unexpected {extra:?}",
                    ek.len(),
                    gk.len()
                ));
            }
            for (k, e) in em {
                let g = gm[&k];
                if rtype == "matrix" {
                    cmp_samples(
                        e.as_array().unwrap_or(&empty),
                        g.as_array().unwrap_or(&empty),
                        &k,
                        tol,
                    )?;
                } else {
                    cmp_samples(std::slice::from_ref(e), std::slice::from_ref(g), &k, tol)?;
                }
            }
            Ok(())
        }
        "scalar" => Ok(()),
        other => Err(format!("unknown resultType {other}")),
    }
}

/// Compare one answer with Loki's; `Err` explains the first difference.
pub fn compare(case: &Case, status: u16, body: &str) -> Result<(), String> {
    let exp = &case.expect;
    if status != exp.status {
        return Err(format!(
            "HTTP {} expected, {status} returned: {}",
            exp.status,
            body.chars().take(200).collect::<String>()
        ));
    }
    let Some(ej) = exp.json.as_ref().filter(|_| exp.status == 200) else {
        return Ok(());
    };
    let got: Value = serde_json::from_str(body).map_err(|_| {
        format!(
            "response is not JSON: {}",
            body.chars().take(200).collect::<String>()
        )
    })?;
    if case.path.ends_with("/index/stats") {
        for k in ["streams", "chunks", "entries", "bytes"] {
            if !got.get(k).is_some_and(|v| v.is_u64()) {
                return Err(format!(
                    "index/stats: {k} must be a non-negative integer, got {:?}",
                    got.get(k)
                ));
            }
        }
        let gs = got["streams"].as_u64().unwrap_or(0);
        let es = ej["streams"].as_u64().unwrap_or(0);
        if (gs > 0) != (es > 0) {
            return Err(format!("index/stats: streams {gs}, but Loki found {es}"));
        }
        return Ok(());
    }
    let tol = if case.path.contains("/index/volume") {
        0.10
    } else {
        1e-6
    };
    if got.get("status") != ej.get("status") {
        return Err(format!(
            "status field {:?} expected, {:?} returned",
            ej.get("status"),
            got.get("status")
        ));
    }
    match (ej.get("data"), got.get("data")) {
        (Some(Value::Array(ed)), gd) => {
            let Some(Value::Array(gd)) = gd else {
                return Err("data should be a list".into());
            };
            let norm = |xs: &Vec<Value>| {
                let mut v: Vec<String> = xs
                    .iter()
                    .map(|x| if x.is_object() { key(x) } else { text(x) })
                    .collect();
                v.sort();
                v
            };
            if norm(ed) != norm(gd) {
                return Err(format!(
                    "list differs: expected {} items {:?}..., returned {} items {:?}...",
                    ed.len(),
                    norm(ed).into_iter().take(3).collect::<Vec<_>>(),
                    gd.len(),
                    norm(gd).into_iter().take(3).collect::<Vec<_>>()
                ));
            }
            Ok(())
        }
        (Some(ed @ Value::Object(m)), gd) if m.contains_key("resultType") => {
            let gd = gd.ok_or("data missing")?;
            let rt = ed["resultType"].as_str().unwrap_or("");
            if gd.get("resultType").and_then(Value::as_str) != Some(rt) {
                return Err(format!(
                    "resultType {rt:?} expected, {:?} returned",
                    gd.get("resultType")
                ));
            }
            if let Some(flags) = ed.get("encodingFlags") {
                if gd.get("encodingFlags") != Some(flags) {
                    return Err(format!(
                        "encodingFlags {flags} expected, {:?} returned",
                        gd.get("encodingFlags")
                    ));
                }
            }
            if rt == "scalar" {
                return cmp_samples(
                    std::slice::from_ref(&ed["result"]),
                    std::slice::from_ref(&gd["result"]),
                    "scalar",
                    tol,
                );
            }
            cmp_result(rt, &ed["result"], &gd["result"], tol)
        }
        (Some(Value::Object(em)), gd) => {
            for (k, v) in em {
                let g = gd.and_then(|d| d.get(k)).unwrap_or(&Value::Null);
                if !same_num(v, g, tol) {
                    return Err(format!("{k}: {v} expected, {g} returned"));
                }
            }
            Ok(())
        }
        _ => {
            for (k, v) in ej.as_object().into_iter().flatten() {
                let g = got.get(k).unwrap_or(&Value::Null);
                if !same_num(v, g, tol) && v != g {
                    return Err(format!("{k}: {v} expected, {g} returned"));
                }
            }
            Ok(())
        }
    }
}
