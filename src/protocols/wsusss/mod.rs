//! MS-WSUSSS (Windows Server Update Services server-server protocol): the
//! pieces both roles share, on the one SOAP layer (`crate::soap`: element
//! tree, envelopes, faults, escaping). The upstream (USS) side is
//! [`upstream`]; the downstream (DSS) side is [`client`] (messages and
//! transport) and [`downstream`] (the sync sequence).
//!
//! - [`Operation`]: every operation of MS-WSUSSS 3.1.4 gapsync serves or
//!   calls, with its service, namespace and SOAPAction.
//! - [`ErrorCode`]: the fault codes of MS-WSUSSS 2.2.9.3 (a
//!   [`crate::soap::FaultCode`]).

pub mod client;
pub mod downstream;
pub mod reporting;
pub mod rollup;
pub mod upstream;

use std::fmt;

use serde::Serialize;

/// Namespace of the Server Sync Web Service.
pub const SSS_NS: &str = "http://www.microsoft.com/SoftwareDistribution";
/// Namespace of the DSS Authorization Web Service.
pub const DSSAUTH_NS: &str =
    "http://www.microsoft.com/SoftwareDistribution/Server/DssAuthWebService";

/// Path of the Server Sync Web Service.
pub const SERVER_SYNC_PATH: &str = "/ServerSyncWebService/ServerSyncWebService.asmx";
/// Path of the DSS Authorization Web Service.
pub const DSS_AUTH_PATH: &str = "/DssAuthWebService/DssAuthWebService.asmx";
/// `AuthPlugInInfo/ServiceUrl` (relative to the server's root URL).
pub const DSS_AUTH_SERVICE_URL: &str = "DssAuthWebService/DssAuthWebService.asmx";
/// The one authorization plug-in (MS-WSUSSS 3.1.4.1).
pub const PLUGIN_ID: &str = "DssTargeting";
/// The protocol version gapsync announces (as WSUS 10.0 does).
pub const PROTOCOL_VERSION: &str = "1.20";
/// `Deadline` of a deployment without one (MS-WSUSSS 3.1.4.10.3.5).
pub const NO_DEADLINE: &str = "9999-12-31T23:59:59.9999999";
/// `ParentGroupId` of the top target group.
pub const NIL_GUID: &str = "00000000-0000-0000-0000-000000000000";

/// The two web services of a USS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    ServerSync,
    DssAuth,
    /// The reporting web service (rollup, 3.1.4.13-3.1.4.17).
    Reporting,
}

impl Service {
    pub fn path(self) -> &'static str {
        match self {
            Service::ServerSync => SERVER_SYNC_PATH,
            Service::DssAuth => DSS_AUTH_PATH,
            Service::Reporting => reporting::REPORTING_PATH,
        }
    }
}

/// The operations of MS-WSUSSS 3.1.4 that gapsync serves (all of them)
/// and calls as a DSS (all but GetRelatedRevisionsForUpdates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Operation {
    GetAuthConfig,
    GetAuthorizationCookie,
    GetCookie,
    GetConfigData,
    GetRevisionIdList,
    GetUpdateData,
    GetUpdateDecryptionData,
    GetDeployments,
    DownloadFiles,
    GetRelatedRevisionsForUpdates,
    GetRollupConfiguration,
    RollupDownstreamServers,
    RollupComputers,
    GetOutOfSyncComputers,
    RollupComputerStatus,
}

