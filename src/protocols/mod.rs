//! The WSUS protocols: MS-WSUSSS (server-server) and MS-WUSP (client-server).

pub mod wsusss;
pub mod wusp;
