//! A cookie-keeping HTTP client for the admin panel's HTML forms, and
//! helpers to create operators with the real `kami admin create`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use reqwest::header::{ACCEPT_LANGUAGE, COOKIE, LOCATION, RETRY_AFTER, SET_COOKIE};
use reqwest::StatusCode;

use super::Kami;

pub const SESSION: &str = "kami_admin";

/// The current TOTP code for a base32 secret, as an authenticator app shows it.
pub fn totp_now(secret_b32: &str) -> String {
    totp_at(secret_b32, super::now_secs() as u64)
}

/// The next step's code, which a phone whose clock runs ahead shows (Kami
/// takes one step of drift): a code not yet spent once `totp_now`'s has
/// been, since every accepted code spends its step.
pub fn totp_next(secret_b32: &str) -> String {
    totp_at(secret_b32, super::now_secs() as u64 + 30)
}

fn totp_at(secret_b32: &str, unix_secs: u64) -> String {
    let secret = totp_rs::Secret::Encoded(secret_b32.to_string())
        .to_bytes()
        .unwrap();
    totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, 30, secret)
        .unwrap()
        .generate(unix_secs)
}

/// The text from after `opening` up to the next tag.
pub fn text_after(html: &str, opening: &str) -> Option<String> {
    let start = html.find(opening)? + opening.len();
    let end = html[start..].find('<')?;
    Some(html[start..start + end].to_string())
}

/// Creates an operator through the CLI; returns the printed password.
pub fn create_admin(kami: &Kami, email: &str, role: &str) -> String {
    let out = kami.cli(&["admin", "create", "--email", email, "--role", role]);
    assert!(
        out.status.success(),
        "kami admin create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .expect("kami admin create printed no password")
        .to_string()
}

pub struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    pub retry_after: Option<String>,
    pub body: String,
}

impl Page {
    /// The first form's CSRF token on the page.
    pub fn csrf(&self) -> String {
        attr_after(&self.body, "name=\"csrf\" value=\"").unwrap_or_else(|| {
            panic!(
                "no csrf field on the page ({}):\n{}",
                self.status, self.body
            )
        })
    }
}

/// The value of the attribute whose opening (`name="x" value="`) is given.
pub fn attr_after(html: &str, opening: &str) -> Option<String> {
    let start = html.find(opening)? + opening.len();
    let end = html[start..].find('"')?;
    Some(html[start..start + end].to_string())
}

/// One browser: its own cookies, no automatic redirects.
pub struct Panel {
    base: String,
    http: reqwest::Client,
    cookies: Mutex<BTreeMap<String, String>>,
    /// The browser's `Accept-Language`, sent with every request when set.
    accept_language: Mutex<Option<String>>,
}

impl Panel {
    pub fn new(kami: &Kami) -> Self {
        Self::at(&kami.base)
    }

    /// A browser for another server on the same data (e.g. a second
    /// instance started with other settings).
    pub fn at(base: &str) -> Self {
        Self {
            base: base.to_string(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: Mutex::new(BTreeMap::new()),
            accept_language: Mutex::new(None),
        }
    }

    /// Makes this browser ask for `value` in `Accept-Language` from now on.
    pub fn set_accept_language(&self, value: &str) {
        *self.accept_language.lock().unwrap() = Some(value.into());
    }

    pub fn set_cookie(&self, name: &str, value: &str) {
        self.cookies
            .lock()
            .unwrap()
            .insert(name.into(), value.into());
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies.lock().unwrap().get(name).cloned()
    }

    fn cookie_header(&self) -> String {
        let jar = self.cookies.lock().unwrap();
        jar.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Page {
        let mut req = req.header(COOKIE, self.cookie_header());
        if let Some(al) = self.accept_language.lock().unwrap().clone() {
            req = req.header(ACCEPT_LANGUAGE, al);
        }
        let res = req.send().await.expect("panel request");
        for v in res.headers().get_all(SET_COOKIE) {
            let v = v.to_str().unwrap();
            let pair = v.split(';').next().unwrap();
            let (k, val) = pair.split_once('=').unwrap();
            let mut jar = self.cookies.lock().unwrap();
            if v.contains("Max-Age=0") {
                jar.remove(k);
            } else {
                jar.insert(k.to_string(), val.to_string());
            }
        }
        let status = res.status();
        let location = res
            .headers()
            .get(LOCATION)
            .map(|l| l.to_str().unwrap().to_string());
        let retry_after = res
            .headers()
            .get(RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        Page {
            status,
            location,
            retry_after,
            body: res.text().await.unwrap_or_default(),
        }
    }

    /// A GET whose body is kept as bytes, with the response headers (downloads).
    pub async fn download(&self, path: &str) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .expect("panel download");
        let (status, headers) = (res.status(), res.headers().clone());
        (
            status,
            headers,
            res.bytes().await.unwrap_or_default().to_vec(),
        )
    }

    pub async fn get(&self, path: &str) -> Page {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn head(&self, path: &str) -> Page {
        self.send(self.http.head(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        self.send(self.http.post(format!("{}{path}", self.base)).form(form))
            .await
    }

    /// A multipart form (the code import), built by hand: each field is
    /// (name, optional file name, content).
    pub async fn post_multipart(&self, path: &str, fields: &[(&str, Option<&str>, &[u8])]) -> Page {
        let boundary = "----kamitestboundary7MA4YWxkTrZu0gW";
        let mut body = Vec::new();
        for (name, file, content) in fields {
            body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            match file {
                Some(f) => body.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: text/plain\r\n\r\n"
                    )
                    .as_bytes(),
                ),
                None => body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                ),
            }
            body.extend_from_slice(content);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(body),
        )
        .await
    }

    /// Submits the login form; the answer is 303 to /admin on success.
    pub async fn try_login(&self, email: &str, password: &str, totp: &str) -> Page {
        let csrf = self.get("/admin/login").await.csrf();
        self.post(
            "/admin/login",
            &[
                ("csrf", &csrf),
                ("email", email),
                ("password", password),
                ("totp", totp),
            ],
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) {
        let p = self.try_login(email, password, "").await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "login failed: {}", p.body);
        assert_eq!(p.location.as_deref(), Some("/admin"));
    }

    /// The session's CSRF token, from the dashboard.
    pub async fn csrf(&self) -> String {
        let p = self.get("/admin").await;
        assert_eq!(p.status, StatusCode::OK, "dashboard: {}", p.body);
        p.csrf()
    }
}
