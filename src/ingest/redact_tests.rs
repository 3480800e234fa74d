//! Unit tests of [`super`]: each built-in kind in the shapes services log it, the cases that
//! must be kept, metadata, custom rules, tenant overrides and configuration errors.

use super::*;

use anyhow::Context;

type Result<T = ()> = anyhow::Result<T>;

fn all() -> Result<Arc<RuleSet>> {
    let config = RedactionConfig {
        enabled: true,
        ..RedactionConfig::default()
    };
    Redactor::new(&config)?
        .for_tenant("t")
        .cloned()
        .context("enabled rules")
}

/// Redact `text` and return it with the counts by rule name.
fn run(rules: &RuleSet, text: &str) -> (String, Vec<(String, u64)>) {
    let mut pass = rules.pass();
    let out = rules
        .redact_text(text, &mut pass)
        .unwrap_or_else(|| text.to_string());
    let named = rules
        .rule_names()
        .zip(pass.counts().iter().copied())
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| (r.to_string(), n))
        .collect();
    (out, named)
}

fn redacted(rules: &RuleSet, text: &str) -> String {
    run(rules, text).0
}

#[test]
fn passwords_in_logfmt_json_and_key_value_shapes() -> Result {
    let r = all()?;
    assert_eq!(
        redacted(&r, "level=info user=bob password=hunter2 ok=1"),
        "level=info user=bob password=<redacted:password> ok=1"
    );
    assert_eq!(
        redacted(&r, r#"msg="login" db_password="p@ss word" next=1"#),
        r#"msg="login" db_password="<redacted:password>" next=1"#
    );
    assert_eq!(
        redacted(&r, r#"{"user":"bob","Password":"s3cr\"et","n":1}"#),
        r#"{"user":"bob","Password":"<redacted:password>","n":1}"#
    );
    assert_eq!(
        redacted(&r, "config loaded, client_secret: abc123 retries: 3"),
        "config loaded, client_secret: <redacted:password> retries: 3"
    );
    assert_eq!(
        redacted(&r, "GET /cb?code=1&access_token=eyJabc&state=x"),
        "GET /cb?code=1&access_token=<redacted:password>&state=x"
    );
    assert_eq!(
        redacted(&r, "X-Auth-Token: 0a1b2c3d PWD='x y'"),
        "X-Auth-Token: <redacted:password> PWD='<redacted:password>'"
    );
    // An unquoted JSON value is quoted so the line stays JSON.
    assert_eq!(
        redacted(&r, r#"{"refresh_token":12345,"passwd": null}"#),
        r#"{"refresh_token":"<redacted:password>","passwd": null}"#
    );
    // A JSON document inside a JSON string keeps its escaped quotes.
    assert_eq!(
        redacted(&r, r#"{"body":"{\"private_key\":\"MIIEv\"}"}"#),
        r#"{"body":"{\"private_key\":\"<redacted:password>\"}"}"#
    );
    assert_eq!(
        redacted(&r, "dsn=postgres://app:Sup3r@db:5432/x"),
        "dsn=postgres://app:<redacted:password>@db:5432/x"
    );
    Ok(())
}

#[test]
fn words_that_only_look_like_keys_are_kept() -> Result {
    let r = all()?;
    for line in [
        "Failed password for invalid user admin from 10.0.0.1 port 22 ssh2",
        "max_tokens=512 tokenizer=bpe password_reset_required=true",
        r#"{"token_count":3,"passwords":"x"}"#,
        "GET https://tovplay.org/games 200",
        "missing bearer credentials",
        "order 1234567890123456 shipped",
    ] {
        let (out, counts) = run(&r, line);
        assert_eq!(out, line);
        assert!(counts.is_empty(), "{line}: {counts:?}");
    }
    Ok(())
}

#[test]
fn bearer_and_basic_credentials() -> Result {
    let r = all()?;
    assert_eq!(
        redacted(&r, "Authorization: Bearer eyJhbGciOi.J9x_y-z"),
        "Authorization: Bearer <redacted:bearer>"
    );
    assert_eq!(
        redacted(&r, r#"{"authorization":"Basic dXNlcjpwYXNz"}"#),
        r#"{"authorization":"Basic <redacted:bearer>"}"#
    );
    assert_eq!(
        redacted(
            &r,
            "curl -H 'authorization: token ghx1234abcd' and bearer abcdef123456"
        ),
        "curl -H 'authorization: token <redacted:bearer>' and bearer <redacted:bearer>"
    );
    let (_, counts) = run(&r, "Authorization: Bearer abcdef0123456789");
    assert_eq!(counts, vec![("bearer".to_string(), 1)]);
    Ok(())
}

#[test]
fn api_key_shapes() -> Result {
    let r = all()?;
    let stripe = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";
    let github = "ghp_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghij";
    let slack = "xoxb-123456789012-abcdefABCDEF";
    let google = "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe";
    for key in [stripe, github, slack, google] {
        let line = format!("calling upstream with key {key} now");
        assert_eq!(
            redacted(&r, &line),
            "calling upstream with key <redacted:api_key> now",
            "{key}"
        );
    }
    assert_eq!(
        redacted(&r, "api_key=9f86d081884c7d659a2feaa0c55ad015 ok"),
        "api_key=<redacted:api_key> ok"
    );
    assert_eq!(
        redacted(&r, r#"{"apiKey":"c2VjcmV0LWtleS1tYXRlcmlhbA=="}"#),
        r#"{"apiKey":"<redacted:api_key>"}"#
    );
    // A short value after api_key is still a password-like value.
    assert_eq!(redacted(&r, "api_key=abc"), "api_key=<redacted:password>");
    Ok(())
}

#[test]
fn aws_keys() -> Result {
    let r = all()?;
    assert_eq!(
        redacted(&r, "using AKIAIOSFODNN7EXAMPLE for s3"),
        "using <redacted:aws_key> for s3"
    );
    assert_eq!(
        redacted(&r, "creds ASIAY34FZKBOKMUTVV7A expire"),
        "creds <redacted:aws_key> expire"
    );
    assert_eq!(
        redacted(
            &r,
            "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY x=1"
        ),
        "AWS_SECRET_ACCESS_KEY=<redacted:aws_key> x=1"
    );
    assert_eq!(
        redacted(&r, r#"{"SecretAccessKey":"wJalrXUtnFEMI/K7MDENG"}"#),
        r#"{"SecretAccessKey":"<redacted:aws_key>"}"#
    );
    // Not an id: too short, or glued to other letters.
    assert_eq!(
        redacted(&r, "AKIA1234 XAKIAIOSFODNN7EXAMPLE"),
        "AKIA1234 XAKIAIOSFODNN7EXAMPLE"
    );
    Ok(())
}

#[test]
fn credit_cards_pass_luhn_and_have_a_network_prefix() -> Result {
    let r = all()?;
    for card in [
        "4111111111111111",
        "4111 1111 1111 1111",
        "5500-0000-0000-0004",
        "378282246310005",
        "6011111111111117",
        "2223000048400011",
    ] {
        let (out, counts) = run(&r, &format!("paid with {card}."));
        assert_eq!(out, "paid with <redacted:credit_card>.", "{card}");
        assert_eq!(counts, vec![("credit_card".to_string(), 1)]);
    }
    // A date before the card joins its run, but the card is found inside it.
    assert_eq!(
        redacted(&r, "2025-11-21 4111-1111-1111-1111"),
        "2025-11-21 <redacted:credit_card>"
    );
    assert_eq!(
        redacted(&r, r#"{"card":"4012888888881881","n":2}"#),
        r#"{"card":"<redacted:credit_card>","n":2}"#
    );
    Ok(())
}

#[test]
fn order_ids_timestamps_and_floats_are_not_cards() -> Result {
    let r = all()?;
    for line in [
        // Luhn fails.
        "order 4111111111111112 shipped",
        "order 5500 0000 0000 0005",
        // Luhn passes but no network starts with 1, 7, 8, 9 or 0: epoch ns and ms.
        "ts=1763596800000000000 took=1763596800000",
        "id=7992739871000000",
        // Glued to letters, a decimal point or a dash chain.
        "trace=ab4111111111111111cd",
        "score=0.4111111111111111 x=4111111111111111.5",
        "uuid=41111111-1111-1111-a111-111111111111",
        // Too short and too long.
        "pin 411111111111 acct 41111111111111111111",
    ] {
        let (out, counts) = run(&r, line);
        assert_eq!(out, line);
        assert!(counts.is_empty(), "{line}: {counts:?}");
    }
    Ok(())
}

#[test]
fn cards_are_found_at_every_offset_and_length() {
    // 13 to 19 digits, with and without separators, at every position of the 8-byte grid
    // the scan reads in, and at the very end of the text.
    for card in [
        "4222222222222",
        "4111111111111111",
        "4111 1111 1111 1111",
        "378282246310005",
        "6011000990139424",
        "4111111111111111110",
    ] {
        for offset in 0..17 {
            for tail in ["", ".", " and more text after it"] {
                let text = format!("{}{card}{tail}", " ".repeat(offset));
                let mut spans = Vec::new();
                cards::for_each(text.as_bytes(), |s, e| spans.push((s, e)));
                assert_eq!(spans, vec![(offset, offset + card.len())], "{text:?}");
            }
        }
    }
    let mut n = 0;
    let two = "card 4111111111111111 and 5500 0000 0000 0004, twice";
    cards::for_each(two.as_bytes(), |_, _| n += 1);
    assert_eq!(n, 2);
}

#[test]
fn luhn_checks_known_numbers() {
    let valid = |s: &str| {
        let mut hit = false;
        cards::for_each(s.as_bytes(), |_, _| hit = true);
        hit
    };
    assert!(valid("4539 1488 0343 6467"));
    assert!(!valid("4539 1488 0343 6468"));
    assert!(valid("30569309025904"));
    assert!(!valid("30569309025905"));
}

#[test]
fn metadata_values_are_redacted_by_name_and_by_content() -> Result {
    let r = all()?;
    let mut pass = r.pass();
    assert_eq!(
        r.redact_metadata("password", "hunter2", &mut pass)
            .as_deref(),
        Some("<redacted:password>")
    );
    assert_eq!(
        r.redact_metadata("user_api_key", "k", &mut pass).as_deref(),
        Some("<redacted:api_key>")
    );
    assert_eq!(
        r.redact_metadata("aws_secret_access_key", "abc", &mut pass)
            .as_deref(),
        Some("<redacted:aws_key>")
    );
    assert_eq!(
        r.redact_metadata("http_authorization", "Bearer x", &mut pass)
            .as_deref(),
        Some("<redacted:bearer>")
    );
    assert_eq!(
        r.redact_metadata("card", "4111-1111-1111-1111", &mut pass)
            .as_deref(),
        Some("<redacted:credit_card>")
    );
    assert_eq!(
        r.redact_metadata("note", "token=abc", &mut pass).as_deref(),
        Some("token=<redacted:password>")
    );
    assert_eq!(
        r.redact_metadata("trace_id", "0af7651916cd43dd8448eb211c80319c", &mut pass),
        None
    );
    assert_eq!(r.redact_metadata("detected_level", "info", &mut pass), None);
    let total: u64 = pass.counts().iter().sum();
    assert_eq!(total, 6);
    Ok(())
}

#[test]
fn custom_rules_replace_group_one_or_the_whole_match() -> Result {
    let config: RedactionConfig = serde_yaml::from_str(
        "enabled: true\nbuiltin: []\ncustom:\n  - {name: session_id, regex: 'sid=([a-f0-9]{32})'}\n  - {name: ssn, regex: '\\b\\d{3}-\\d{2}-\\d{4}\\b'}\n",
    )?;
    let red = Redactor::new(&config)?;
    let r = red.for_tenant("x").context("rules")?;
    let (out, counts) = run(
        r,
        "sid=0123456789abcdef0123456789abcdef ssn 123-45-6789 password=kept",
    );
    assert_eq!(
        out,
        "sid=<redacted:session_id> ssn <redacted:ssn> password=kept"
    );
    assert_eq!(
        counts,
        vec![("session_id".to_string(), 1), ("ssn".to_string(), 1)]
    );
    Ok(())
}

#[test]
fn tenants_override_the_default() -> Result {
    let config: RedactionConfig = serde_yaml::from_str(
        "enabled: false\ntenants:\n  acme: {enabled: true, builtin: [credit_card]}\n  beta: {enabled: true}\n",
    )?;
    let red = Redactor::new(&config)?;
    assert!(red.for_tenant("other").is_none());
    let acme = red.for_tenant("acme").context("acme")?;
    assert_eq!(acme.rule_names().collect::<Vec<_>>(), vec!["credit_card"]);
    assert_eq!(
        redacted(acme, "password=x 4111111111111111"),
        "password=x <redacted:credit_card>"
    );
    let beta = red.for_tenant("beta").context("beta")?;
    assert_eq!(beta.len(), 5);
    Ok(())
}

#[test]
fn bad_custom_rules_are_rejected_with_their_key() {
    let bad = |yaml: &str| -> String {
        let config: RedactionConfig = match serde_yaml::from_str(yaml) {
            Ok(c) => c,
            Err(e) => return format!("yaml: {e}"),
        };
        match Redactor::new(&config) {
            Ok(_) => "accepted".to_string(),
            Err(e) => e.to_string(),
        }
    };
    let e = bad("enabled: true\ncustom: [{name: x, regex: 'a(b'}]\n");
    assert!(
        e.starts_with("limits_config.redaction.custom[0] (x): invalid regex"),
        "{e}"
    );
    let e = bad("tenants: {t1: {enabled: true, custom: [{name: ok, regex: 'a'}, {name: y, regex: '[z'}]}}\n");
    assert!(
        e.starts_with("limits_config.redaction.tenants.t1.custom[1] (y): invalid regex"),
        "{e}"
    );
    let e = bad("enabled: true\ncustom: [{name: e, regex: 'x*'}]\n");
    assert!(e.contains("matches the empty string"), "{e}");
    let e = bad("enabled: true\ncustom: [{name: 'bad name', regex: 'x'}]\n");
    assert!(e.contains("must be 1-64 characters"), "{e}");
    let e = bad("enabled: true\ncustom: [{name: password, regex: 'x'}]\n");
    assert!(e.contains("already taken"), "{e}");
    // Rules that are off are checked all the same.
    let e = bad("custom: [{name: x, regex: 'a(b'}]\n");
    assert!(e.contains("invalid regex"), "{e}");
}

#[test]
fn untouched_text_is_not_copied() -> Result {
    let r = all()?;
    let mut pass = r.pass();
    for line in [
        r#"{"timestamp":"2025-11-21T10:00:01.000001Z","level":"INFO","message":"read game","user_id":1042,"ip":"10.1.2.3","status":200}"#,
        r#"10.0.0.5 - - [21/Nov/2025:10:00:01 +0000] "GET /api/games/12 HTTP/1.1" 200 512 "https://tovplay.org/games" "curl/8.4.0" rt=0.012"#,
        "",
    ] {
        assert_eq!(r.redact_text(line, &mut pass), None, "{line}");
    }
    assert!(pass.counts().iter().all(|c| *c == 0));
    Ok(())
}
