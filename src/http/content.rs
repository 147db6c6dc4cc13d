//! `GET` / `HEAD /Content/XX/<SHA-1 HEX>.ext`: content files from the
//! store, streamed in chunks with backpressure (never read whole), with a
//! single byte range (206, 416) for restartable downloads (MS-WSUSOD
//! 2.3.2.5).
//!
//! Path safety: the request path is never joined to the file system. The
//! SHA-1 in the name is looked up in the store, and the store's own path
//! for it is opened.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Method, StatusCode, header};
use http_body::{Frame, SizeHint};

use super::pool::{StorePool, WorkError};
use super::server::{Body, Reply};
use crate::store::Store;

/// Bytes per read when streaming a file.
const CHUNK: usize = 128 * 1024;

/// Rule: a content path is `/Content/XX/NAME` where NAME is 40 hex digits
/// (a SHA-1) and an optional `.ext` of 1-16 ASCII letters or digits, and XX
/// its last two hex digits. Anything else (dot segments, encodings,
/// separators) names no file.
pub(crate) fn content_name(path: &str) -> Option<([u8; 20], Option<String>)> {
    let rest = path.strip_prefix("//").or_else(|| path.strip_prefix('/'))?;
    let mut parts = rest.split('/');
    let (Some(top), Some(dir), Some(name), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if !top.eq_ignore_ascii_case("content") {
        return None;
    }
    let (hex_part, ext) = match name.split_once('.') {
        Some((h, e)) => (h, Some(e)),
        None => (name, None),
    };
    if hex_part.len() != 40 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if let Some(e) = ext
        && (e.is_empty() || e.len() > 16 || !e.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return None;
    }
    if !dir.eq_ignore_ascii_case(&hex_part[38..]) {
        return None;
    }
    let sha1: [u8; 20] = hex::decode(hex_part).ok()?.try_into().ok()?;
    Some((sha1, ext.map(str::to_ascii_lowercase)))
}

/// A stored file, opened.
struct Found {
    file: File,
    size: u64,
    modified: Option<SystemTime>,
}

enum Lookup {
    Found(Found),
    NotFound(&'static str),
    Broken(String),
}

/// Finds and opens the store's file for `sha1` (on a blocking thread).
fn lookup(store: &Store, sha1: &[u8; 20], ext: Option<&str>) -> Lookup {
    let file = match store.content_file(sha1) {
        Ok(Some(f)) => f,
        Ok(None) => return Lookup::NotFound("not in this store"),
        Err(e) => return Lookup::Broken(e.to_string()),
    };
    let stored_ext = file
        .rel_path
        .rsplit('/')
        .next()
        .and_then(|n| n.split_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase());
    if ext != stored_ext.as_deref() {
        return Lookup::NotFound("extension differs from the stored file's");
    }
    let path = store.content().path_of(&file.rel_path);
    let opened = File::open(&path).and_then(|f| f.metadata().map(|m| (f, m)));
    let (f, meta) = match opened {
        Ok(x) => x,
        Err(e) => return Lookup::Broken(format!("{}: {e}", path.display())),
    };
    if meta.len() != file.size {
        return Lookup::Broken(format!(
            "{} has {} bytes, the store says {}",
            path.display(),
            meta.len(),
            file.size
        ));
    }
    Lookup::Found(Found {
        file: f,
        size: meta.len(),
        modified: meta.modified().ok(),
    })
}

/// Which bytes to send.
#[derive(Debug, PartialEq, Eq)]
enum Pick {
    /// The whole file, with a note for the log.
    Whole(&'static str),
    /// One range: start, length.
    Range(u64, u64),
    /// 416.
    Unsatisfiable,
}

/// Rules (RFC 9110 14): a single satisfiable byte range gives 206; a range
/// wholly beyond the end 416; several ranges, a malformed `Range` or
/// another unit the whole file (a server may ignore Range); an `If-Range`
/// that is not this file's ETag the whole file.
fn pick(range: Option<&str>, if_range: Option<&str>, etag: &str, size: u64) -> Pick {
    let Some(range) = range else {
        return Pick::Whole("");
    };
    if if_range.is_some_and(|v| v.trim() != etag) {
        return Pick::Whole(" (If-Range of another version: whole file)");
    }
    match http_range_header::parse_range_header(range) {
        Err(_) => Pick::Whole(" (malformed Range ignored)"),
        Ok(parsed) => match parsed.validate(size) {
            Err(_) => Pick::Unsatisfiable,
            Ok(ranges) => match ranges.as_slice() {
                [r] => Pick::Range(*r.start(), *r.end() - *r.start() + 1),
                _ => Pick::Whole(" (multiple ranges: whole file)"),
            },
        },
    }
}

/// Answers a content request.
pub(crate) async fn serve(
    pool: &Arc<StorePool>,
    method: &Method,
    headers: &HeaderMap,
    path: &str,
) -> Reply {
    if method != Method::GET && method != Method::HEAD {
        return Reply::text(StatusCode::METHOD_NOT_ALLOWED, "content takes GET or HEAD")
            .header(header::ALLOW, "GET, HEAD")
            .closing();
    }
    let has_body = headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|l| l.as_bytes().trim_ascii() != b"0")
        || headers.contains_key(header::TRANSFER_ENCODING);
    if has_body {
        return Reply::text(StatusCode::BAD_REQUEST, "content requests carry no body").closing();
    }
    let Some((sha1, ext)) = content_name(path) else {
        return Reply::text(StatusCode::NOT_FOUND, "not found").note("not a content file name");
    };
    let Ok(ticket) = pool.admit() else {
        return Reply::busy_text();
    };
    let found = pool
        .run(ticket, move |store| lookup(store, &sha1, ext.as_deref()))
        .await;
    let found = match found {
        Ok(Lookup::Found(f)) => f,
        Ok(Lookup::NotFound(why)) => {
            return Reply::text(StatusCode::NOT_FOUND, "not found").note(why);
        }
        Ok(Lookup::Broken(why)) | Err(WorkError::Failed(why)) => {
            return Reply::text(StatusCode::INTERNAL_SERVER_ERROR, "internal error").note(why);
        }
        Err(WorkError::Busy) => return Reply::busy_text(),
    };
    let size = found.size;
    let etag = format!("\"{}\"", hex::encode_upper(sha1));
    let mut reply = Reply::new(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &etag);
    if let Some(m) = found.modified {
        reply = reply.header(header::LAST_MODIFIED, &http_date(m));
    }
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let range = text(header::RANGE);
    let (start, len, note) = match pick(range, text(header::IF_RANGE), &etag, size) {
        Pick::Unsatisfiable => {
            let mut r = reply
                .header(header::CONTENT_RANGE, &format!("bytes */{size}"))
                .header(header::CONTENT_LENGTH, "0")
                .note(format!("{} of {size} bytes", range.unwrap_or("")));
            r.status = StatusCode::RANGE_NOT_SATISFIABLE;
            return r;
        }
        Pick::Whole(note) => (0, size, note),
        Pick::Range(start, len) => {
            reply.status = StatusCode::PARTIAL_CONTENT;
            reply = reply.header(
                header::CONTENT_RANGE,
                &format!("bytes {start}-{}/{size}", start + len - 1),
            );
            (start, len, " range")
        }
    };
    reply = reply
        .header(header::CONTENT_LENGTH, &len.to_string())
        .note(format!("{len} of {size} bytes{note}"));
    if method == Method::HEAD || len == 0 {
        return reply;
    }
    let mut file = found.file;
    if let Err(e) = file.seek(SeekFrom::Start(start)) {
        return Reply::text(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            .note(format!("seek: {e}"));
    }
    reply.body = Body::File(FileBody {
        file: tokio::fs::File::from_std(file),
        left: len,
        buf: BytesMut::new(),
    });
    reply
}

/// A file region streamed in chunks: hyper asks for the next chunk only
/// when it has written the last, so a slow client holds one chunk, not
/// the file.
pub(crate) struct FileBody {
    file: tokio::fs::File,
    left: u64,
    buf: BytesMut,
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let want = (CHUNK as u64).min(this.left) as usize;
        if this.buf.capacity() < want {
            this.buf.reserve(want);
        }
        let mut limited = (&mut this.buf).limit(want);
        let n = match tokio_util::io::poll_read_buf(Pin::new(&mut this.file), cx, &mut limited) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(n)) => n,
        };
        if n == 0 {
            // The file shrank under us: the length announced is a lie.
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "content file shorter than announced",
            ))));
        }
        this.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(this.buf.split().freeze()))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// An HTTP date (RFC 9110 5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(t: SystemTime) -> String {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::OffsetDateTime::from(t)
        .format(&fmt)
        .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 GMT".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn content_names() {
        let hex = "0123456789ABCDEF0123456789ABCDEF012345CD";
        assert!(content_name(&format!("/Content/CD/{hex}.exe")).is_some());
        assert!(content_name(&format!("//content/cd/{}.EXE", hex.to_lowercase())).is_some());
        assert!(content_name(&format!("/Content/CD/{hex}")).is_some());
        for bad in [
            format!("/Content/AB/{hex}.exe"),
            format!("/Content/CD/{hex}.e/x"),
            format!("/Content/CD/../{hex}.exe"),
            "/Content/../gapsync.db".to_string(),
            "/Content/..%2Fgapsync.db".to_string(),
            format!("/Content/CD/{hex}.ex%2e"),
            format!("/Content/CD/{hex}."),
            format!("/Content/CD/x{hex}"),
        ] {
            assert!(content_name(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn ranges() {
        let e = "\"AB\"";
        assert_eq!(pick(None, None, e, 100), Pick::Whole(""));
        assert_eq!(pick(Some("bytes=0-9"), None, e, 100), Pick::Range(0, 10));
        assert_eq!(pick(Some("bytes=-10"), None, e, 100), Pick::Range(90, 10));
        assert_eq!(pick(Some("bytes=95-"), None, e, 100), Pick::Range(95, 5));
        assert_eq!(
            pick(Some("bytes=10-999"), None, e, 100),
            Pick::Range(10, 90)
        );
        assert_eq!(pick(Some("bytes=100-"), None, e, 100), Pick::Unsatisfiable);
        assert!(matches!(
            pick(Some("bytes=0-1,5-6"), None, e, 100),
            Pick::Whole(_)
        ));
        assert!(matches!(
            pick(Some("bytes=abc"), None, e, 100),
            Pick::Whole(_)
        ));
        assert!(matches!(
            pick(Some("items=0-1"), None, e, 100),
            Pick::Whole(_)
        ));
        assert!(matches!(
            pick(Some("bytes=0-9"), Some("\"00\""), e, 100),
            Pick::Whole(_)
        ));
        assert_eq!(pick(Some("bytes=0-9"), Some(e), e, 100), Pick::Range(0, 10));
    }

    #[test]
    fn http_dates() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(784111777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
