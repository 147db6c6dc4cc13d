//! The WSUS protocols: MS-WSUSSS (server-server).

pub mod wsusss;
