//! The HTTP(S) server of the upstream role (`gapsync serve`).
//!
//! - `POST /ServerSyncWebService/ServerSyncWebService.asmx` and
//!   `POST /DssAuthWebService/DssAuthWebService.asmx` (also under a doubled
//!   leading slash, as Windows WSUS sends, and without regard to case, as
//!   IIS): SOAP 1.1 or 1.2, answered through the routing table
//!   ([`routes`]: one row per operation, keyed by path, request element and
//!   SOAPAction; MS-WSUSSS's rows come from
//!   `crate::protocols::wsusss::upstream::routes`, and a second protocol
//!   plugs in by adding its own).
//! - `GET` / `HEAD /Content/XX/<SHA-1 HEX>.ext` ([`content`]): content
//!   files from the store, streamed, with single byte ranges.
//!
//! # Stack, and why
//! tokio + hyper 1 (HTTP/1.1) + tokio-rustls, with hyper driven directly
//! (hyper-util's `TokioIo` adapter) rather than through axum: the limits
//! that matter here live at the connection, below a router. Each
//! connection gets hyper's `http1::Builder` with the header-read timeout
//! on a timer of our own (so idle keep-alive and slow heads get different
//! clocks: `conn::HeadTimer`), head size and header count limits (431),
//! and a stream wrapper that fails stalled writes and notes framing hyper
//! tolerates but this server refuses (duplicate `Content-Length`,
//! `Content-Length` with `Transfer-Encoding`: 400). axum's `serve` exposes
//! none of these knobs, and its router matches paths case-sensitively,
//! where IIS clients need case-insensitive paths and doubled slashes: a
//! path-keyed table of our own is smaller than bending a router to that.
//!
//! tower-http was weighed for the rest and does not fit: its body limit
//! answers a plain 413 where MS-WSUSSS clients get a SOAP fault; its body
//! timeout restarts at every frame, so a client trickling one byte a
//! second would never hit it (here the whole body has one deadline); its
//! file service answers several ranges with 416 and has no `If-Range` on
//! the SHA-1 ETag, where the protocol pins 200 and the ETag. Load shedding
//! is a semaphore in front of the store's blocking pool ([`pool`]) that
//! answers 503 with `Retry-After` (a ServerBusy fault for SOAP).
//!
//! # Load and hostile clients
//! - An open connection is a parked task with its buffers (a few KiB),
//!   not a thread: idle keep-alive and slow clients cannot starve others.
//!   At most [`ServeOptions::max_connections`]; one more is answered 503
//!   at once.
//! - Clocks: a request head must be complete within the header timeout of
//!   its first byte; a keep-alive connection may idle for the idle
//!   timeout; a SOAP body must arrive within the body timeout; a write
//!   without progress for the write timeout drops the connection.
//! - Sizes: request heads (431), SOAP bodies (413 before reading), the
//!   request bodies held in memory all together (503).
//! - Store work (SQLite, synchronous) runs on the blocking pool: at most
//!   `store_workers` at once, each with a pooled store handle, and at most
//!   `store_queue` waiting; beyond that 503 at once.
//! - Content paths are never joined to the file system: the SHA-1 in the
//!   name is looked up in the store, whose own path is served.
//!
//! The server logs through `tracing` (one line per request: client
//! address, method, path, status, what happened, time); the binary
//! decides where the lines go.

mod conn;
mod content;
mod pool;
mod routes;
mod server;

pub use routes::{
    EnvelopeStyle, Routes, SoapAnswer, SoapCall, SoapHandler, SoapOperation, SoapReply, SoapRequest,
};
pub(crate) use server::load_tls;
pub use server::{ServeOptions, Server, TlsFiles};
