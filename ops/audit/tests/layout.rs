//! The audit checks what the server runs, so it must not run the server: it depends on the
//! log, the events, the protocol and the domain's pure rules only.

#[test]
fn the_audit_depends_on_no_service_it_checks() {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .expect("the audit's manifest");
    let ours: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("hotaru-"))
        .filter_map(|l| l.split(['.', ' ', '=']).next())
        .collect();
    assert_eq!(
        ours,
        ["events", "log", "domain", "protocol"],
        "the audit's own dependencies"
    );
}
