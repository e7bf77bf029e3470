//! The one 200 body every dialect sends (`docs/client-protocols.md#token-response`), and the
//! bodies kept for the requests that ask for the same within the second: this is the
//! cache-hit path.

use std::sync::{Arc, Weak};

use arc_swap::ArcSwapOption;
use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::{no_store_json, TokenRequest};
use crate::token::AccessToken;

/// How a 200 body writes `expires_on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiresOn {
    /// Unix seconds, as a string: every dialect, every current client.
    Epoch,
    /// The date the real App Service 2017-09-01 endpoint wrote, `MM/DD/YYYY HH:MM:SS +00:00`
    /// (UTC), for the clients that parse nothing else (`docs/client-protocols.md#app-service-2017`).
    AppServiceDate,
}

/// Renders the one 200 body every client accepts (`docs/client-protocols.md#token-response`):
/// all values strings, both `expires_in` and `expires_on` (written as `form` says: only the
/// legacy App Service dialect asks for anything but epoch seconds), `resource` echoed
/// exactly, `token_type`, `client_id`, and the user-assigned id echoed when the caller named
/// one (Arc clients check).
///
/// Written by hand into one buffer sized up front, and a JWT needs no JSON escaping (checked
/// once, when the token was stored), so the token, by far the largest part, is copied rather
/// than scanned. With `recent`, a body rendered for the same token and request within the
/// second is sent again as it is.
pub fn token_response(
    token: &Arc<AccessToken>,
    req: &TokenRequest,
    client_id: &str,
    form: ExpiresOn,
    recent: Option<&RecentBodies>,
) -> Response {
    let now = Instant::now();
    let expires_in = token.expires_in(now);
    // Only the common shape is kept: epoch seconds, no id echoed.
    let slot = recent.filter(|_| {
        form == ExpiresOn::Epoch && req.object_id.is_none() && req.resource_id.is_none()
    });
    let slot = slot.map(|recent| recent.slot(token));
    if let Some(slot) = slot {
        if let Some(kept) = &*slot.load() {
            if kept.is_for(token, expires_in, &req.resource, client_id) {
                return (no_store_json(), kept.body.clone()).into_response();
            }
        }
    }
    let body = Bytes::from(render(token, req, client_id, form, expires_in));
    if let Some(slot) = slot {
        // A slot another token claimed this second stays its: keys hit at random would
        // otherwise replace each other on every request, an allocation each.
        let free = slot
            .load()
            .as_ref()
            .is_none_or(|kept| kept.is_stale(now) || kept.is_of(token));
        if free {
            slot.store(Some(Arc::new(Recent {
                token: Arc::downgrade(token),
                expires_at: token.expires_at,
                expires_in,
                client_id: client_id.into(),
                resource: req.resource.as_str().into(),
                body: body.clone(),
            })));
        }
    }
    (no_store_json(), body).into_response()
}

