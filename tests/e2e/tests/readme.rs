//! The README keeps its promises: its first screen gives the demo command and the test
//! command, `.ci/run` runs that test command, and the demo command works as written.

use std::path::PathBuf;

fn repo_file(rel: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// The shell commands of the README's first screen (its first 40 lines), in order.
fn first_screen_commands() -> Vec<String> {
    let readme = repo_file("README.md");
    let screen: Vec<&str> = readme.lines().take(40).collect();
    let mut out = Vec::new();
    let mut in_sh = false;
    for line in screen {
        match (in_sh, line.trim()) {
            (false, "```sh") => in_sh = true,
            (true, "```") => in_sh = false,
            (true, cmd) if !cmd.is_empty() => out.push(cmd.to_owned()),
            _ => {}
        }
    }
    out
}

#[test]
fn first_screen_has_the_demo_and_the_test_command() {
    let cmds = first_screen_commands();
    assert_eq!(cmds.len(), 2, "README first screen: {cmds:?}");
    assert!(
        cmds[0].contains("--bin hotaru") && !cmds[0].contains("--nats"),
        "the first command runs hotaru on the embedded default: {}",
        cmds[0]
    );
    assert!(
        cmds[1].starts_with("cargo nextest run --workspace"),
        "the second command runs every test: {}",
        cmds[1]
    );
}

#[test]
fn ci_runs_the_readme_test_command() {
    let cmds = first_screen_commands();
    let test_cmd = cmds.last().expect("a test command");
    let ci = repo_file(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == test_cmd),
        ".ci/run must run the README's test command `{test_cmd}`"
    );
    for check in [
        "cargo fmt --all --check",
        "cargo clippy --workspace --all-targets -- -D warnings",
        "apt-get install -y -qq nats-server",
    ] {
        assert!(ci.contains(check), ".ci/run must run `{check}`");
    }
}

/// Runs the README's demo command with this build of `hotaru`, in a temporary directory, with
/// fewer events (the README's count is for a release build).
#[test]
fn the_demo_command_works_as_written() {
    let cmds = first_screen_commands();
    let dir = tempfile::tempdir().expect("tempdir");
    for part in cmds[0].split("&&") {
        let (_, args) = part
            .split_once(" -- ")
            .unwrap_or_else(|| panic!("`{part}` passes arguments after --"));
        let mut args: Vec<&str> = args.split_whitespace().collect();
        for (flag, small) in [("-n", "3000"), ("--cases", "3")] {
            if let Some(i) = args.iter().position(|a| *a == flag) {
                args[i + 1] = small;
            }
        }
        let out = hotaru_test_support::hotaru::hotaru()
            .current_dir(dir.path())
            .args(&args)
            .output()
            .expect("run hotaru");
        assert!(
            out.status.success(),
            "`hotaru {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(dir.path().join("hotaru-data").is_dir());
}
