//! The SOAP request parser the server uses, and the client's response
//! parsers (a hostile upstream), must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = gapsync::protocols::wsusss::parse_envelope(data) {
        let _ = gapsync::protocols::wsusss::parse_fault(&env.body, env.version);
    }
    use gapsync::protocols::wsusss::client as c;
    let _ = c::parse_auth_config(data);
    let _ = c::parse_cookie(data);
    let _ = c::parse_config_data(data);
    let _ = c::parse_revision_id_list(data);
    let _ = c::parse_update_data(data);
    let _ = c::parse_update_decryption_data(data);
    let _ = c::parse_deployments(data);
});
