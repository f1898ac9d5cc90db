//! Storefront forms driven as a browser would, without one: a cookie jar,
//! no automatic redirects, and the CSRF token read off the page.

use std::collections::BTreeMap;

use reqwest::StatusCode;

/// Cookies as a browser keeps them, for one host.
#[derive(Default)]
pub struct Jar(BTreeMap<String, String>);

impl Jar {
    pub fn take(&mut self, res: &reqwest::Response) {
        for v in res.headers().get_all("set-cookie") {
            let pair = v.to_str().unwrap().split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            self.0.insert(k.to_string(), v.to_string());
        }
    }

    pub fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub async fn get(
    c: &reqwest::Client,
    jar: &mut Jar,
    url: &str,
) -> (StatusCode, String, Option<String>) {
    let res = c
        .get(url)
        .header("cookie", jar.header())
        .send()
        .await
        .unwrap();
    jar.take(&res);
    let loc = res
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string());
    (res.status(), res.text().await.unwrap(), loc)
}

pub async fn post(
    c: &reqwest::Client,
    jar: &mut Jar,
    url: &str,
    form: &[(&str, &str)],
) -> (StatusCode, String, Option<String>) {
    let res = c
        .post(url)
        .header("cookie", jar.header())
        .form(form)
        .send()
        .await
        .unwrap();
    jar.take(&res);
    let loc = res
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string());
    (res.status(), res.text().await.unwrap(), loc)
}

pub fn csrf_of(html: &str) -> String {
    let start = html
        .find("name=\"csrf\" value=\"")
        .expect("page has a CSRF field")
        + 19;
    html[start..].split('"').next().unwrap().to_string()
}