impl Operation {
    pub const ALL: [Operation; 10] = [
        Operation::GetAuthConfig,
        Operation::GetAuthorizationCookie,
        Operation::GetCookie,
        Operation::GetConfigData,
        Operation::GetRevisionIdList,
        Operation::GetUpdateData,
        Operation::GetUpdateDecryptionData,
        Operation::GetDeployments,
        Operation::DownloadFiles,
        Operation::GetRelatedRevisionsForUpdates,
    ];
    /// The reporting web service's operations (a DSS rolls up with them).
    pub const REPORTING: [Operation; 5] = [
        Operation::GetRollupConfiguration,
        Operation::RollupDownstreamServers,
        Operation::RollupComputers,
        Operation::GetOutOfSyncComputers,
        Operation::RollupComputerStatus,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Operation::GetAuthConfig => "GetAuthConfig",
            Operation::GetAuthorizationCookie => "GetAuthorizationCookie",
            Operation::GetCookie => "GetCookie",
            Operation::GetConfigData => "GetConfigData",
            Operation::GetRevisionIdList => "GetRevisionIdList",
            Operation::GetUpdateData => "GetUpdateData",
            Operation::GetUpdateDecryptionData => "GetUpdateDecryptionData",
            Operation::GetDeployments => "GetDeployments",
            Operation::DownloadFiles => "DownloadFiles",
            Operation::GetRelatedRevisionsForUpdates => "GetRelatedRevisionsForUpdates",
            Operation::GetRollupConfiguration => "GetRollupConfiguration",
            Operation::RollupDownstreamServers => "RollupDownstreamServers",
            Operation::RollupComputers => "RollupComputers",
            Operation::GetOutOfSyncComputers => "GetOutOfSyncComputers",
            Operation::RollupComputerStatus => "RollupComputerStatus",
        }
    }

    /// The service that offers the operation.
    pub fn service(self) -> Service {
        match self {
            Operation::GetAuthorizationCookie => Service::DssAuth,
            Operation::GetRollupConfiguration
            | Operation::RollupDownstreamServers
            | Operation::RollupComputers
            | Operation::GetOutOfSyncComputers
            | Operation::RollupComputerStatus => Service::Reporting,
            _ => Service::ServerSync,
        }
    }

    /// Namespace of the request and response elements.
    pub fn namespace(self) -> &'static str {
        match self.service() {
            Service::DssAuth => DSSAUTH_NS,
            Service::ServerSync | Service::Reporting => SSS_NS,
        }
    }

    /// The SOAPAction (SOAP 1.1 header, SOAP 1.2 `action` parameter).
    pub fn soap_action(self) -> String {
        format!("{}/{}", self.namespace(), self.name())
    }

    /// The operation a SOAPAction names (quotes and white space around it
    /// ignored).
    pub fn from_soap_action(action: &str) -> Option<Operation> {
        Self::ALL
            .into_iter()
            .chain(Self::REPORTING)
            .find(|op| crate::soap::action_names(action, &op.soap_action()))
    }

    /// The operation a request element names (namespace and local name).
    pub fn from_element(ns: Option<&str>, name: &str) -> Option<Operation> {
        Self::ALL
            .into_iter()
            .chain(Self::REPORTING)
            .find(|op| op.name() == name && ns == Some(op.namespace()))
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The ErrorCode values of MS-WSUSSS 2.2.9.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidParameters,
    InvalidCookie,
    InternalServerError,
    IncompatibleProtocolVersion,
    InvalidAuthorizationCookie,
    FileDigestsMissing,
    ServerChanged,
    ServerBusy,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::InvalidParameters,
        ErrorCode::InvalidCookie,
        ErrorCode::InternalServerError,
        ErrorCode::IncompatibleProtocolVersion,
        ErrorCode::InvalidAuthorizationCookie,
        ErrorCode::FileDigestsMissing,
        ErrorCode::ServerChanged,
        ErrorCode::ServerBusy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidParameters => "InvalidParameters",
            ErrorCode::InvalidCookie => "InvalidCookie",
            ErrorCode::InternalServerError => "InternalServerError",
            ErrorCode::IncompatibleProtocolVersion => "IncompatibleProtocolVersion",
            ErrorCode::InvalidAuthorizationCookie => "InvalidAuthorizationCookie",
            ErrorCode::FileDigestsMissing => "FileDigestsMissing",
            ErrorCode::ServerChanged => "ServerChanged",
            ErrorCode::ServerBusy => "ServerBusy",
        }
    }

    /// Case-sensitive, as 2.2.9.1 says.
    pub fn parse(s: &str) -> Option<ErrorCode> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether the fault blames the request (`soap:Client` / `soap:Sender`)
    /// rather than the server.
    pub fn is_client_fault(self) -> bool {
        !matches!(self, ErrorCode::InternalServerError | ErrorCode::ServerBusy)
    }
}

impl crate::soap::FaultCode for ErrorCode {
    fn as_str(self) -> &'static str {
        ErrorCode::as_str(self)
    }
    fn blames_sender(self) -> bool {
        self.is_client_fault()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_round_trip() {
        for op in Operation::ALL.into_iter().chain(Operation::REPORTING) {
            assert_eq!(
                Operation::from_element(Some(op.namespace()), op.name()),
                Some(op)
            );
            assert!(op.soap_action().ends_with(op.name()));
            assert_eq!(Operation::from_soap_action(&op.soap_action()), Some(op));
        }
        assert_eq!(Operation::from_element(None, "GetCookie"), None);
        assert_eq!(
            Operation::GetAuthorizationCookie.soap_action(),
            "http://www.microsoft.com/SoftwareDistribution/Server/DssAuthWebService/GetAuthorizationCookie"
        );
    }

    #[test]
    fn error_codes_round_trip() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
        }
        assert_eq!(ErrorCode::parse("invalidcookie"), None);
    }
}