/// The 200 body, written by hand into one buffer sized up front.
fn render(
    token: &AccessToken,
    req: &TokenRequest,
    client_id: &str,
    form: ExpiresOn,
    expires_in: u64,
) -> String {
    let secret = token.secret.expose();
    let mut b = String::with_capacity(secret.len() + req.resource.len() + client_id.len() + 220);
    b.push_str(r#"{"access_token":"#);
    if token.json_safe {
        b.push('"');
        b.push_str(secret);
        b.push('"');
    } else {
        push_json_str(&mut b, secret);
    }
    b.push_str(r#","client_id":"#);
    push_json_str(&mut b, client_id);
    push_number_field(&mut b, "expires_in", expires_in);
    match form {
        ExpiresOn::Epoch => push_number_field(&mut b, "expires_on", token.expires_on),
        ExpiresOn::AppServiceDate => {
            b.push_str(r#","expires_on":""#);
            push_app_service_date(&mut b, token.expires_on);
            b.push('"');
        }
    }
    push_number_field(&mut b, "ext_expires_in", expires_in);
    push_number_field(
        &mut b,
        "not_before",
        token.expires_on.saturating_sub(token.lifetime.as_secs()),
    );
    b.push_str(r#","resource":"#);
    push_json_str(&mut b, &req.resource);
    b.push_str(r#","token_type":"Bearer""#);
    if let Some(id) = &req.object_id {
        b.push_str(r#","object_id":"#);
        push_json_str(&mut b, id);
    }
    if let Some(id) = &req.resource_id {
        b.push_str(r#","msi_res_id":"#);
        push_json_str(&mut b, id);
    }
    b.push('}');
    b
}

/// How many bodies [`RecentBodies`] keeps at most.
const RECENT_BODIES: usize = 64;

/// The 200 bodies rendered lately, for requests that ask for the same again within the
/// second (`expires_in`, the only part that changes, changes once a second): such a hit sends
/// the body already made, a reference count, where rendering one was a tenth of the handler's
/// work (`BENCHMARKS.md`, the hit path). Placed by token, in 64 places: the
/// memory is bounded whatever the number of keys, and keys asked for at random, which would
/// seldom find their body, render as before.
pub struct RecentBodies([ArcSwapOption<Recent>; RECENT_BODIES]);

impl Default for RecentBodies {
    fn default() -> Self {
        RecentBodies(std::array::from_fn(|_| ArcSwapOption::empty()))
    }
}

impl std::fmt::Debug for RecentBodies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The bodies hold tokens.
        f.write_str("RecentBodies(…)")
    }
}

impl RecentBodies {
    /// The place of `token`'s bodies: by its address (tokens live apart in memory).
    fn slot(&self, token: &Arc<AccessToken>) -> &ArcSwapOption<Recent> {
        let address = Arc::as_ptr(token) as usize;
        &self.0[(address >> 6) % RECENT_BODIES]
    }
}

/// One body kept, with what it was rendered for.
struct Recent {
    /// The token rendered: weak, so the body never keeps a token alive past its key; its
    /// address (which nothing else takes while this lives) says which token it is.
    token: Weak<AccessToken>,
    /// The token's expiry, to tell when the second this body was made for has passed.
    expires_at: Instant,
    expires_in: u64,
    client_id: Box<str>,
    resource: Box<str>,
    body: Bytes,
}

impl Recent {
    fn is_of(&self, token: &Arc<AccessToken>) -> bool {
        std::ptr::eq(self.token.as_ptr(), Arc::as_ptr(token))
    }

    fn is_for(
        &self,
        token: &Arc<AccessToken>,
        expires_in: u64,
        resource: &str,
        client_id: &str,
    ) -> bool {
        self.is_of(token)
            && self.expires_in == expires_in
            && *self.resource == *resource
            && *self.client_id == *client_id
    }

    /// Whether the second it was made for has passed.
    fn is_stale(&self, now: Instant) -> bool {
        self.expires_at.saturating_duration_since(now).as_secs() != self.expires_in
    }
}

/// Unix seconds as App Service 2017-09-01 wrote them on Linux, `06/20/2019 02:57:58 +00:00`:
/// zero-padded month, day, 24-hour time, always UTC. The form every client of that dialect
/// parses (Windows hosts wrote `1/16/2020 5:24:12 AM +00:00`, which only some do).
fn push_app_service_date(b: &mut String, unix: u64) {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    let (year, month, day) = civil_from_days(days);
    let two = |b: &mut String, n: u64| {
        b.push(char::from(b'0' + (n / 10 % 10) as u8));
        b.push(char::from(b'0' + (n % 10) as u8));
    };
    two(b, month);
    b.push('/');
    two(b, day);
    b.push('/');
    b.push_str(itoa::Buffer::new().format(year));
    b.push(' ');
    two(b, secs / 3600);
    b.push(':');
    two(b, secs / 60 % 60);
    b.push(':');
    two(b, secs % 60);
    b.push_str(" +00:00");
}

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01: Howard
/// Hinnant's `civil_from_days`, for days on or after the epoch.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `,"name":"123"`: a number as a JSON string, as IMDS sends it (Rust's SDK insists).
fn push_number_field(b: &mut String, name: &str, value: u64) {
    b.push_str(",\"");
    b.push_str(name);
    b.push_str("\":\"");
    b.push_str(itoa::Buffer::new().format(value));
    b.push('"');
}

/// A JSON string literal, escaped.
fn push_json_str(b: &mut String, s: &str) {
    b.push('"');
    // Resources and ids almost never need escaping: copy them whole when they do not.
    if !s.bytes().any(|c| c == b'"' || c == b'\\' || c < 0x20) {
        b.push_str(s);
        b.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => b.push_str("\\\""),
            '\\' => b.push_str("\\\\"),
            '\n' => b.push_str("\\n"),
            '\r' => b.push_str("\\r"),
            '\t' => b.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                b.push_str("\\u00");
                b.push(char::from_digit((c as u32) >> 4, 16).unwrap_or('0'));
                b.push(char::from_digit((c as u32) & 0xf, 16).unwrap_or('0'));
            }
            c => b.push(c),
        }
    }
    b.push('"');
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_body_is_valid_json_with_string_values() {
        use crate::token::Secret;
        let tricky = TokenRequest {
            resource: "https://x/\"quoted\"\\\u{1}é".to_owned(),
            object_id: Some("obj".to_owned()),
            ..Default::default()
        };
        for secret in ["eyJhbGciOi.eyJzdWIiOi.sig-_", "not \"json\" safe\n"] {
            let token = AccessToken::new(
                Secret::new(secret),
                tokio::time::Instant::now(),
                Duration::from_secs(3599),
                None,
            );
            let response =
                token_response(&Arc::new(token), &tricky, "c\"id", ExpiresOn::Epoch, None);
            let body = futures_body(response);
            let v: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
            assert_eq!(v["access_token"], secret);
            assert_eq!(v["resource"], tricky.resource.as_str());
            assert_eq!(v["client_id"], "c\"id");
            assert_eq!(v["object_id"], "obj");
            assert!(v.get("msi_res_id").is_none());
            for k in [
                "expires_in",
                "expires_on",
                "ext_expires_in",
                "not_before",
                "token_type",
            ] {
                assert!(v[k].is_string(), "{k}");
            }
            let left: u64 = v["expires_in"].as_str().unwrap().parse().unwrap();
            assert!((3590..=3599).contains(&left), "{left}");
        }
    }

    fn futures_body(response: Response) -> Vec<u8> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap()
                .to_vec()
        })
    }

    #[test]
    fn app_service_dates_are_utc_in_the_linux_form() {
        let date = |unix| {
            let mut b = String::new();
            push_app_service_date(&mut b, unix);
            b
        };
        // Checked against `date -u -d @N '+%m/%d/%Y %H:%M:%S +00:00'`.
        assert_eq!(date(0), "01/01/1970 00:00:00 +00:00");
        assert_eq!(date(1_561_000_678), "06/20/2019 03:17:58 +00:00");
        assert_eq!(date(1_709_164_800), "02/29/2024 00:00:00 +00:00");
        assert_eq!(date(1_798_761_599), "12/31/2026 23:59:59 +00:00");
        assert_eq!(date(4_107_542_400), "03/01/2100 00:00:00 +00:00");
        // Every day for 200 years: one day after another, months and leap years right.
        let mut last = (1969, 12, 31);
        for days in 0..73_000 {
            let (y, m, d) = civil_from_days(days);
            let next_day = (y, m, d) == (last.0, last.1, last.2 + 1);
            let next_month = (y, m, d) == (last.0, last.1 + 1, 1);
            let next_year = (y, m, d) == (last.0 + 1, 1, 1);
            assert!(
                next_day || next_month || next_year,
                "{last:?} then {y}-{m}-{d}"
            );
            let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
            let month_len = [
                31,
                28 + u64::from(leap),
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            assert!(d <= month_len[m as usize - 1], "{y}-{m}-{d}");
            last = (y, m, d);
        }
    }

    #[test]
    fn the_date_form_changes_expires_on_alone() {
        use crate::token::Secret;
        let req = TokenRequest {
            resource: "https://x".to_owned(),
            ..Default::default()
        };
        let token = Arc::new(AccessToken::new(
            Secret::new("eyJhbGciOi.eyJzdWIiOi.sig"),
            tokio::time::Instant::now(),
            Duration::from_secs(3599),
            None,
        ));
        let body = |form| {
            let response = token_response(&token, &req, "c", form, None);
            serde_json::from_slice::<serde_json::Value>(&futures_body(response)).unwrap()
        };
        let (epoch, dated) = (body(ExpiresOn::Epoch), body(ExpiresOn::AppServiceDate));
        let mut want = String::new();
        push_app_service_date(&mut want, token.expires_on);
        assert_eq!(dated["expires_on"], want.as_str());
        assert_eq!(epoch["expires_on"], token.expires_on.to_string().as_str());
        let (mut epoch, mut dated) = (epoch, dated);
        epoch["expires_on"].take();
        dated["expires_on"].take();
        assert_eq!(epoch, dated);
    }

    /// What a paused-time test renders with: the body, parsed, and the memo's entry for it.
    async fn served(
        token: &Arc<AccessToken>,
        req: &TokenRequest,
        client_id: &str,
        recent: &RecentBodies,
    ) -> (serde_json::Value, Option<Arc<Recent>>) {
        let response = token_response(token, req, client_id, ExpiresOn::Epoch, Some(recent));
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            serde_json::from_slice(&body).unwrap(),
            recent.slot(token).load_full(),
        )
    }

    fn hourly(secret: &str) -> Arc<AccessToken> {
        Arc::new(AccessToken::new(
            crate::token::Secret::new(secret),
            Instant::now(),
            Duration::from_secs(3600),
            None,
        ))
    }

    fn asking(resource: &str) -> TokenRequest {
        TokenRequest {
            resource: resource.to_owned(),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_body_is_sent_again_only_within_its_second() {
        let recent = RecentBodies::default();
        let token = hourly("eyJ0.eyJ1.sig");
        let req = asking("https://r.example");
        let (first, kept) = served(&token, &req, "app", &recent).await;
        let kept = kept.expect("the body is kept");
        let (again, still) = served(&token, &req, "app", &recent).await;
        assert_eq!(first, again);
        assert!(
            Arc::ptr_eq(&kept, &still.unwrap()),
            "rendered again within the second"
        );
        // A second later `expires_in` is one less: a new body, kept in its place.
        tokio::time::advance(Duration::from_secs(1)).await;
        let (later, newer) = served(&token, &req, "app", &recent).await;
        assert_eq!(first["expires_in"], "3600");
        assert_eq!(later["expires_in"], "3599");
        assert_eq!(later["ext_expires_in"], "3599");
        assert!(!Arc::ptr_eq(&kept, &newer.unwrap()));
        // The memo holds the token weakly: it never keeps one alive.
        assert_eq!(Arc::strong_count(&token), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_body_is_sent_only_for_the_same_request() {
        let recent = RecentBodies::default();
        let token = hourly("eyJ0.eyJ1.sig");
        served(&token, &asking("https://r.example"), "app", &recent).await;
        // Another spelling of the resource, another client id: each is echoed as asked.
        let (other, _) = served(&token, &asking("https://r.example/"), "app", &recent).await;
        assert_eq!(other["resource"], "https://r.example/");
        let (other, _) = served(&token, &asking("https://r.example"), "mine", &recent).await;
        assert_eq!(other["client_id"], "mine");
        // An id echoed is never kept, nor served from what was kept.
        let with_id = TokenRequest {
            object_id: Some("obj".to_owned()),
            ..asking("https://r.example")
        };
        let (echoed, _) = served(&token, &with_id, "mine", &recent).await;
        assert_eq!(echoed["object_id"], "obj");
        let (plain, kept) = served(&token, &asking("https://r.example"), "mine", &recent).await;
        assert!(plain.get("object_id").is_none());
        assert!(kept.is_some_and(|k| !k.body.windows(9).any(|w| w == b"object_id")));
        // Another token in the same place: its own body, never the other's.
        let other = hourly("eyJ9.eyJ8.other");
        let (theirs, _) = served(&other, &asking("https://r.example"), "mine", &recent).await;
        assert_eq!(theirs["access_token"], "eyJ9.eyJ8.other");
    }

    #[tokio::test(start_paused = true)]
    async fn a_place_claimed_this_second_is_not_taken_by_another_token() {
        let recent = RecentBodies::default();
        // Two tokens that share a place (found by trying: tokens are placed by address).
        let first = hourly("eyJ0.eyJ1.first");
        let mut others = Vec::new();
        let second = (0..100_000)
            .find_map(|_| {
                let t = hourly("eyJ0.eyJ1.second");
                if std::ptr::eq(recent.slot(&t), recent.slot(&first)) {
                    return Some(t);
                }
                others.push(t);
                None
            })
            .expect("two tokens share a place");
        let req = asking("https://r.example");
        let (_, kept) = served(&first, &req, "app", &recent).await;
        let (body, still) = served(&second, &req, "app", &recent).await;
        assert_eq!(body["access_token"], "eyJ0.eyJ1.second");
        assert!(
            Arc::ptr_eq(&kept.unwrap(), &still.unwrap()),
            "the claim held"
        );
        // Once its second has passed, the place is free again.
        tokio::time::advance(Duration::from_secs(1)).await;
        let (_, taken) = served(&second, &req, "app", &recent).await;
        assert!(taken.unwrap().is_of(&second));
    }
}
