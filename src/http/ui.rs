//! The dashboard at `/ui` (docs/dashboard.md): a page, its script, its style
//! sheet and an icon, compiled into the binary (`include_bytes!` of
//! `src/http/ui/`), so it works offline and names no other origin. The page
//! reads only the JSON API (`/v1/stats`, `/v1/queues`, a queue's dead tasks,
//! a task, retry, delete), sending the token its user typed when the server
//! wants one. The files themselves need no token: they are the same for every
//! server and show nothing of its state. Pure, like the rest of `http/`: a
//! request's method, path and query in, response bytes out.
//!
//! Every file is sent with a strict `Content-Security-Policy` (scripts, styles,
//! images and requests from this origin only; no inline script or style, no
//! frames, no forms posting anywhere) and `X-Content-Type-Options: nosniff`,
//! so that even a payload the script mishandled could not run as code. The
//! script itself puts what the server sends (queue names, payloads, errors)
//! into the page as text only (`textContent`, `append` of strings), never as
//! markup; `tests::the_script_never_parses_markup` holds it to that.

use super::Refusal;

/// One file of the dashboard.
#[derive(Debug)]
struct Asset {
    /// The request path that names it.
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const INDEX_HTML: &[u8] = include_bytes!("ui/index.html");

/// Every path under `/ui` that answers 200; any other is 404.
const ASSETS: [Asset; 5] = [
    Asset { path: "/ui", content_type: "text/html; charset=utf-8", body: INDEX_HTML },
    Asset { path: "/ui/", content_type: "text/html; charset=utf-8", body: INDEX_HTML },
    Asset { path: "/ui/app.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("ui/app.js") },
    Asset { path: "/ui/style.css", content_type: "text/css; charset=utf-8", body: include_bytes!("ui/style.css") },
    Asset { path: "/ui/icon.png", content_type: "image/png", body: include_bytes!("ui/icon.png") },
];

/// `default-src 'none'` and then only what the page uses, from its own
/// origin: its script, style sheet and icon, and `fetch` of the API.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const ALLOW_UI: &str = "GET, HEAD";

/// Whether `path` is the dashboard's (`/ui`, `/ui/`, `/ui/{asset}`).
pub(super) fn owns(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// The response to `method path?query` for a `path` this module [`owns`]:
/// the file for `GET` (its headers only for `HEAD`); `404 not_found` for a
/// path that names no file, `405` for another method, and `400
/// invalid_argument` naming `query` for a query (no file takes one, and a
/// parameter is never silently ignored).
pub(super) fn respond(method: &str, path: &str, query: &str, keep_alive: bool) -> Vec<u8> {
    let head_only = method == "HEAD";
    let Some(asset) = ASSETS.iter().find(|asset| asset.path == path) else {
        return Refusal::NotFound.render(method, path, keep_alive, head_only);
    };
    if method != "GET" && !head_only {
        return Refusal::MethodNotAllowed(ALLOW_UI).render(method, path, keep_alive, head_only);
    }
    if let Err(refused) = super::parameters(query, &[], |_, _| Ok(())) {
        return refused.render(keep_alive, head_only);
    }
    let mut out = Vec::with_capacity(asset.body.len() + 512);
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: ");
    out.extend_from_slice(asset.content_type.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    out.extend_from_slice(asset.body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\nContent-Security-Policy: ");
    out.extend_from_slice(CONTENT_SECURITY_POLICY.as_bytes());
    // `no-cache`: revalidate each time, so a page left open across an upgrade
    // of the server loads the new files on its next reload.
    out.extend_from_slice(
        b"\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\nCache-Control: no-cache\r\n",
    );
    out.extend_from_slice(if keep_alive { b"Connection: keep-alive\r\n\r\n" } else { b"Connection: close\r\n\r\n" });
    if !head_only {
        out.extend_from_slice(asset.body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{next_request, Action, Limits, Next};

    /// The response to a request for `path` read by the parse step, as the
    /// reactor gets it (checking it is the dashboard's action).
    fn fetch(method: &str, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let response = match next_request(request.as_bytes(), &Limits::default()) {
            Next::Request { action: Action::Ui(response), keep_alive: true, .. } => response,
            other => panic!("{method} {path}: expected the dashboard's response, got {other:?}"),
        };
        let head_end = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
        let head = std::str::from_utf8(&response[..head_end]).expect("an ASCII head");
        let mut lines = head.trim_end().split("\r\n");
        let status = lines.next().and_then(|line| line.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("status");
        let headers = lines
            .map(|line| {
                let (name, value) = line.split_once(": ").expect("a header line");
                (name.to_ascii_lowercase(), value.to_owned())
            })
            .collect();
        (status, headers, response[head_end..].to_vec())
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn each_file_is_served_with_its_content_type_the_policy_and_nosniff() {
        for asset in &ASSETS {
            let (status, headers, body) = fetch("GET", asset.path);
            assert_eq!(status, 200, "{}", asset.path);
            assert_eq!(body, asset.body, "{}", asset.path);
            assert_eq!(header(&headers, "content-type"), Some(asset.content_type), "{}", asset.path);
            assert_eq!(header(&headers, "content-length"), Some(asset.body.len().to_string().as_str()));
            assert_eq!(header(&headers, "content-security-policy"), Some(CONTENT_SECURITY_POLICY), "{}", asset.path);
            assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"), "{}", asset.path);

            let (status, head_headers, body) = fetch("HEAD", asset.path);
            assert_eq!((status, body.len()), (200, 0), "HEAD {}: the headers only", asset.path);
            assert_eq!(head_headers, headers, "HEAD {}: the same headers as GET", asset.path);
        }
        let types: Vec<_> = ["/ui", "/ui/app.js", "/ui/style.css", "/ui/icon.png"]
            .iter()
            .map(|path| header(&fetch("GET", path).1, "content-type").map(str::to_owned))
            .collect();
        assert_eq!(
            types,
            ["text/html; charset=utf-8", "text/javascript; charset=utf-8", "text/css; charset=utf-8", "image/png"]
                .map(|t| Some(t.to_owned()))
        );
    }

    #[test]
    fn the_policy_allows_nothing_inline_and_nothing_from_another_origin() {
        for directive in CONTENT_SECURITY_POLICY.split("; ") {
            let (name, sources) = directive.split_once(' ').expect("a directive with sources");
            for source in sources.split(' ') {
                assert!(["'self'", "'none'"].contains(&source), "{name} allows {source}");
            }
        }
        assert!(CONTENT_SECURITY_POLICY.starts_with("default-src 'none'; script-src 'self'"));
    }

    #[test]
    fn an_unknown_file_is_404_another_method_405_and_a_query_400() {
        for path in ["/ui/x", "/ui/app.js/", "/ui//app.js", "/ui/index.html", "/uix"] {
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
            let Next::Request { action, .. } = next_request(request.as_bytes(), &Limits::default()) else {
                panic!("{path}: not a request");
            };
            let response = match action {
                Action::Ui(response) | Action::Respond(response) => response,
                other => panic!("{path}: {other:?}"),
            };
            assert!(response.starts_with(b"HTTP/1.1 404 "), "{path}: {}", String::from_utf8_lossy(&response));
        }
        let (status, headers, _) = fetch("POST", "/ui/app.js");
        assert_eq!((status, header(&headers, "allow")), (405, Some("GET, HEAD")));
        let (status, _, body) = fetch("GET", "/ui?token=x");
        assert_eq!(status, 400);
        let body = String::from_utf8(body).expect("JSON");
        assert!(body.contains("invalid_argument") && body.contains("\\\"token\\\""), "{body}");
        let (status, _, body) = fetch("HEAD", "/ui/nope");
        assert_eq!((status, body.len()), (404, 0));
    }

    /// The dashboard works offline and sends nothing elsewhere: no file
    /// names another origin (a CDN, a font, an analytics script).
    #[test]
    fn no_file_names_another_origin() {
        for asset in &ASSETS {
            let text = String::from_utf8_lossy(asset.body).to_ascii_lowercase();
            for scheme in ["http://", "https://", "ws://", "wss://", "src=\"//", "href=\"//", "url(", "@import"] {
                assert!(!text.contains(scheme), "{} names {scheme}", asset.path);
            }
        }
    }

    /// Payloads, errors and queue names are hostile: the script never
    /// turns text into markup (it builds nodes and sets `textContent`), and
    /// the page has no inline script or style for the policy to refuse.
    #[test]
    fn the_script_never_parses_markup() {
        let script = String::from_utf8_lossy(include_bytes!("ui/app.js"));
        let sinks = [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "createContextualFragment",
            "setHTML",
            "parseHTMLUnsafe",
            "srcdoc",
            "document.write",
            "DOMParser",
            "eval(",
            "new Function",
        ];
        for sink in sinks {
            assert!(!script.contains(sink), "app.js uses {sink}");
        }
        let page = String::from_utf8_lossy(INDEX_HTML).to_ascii_lowercase();
        assert!(!page.contains("<script>") && !page.contains("<style") && !page.contains(" style="), "inline code");
        // No inline event handler (` onclick="…"`): an attribute ` on` + letters + `=`.
        for (at, _) in page.match_indices(" on") {
            let name_len = page[at + 3..].bytes().take_while(u8::is_ascii_lowercase).count();
            assert!(page.as_bytes().get(at + 3 + name_len) != Some(&b'='), "an inline handler at byte {at}");
        }
    }
}
