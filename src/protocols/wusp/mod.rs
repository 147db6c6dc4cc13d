//! MS-WUSP: the client-server protocol (Windows Update Agent clients).

pub mod catalog;
pub mod client;
pub mod cookie;
pub mod fragment;
pub mod server;

pub use server::{Endpoint, ErrorCode, Wusp, WuspOptions, routes};
