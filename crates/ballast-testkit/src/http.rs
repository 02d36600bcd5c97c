//! One request to the control API: the status and the body, whatever the status, so a test can
//! assert on a 503 as well as on a 200.

use std::time::Duration;

/// An HTTP client that reports error statuses as answers, not as errors.
fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// `method` on `url` with `body` (sent as JSON when not empty) and `headers`: status and body.
/// `Err` when no answer came (refused, timed out, cut).
pub fn request(
    method: &str,
    url: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let agent = agent(Duration::from_secs(30));
    let fail = |e: ureq::Error| format!("{method} {url}: {e}");
    let mut response = match method {
        "GET" | "HEAD" | "DELETE" => {
            let mut builder = match method {
                "GET" => agent.get(url),
                "HEAD" => agent.head(url),
                _ => agent.delete(url),
            };
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            builder.call().map_err(fail)?
        }
        _ => {
            let mut builder = match method {
                "PUT" => agent.put(url),
                "PATCH" => agent.patch(url),
                _ => agent.post(url),
            };
            if !headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            {
                builder = builder.header("Content-Type", "application/json");
            }
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            builder.send(body).map_err(fail)?
        }
    };
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .map_err(|e| format!("{method} {url}: cannot read the body: {e}"))?;
    Ok((status, text))
}

/// GET `url`.
pub fn get(url: &str) -> Result<(u16, String), String> {
    request("GET", url, b"", &[])
}

/// POST `body` to `url`.
pub fn post(url: &str, body: &str) -> Result<(u16, String), String> {
    request("POST", url, body.as_bytes(), &[])
}

/// GET `url` as JSON: `Err` unless it answers 200 with JSON.
pub fn get_json(url: &str) -> Result<serde_json::Value, String> {
    let (status, body) = get(url)?;
    if status != 200 {
        return Err(format!("GET {url}: {status} {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("GET {url} is not JSON ({e}): {body}"))
}
