//! HTML building: escaping, the page layout, small widgets. Every page is
//! HTML5 with no inline script and no inline style (the
//! Content-Security-Policy allows only the embedded files).

use std::fmt::Write;

/// Escapes text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query parameter value.
pub fn url(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The navigation entries: (path, label).
const NAV: [(&str, &str); 5] = [
    ("/", "Overview"),
    ("/updates", "Updates"),
    ("/computers", "Computers"),
    ("/compliance", "Compliance"),
    ("/bundles", "Bundles"),
];

/// What every page of a logged-in session shows around its content.
pub struct Frame<'a> {
    pub server_name: &'a str,
    pub mode: &'a str,
    pub csrf: &'a str,
    pub flash: &'a [String],
    /// The navigation entry shown as current.
    pub current: &'a str,
}

/// A whole page.
pub fn page(title: &str, frame: Option<&Frame<'_>>, body: &str) -> String {
    let mut s = String::with_capacity(body.len() + 2048);
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{} - gapsync console</title>\n\
         <link rel=\"stylesheet\" href=\"/assets/console.css\">\n\
         <link rel=\"icon\" href=\"/assets/logo.svg\" type=\"image/svg+xml\">\n\
         <script src=\"/assets/console.js\" defer></script>\n</head>\n<body>\n\
         <a class=\"skip\" href=\"#main\">Skip to content</a>\n",
        esc(title)
    );
    s.push_str("<header class=\"top\">\n<a class=\"brand\" href=\"/\"><img src=\"/assets/logo.svg\" alt=\"\" width=\"28\" height=\"28\"> gapsync</a>\n");
    if let Some(f) = frame {
        let _ = write!(
            s,
            "<span class=\"server\">{} <span class=\"badge\">{}</span></span>\n<nav aria-label=\"Main\">\n<ul>\n",
            esc(f.server_name),
            esc(f.mode)
        );
        for (path, label) in NAV {
            let cur = if path == f.current {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = writeln!(s, "<li><a href=\"{path}\"{cur}>{label}</a></li>");
        }
        let _ = write!(
            s,
            "</ul>\n</nav>\n<form method=\"post\" action=\"/logout\" class=\"logout\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\">Log out</button></form>\n",
            esc(f.csrf)
        );
    }
    s.push_str("</header>\n<main id=\"main\">\n");
    if let Some(f) = frame {
        for m in f.flash {
            let _ = writeln!(s, "<p class=\"flash\" role=\"status\">{}</p>", esc(m));
        }
    }
    s.push_str(body);
    s.push_str("</main>\n</body>\n</html>\n");
    s
}

/// A hidden CSRF field.
pub fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

/// `value` or an em dash.
pub fn or_dash(v: Option<&str>) -> String {
    match v {
        Some(v) if !v.is_empty() => esc(v),
        _ => "&#8212;".to_string(),
    }
}

/// The status names in display order, with their CSS class (the counting
/// rules of `store::reports`: downloaded counts as needed).
pub const STATES: [(&str, &str); 5] = [
    ("installed", "Installed"),
    ("needed", "Needed"),
    ("failed", "Failed"),
    ("not_applicable", "Not applicable"),
    ("unknown", "No status"),
];

/// A horizontal stacked bar (SVG) of the five status counts, with a text
/// alternative; widths are percentages of the total.
pub fn state_bar(c: &crate::store::reports::StatusCounts, label: &str) -> String {
    let values = [c.installed, c.needed, c.failed, c.not_applicable, c.unknown];
    let total: i64 = values.iter().sum();
    let mut s = String::new();
    let desc = STATES
        .iter()
        .zip(values)
        .map(|((_, name), v)| format!("{name} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = write!(
        s,
        "<svg class=\"bar\" viewBox=\"0 0 1000 24\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"{}: {}\">",
        esc(label),
        esc(&desc)
    );
    if total == 0 {
        s.push_str("<rect class=\"s-empty\" x=\"0\" y=\"0\" width=\"1000\" height=\"24\"/>");
    } else {
        let mut x = 0i64;
        for ((cls, _), v) in STATES.iter().zip(values) {
            if v == 0 {
                continue;
            }
            let w = (v * 1000 / total).max(2);
            let _ = write!(
                s,
                "<rect class=\"s-{cls}\" x=\"{x}\" y=\"0\" width=\"{w}\" height=\"24\"/>"
            );
            x += w;
        }
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(url("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn pages_have_no_inline_script_or_style() {
        let f = Frame {
            server_name: "<hq>",
            mode: "autonomous",
            csrf: "t",
            flash: &["done <b>".to_string()],
            current: "/",
        };
        let p = page("Overview", Some(&f), "<p>x</p>");
        assert!(p.contains("&lt;hq&gt;") && p.contains("done &lt;b&gt;"));
        assert!(!p.contains("style="));
        assert_eq!(
            p.matches("<script").count(),
            p.matches("<script src=").count()
        );
    }
}
