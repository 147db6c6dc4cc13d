//! MS-WUSP: the client-server protocol (Windows Update Agent clients).

pub mod catalog;
pub mod cookie;
pub mod fragment;
pub mod server;

pub use server::{Answer, Call, Endpoint, ErrorCode, Wusp, WuspOptions};
